//! With `ad_user_data` denied, a hit carrying an IP, an email, a phone number and click ids
//! under arbitrary keys, in URLs, in headers and in cookies reaches no tag: checked at the fake
//! vendors (everything they received: paths, queries, headers, bodies) and through every
//! request accessor a tag can call (the probe tag reports what it could read).

use sluice_tests::{FakeVendor, hit_request, loopback_outbound, parse_config, template};

/// Values that must not leave the host (and parts of them a vendor might receive re-encoded).
const PERSONAL: &[&str] = &[
    "198.51.100.23", "198.51.100.77", "203.0.113.50", "jane.doe", "jane.doe%40", "7946", "555-0199", "5550199",
    "GCLIDVALUE", "GBRAIDVALUE", "FBCLIDVALUE", "GCLAWVALUE", "visitor-token",
];

fn config(origin: &str, audit: &std::path::Path) -> String {
    format!(
        r#"{outbound}
[consent]
audit = "{audit}"

{client}

[[tag]]
name = "ga4-web"
wasm = "{ga4}"
trigger = {{ events = ["*"] }}
params = {{ endpoint = "{origin}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/g/collect"], request_headers = ["user-agent"], remote_address = true }}

[[tag]]
name = "webhook"
wasm = "{webhook}"
trigger = {{ events = ["*"] }}
params = {{ url = "{origin}/hook" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/hook"] }}

[[tag]]
name = "probe"
wasm = "{probe}"
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "p", read_request = true, headers = ["x-forwarded-for", "x-real-ip", "forwarded", "cookie", "authorization", "referer", "x-note", "user-agent"], cookies = ["_gcl_aw", "_fbc", "crm", "_ga"], query_params = ["gclid", "_uip", "ep.contact", "dl", "tid"] }}
grants = {{ request_headers = ["*", "cookie", "authorization"], query = true, cookies = ["*"], body = true, remote_address = true, event_data = ["*"], outbound = ["{origin}/sink"] }}
"#,
        outbound = loopback_outbound(),
        audit = audit.display(),
        client = sluice_tests::ga4_client_entry(),
        ga4 = template("ga4-tag").display(),
        webhook = template("webhook-tag").display(),
        probe = template("probe-tag").display(),
    )
}

fn hit() -> sluice::RequestData {
    let dl: String = form_urlencoded::byte_serialize(b"https://shop.example/p?gclid=GCLIDVALUE&e=jane.doe%40example.com&color=red").collect();
    let query = format!(
        "v=2&tid=G-TEST&cid=1.2&en=purchase&_uip=198.51.100.23&gclid=GCLIDVALUE&gbraid=GBRAIDVALUE\
         &ep.contact=jane.doe%40example.com&ep.mobile=%2B44%2020%207946%200958&ep.note=call%20(555)%20555-0199\
         &ep.landing=https%3A%2F%2Fads.example%2F%3Ffbclid%3DFBCLIDVALUE&dl={dl}&ep.value=30"
    );
    let mut request = hit_request(&query);
    request.remote_addr = Some("203.0.113.50".parse().unwrap());
    for (name, value) in [
        ("user-agent", "Mozilla/5.0 (pd)"),
        ("x-consent", "ad_storage=granted,analytics_storage=granted,ad_user_data=denied"),
        ("x-forwarded-for", "198.51.100.77, 10.0.0.1"),
        ("x-real-ip", "198.51.100.77"),
        ("forwarded", "for=198.51.100.77"),
        ("cookie", "_ga=GA1.1.1.2; _gcl_aw=GCL.1.GCLAWVALUE; _fbc=fb.1.2.FBCLIDVALUE; crm=jane.doe%40example.com"),
        ("authorization", "Bearer visitor-token"),
        ("referer", "https://shop.example/p?gclid=GCLIDVALUE&color=red"),
        ("x-note", "from jane.doe@example.com"),
    ] {
        request.headers.append(http::HeaderName::from_static(name), value.parse().unwrap());
    }
    request.body = bytes::Bytes::from_static(b"en=scroll&_uip=198.51.100.23&ep.email=jane.doe%40example.com");
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_full_of_personal_data_reaches_no_tag_without_ad_user_data() {
    let vendor = FakeVendor::start().await;
    let audit = std::env::temp_dir().join(format!("sluice-pd-audit-{}.jsonl", std::process::id()));
    let container = std::sync::Arc::new(sluice::Container::load(&parse_config(&config(&vendor.origin(), &audit)).unwrap()).unwrap());
    let (_, trace) = container.handle(hit()).await;

    // Every tag ran (consent let them: none needs ad_user_data) and reached its vendor.
    for tag in ["ga4-web", "webhook", "probe"] {
        let outcomes: Vec<String> = trace.events.iter().filter_map(|e| e.tags.iter().find(|t| t.tag == tag)).map(|t| t.outcome.to_string()).collect();
        assert!(!outcomes.is_empty() && outcomes.iter().all(|o| o == "ok" || o == "queued"), "{tag}: {outcomes:?} in {trace:?}");
    }
    vendor.wait_for("/hook", 1).await;
    vendor.wait_for("/g/collect", 1).await;
    let received = vendor.received();
    for path in ["/g/collect", "/hook", "/sink"] {
        assert!(received.iter().any(|r| r.path == path), "nothing reached {path}");
    }

    // Nothing personal reached any vendor, in any part of any request.
    for r in &received {
        let headers: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or(""))).collect();
        let seen = format!("{} {} ?{} {} {}", r.method, r.path, r.query, headers.join("\n"), String::from_utf8_lossy(&r.body));
        for personal in PERSONAL {
            assert!(!seen.contains(personal), "{personal:?} reached {}:\n{seen}", r.path);
        }
    }

    // Through every accessor, the probe read nothing personal, but what is not personal stays.
    let report = vendor.received_at("/sink")[0].json();
    let request = &report["request"];
    assert_eq!(request["remote_address"]["ok"], serde_json::Value::Null);
    for hidden in ["x-forwarded-for", "x-real-ip", "forwarded", "authorization", "x-note"] {
        assert_eq!(request["headers"][hidden]["ok"], serde_json::Value::Null, "{hidden}: {request}");
    }
    assert_eq!(request["headers"]["user-agent"]["ok"], "Mozilla/5.0 (pd)");
    assert_eq!(request["cookies"]["_ga"]["ok"], serde_json::json!(["GA1.1.1.2"]));
    assert_eq!(request["query_params"]["tid"]["ok"], "G-TEST");
    assert!(request["headers"]["referer"]["ok"].as_str().unwrap().contains("color=red"), "{request}");
    assert_eq!(report["event"]["x-ga-measurement_id"], "G-TEST", "the event is still there: {report}");

    // The audit says what was removed, by key path, never the values.
    // The audit is written in batches (within 20 ms, and before any outbox commit): now.
    sluice::output::flush_batched();
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert!(audit.contains("\"removed\":[") && audit.contains("x-ga-system_properties.uip"), "{audit}");
    for personal in PERSONAL {
        assert!(!audit.contains(personal), "{personal:?} in the audit:\n{audit}");
    }
}
