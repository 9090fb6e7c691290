//! Consent is enforced by the host, before tags run: corpus consent variants against tags that
//! need ad or analytics consent, personal data removal, sources and the audit trail.

use serde_json::Value;
use sluice::Outcome;
use sluice_tests::{FakeVendor, TestServer, corpus_hit_query, loopback_outbound, template};

fn config(vendor: &FakeVendor, consent_section: &str) -> String {
    let tag = |name: &str, consent: &str| {
        format!(
            "\n[[tag]]\nname = \"{name}\"\nwasm = \"{wasm}\"\ntrigger = {{ events = [\"*\"] }}\nconsent = {consent}\n\
             params = {{ sink = \"{origin}/sink\", label = \"{name}\", read_header = \"referer\" }}\n\
             grants = {{ event_data = [\"*\"], outbound = [\"{origin}/\"], request_headers = [\"referer\"] }}\n",
            wasm = template("probe-tag").display(),
            origin = vendor.origin(),
        )
    };
    format!(
        "{outbound}\n{consent_section}\n[server]\ntrusted_proxies = 1\n\n[[client]]\nname = \"ga4\"\nwasm = \"{client}\"\n\
         grants = {{ query = true, body = true, remote_address = true }}\n{ads}{analytics}{plain}",
        outbound = loopback_outbound(),
        client = template("ga4-client").display(),
        ads = tag("ads", r#"["ad_storage", "ad_user_data"]"#),
        analytics = tag("analytics", r#"["analytics_storage"]"#),
        plain = tag("plain", "[]"),
    )
}

async fn send(server: &TestServer, query: &str, headers: &[(&str, &str)]) {
    let headers = [&[("x-forwarded-for", "203.0.113.9")], headers].concat();
    assert_eq!(server.post_hit(query, &headers).await.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_consent_variants_decide_per_tag() {
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&config(&vendor, "")).await;
    // (file, ads runs, analytics runs)
    let cases = [
        ("ga4_02_page_view_granted_update.txt", true, true),      // G111 / 13r3r3r2r5l1
        ("ga4_05_scroll_consent_denied.txt", false, false),       // G100 / 13p3p3p2p5l1
        ("ga4_14_page_view_analytics_google_com.txt", false, false), // 13l3l3l3l1l1: consent mode not in use
        ("ga4_08_page_view_homemade.txt", false, false),          // older 10-character 13l3l3l3l1
    ];
    for (file, ads, analytics) in cases {
        let (_, trace) = server.container.handle(sluice_tests::hit_request(&corpus_hit_query(file))).await;
        let outcome = |tag: &str| trace.tag_run(0, tag).expect("matched").outcome.clone();
        assert_eq!(outcome("ads").is_ok(), ads, "{file}: {}", outcome("ads"));
        assert_eq!(outcome("analytics").is_ok(), analytics, "{file}: {}", outcome("analytics"));
        assert!(outcome("plain").is_ok(), "{file}: a tag needing no consent always runs");
        if !ads {
            assert_eq!(outcome("ads"), Outcome::BlockedByConsent(vec!["ad_storage".into(), "ad_user_data".into()]), "{file}");
            let phases = trace.tag_run(0, "ads").expect("matched").phases;
            assert_eq!(phases, sluice::trace::Phases::default(), "{file}: a blocked tag is never instantiated");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_hit_reaches_no_ad_vendor_and_no_vendor_gets_personal_data() {
    let vendor = FakeVendor::start().await;
    let audit = std::env::temp_dir().join(format!("sluice-audit-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let section = format!("[consent]\naudit = \"{}\"", audit.display());
    let server = TestServer::start(&config(&vendor, &section)).await;

    let granted = corpus_hit_query("ga4_02_page_view_granted_update.txt") + "&ep.user_data.email_address=a%40b.c";
    let denied = corpus_hit_query("ga4_06_add_to_cart_consent_denied.txt")
        + "&ep.user_data.email_address=a%40b.c&dl=https%3A%2F%2Fshop.example%2F%3Fgclid%3Dabc%26color%3Dred";
    send(&server, &granted, &[]).await;
    send(&server, &denied, &[("referer", "https://shop.example/?fbclid=xyz")]).await;
    server.stop().await;

    let reports: Vec<Value> = vendor.received_at("/sink").iter().map(|r| r.json()).collect();
    let of = |label: &str| reports.iter().filter(|r| r["label"] == label).collect::<Vec<_>>();
    assert_eq!(of("ads").len(), 1, "the ad tag saw only the granted hit");
    assert_eq!(of("ads")[0]["event"]["event_name"], "page_view");
    assert_eq!(of("ads")[0]["event"]["ip_override"], "203.0.113.9");
    assert_eq!(of("ads")[0]["event"]["user_data"]["email_address"], "a@b.c");

    let plain_denied = of("plain").into_iter().find(|r| r["event"]["event_name"] == "add_to_cart").expect("plain ran");
    let seen = &plain_denied["event"];
    assert!(seen.get("user_data").is_none() && seen.get("ip_override").is_none(), "{seen}");
    assert_eq!(seen["page_location"], "https://shop.example/?color=red", "click ids removed from URLs");
    assert_eq!(plain_denied["header_result"]["ok"], "https://shop.example/", "and from the Referer a tag reads");
    assert!(!vendor.received().iter().any(|r| String::from_utf8_lossy(&r.body).contains("203.0.113.9") && r.body.windows(11).any(|w| w == b"add_to_cart")));

    // The audit is written in batches (within 20 ms, and before any outbox commit): now.
    sluice::output::flush_batched();
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 6, "one record per tag per event");
    let blocked = lines.iter().find(|l| l["tag"] == "ads" && l["decision"] == "blocked").expect("blocked record");
    assert_eq!(blocked["event_name"], "add_to_cart");
    assert_eq!(blocked["missing"], serde_json::json!(["ad_storage", "ad_user_data"]));
    assert_eq!(blocked["state"]["ad_user_data"], serde_json::json!({"status": "denied", "source": "gcd"}));
    assert!(blocked["request_id"].is_string());
    let _ = std::fs::remove_file(&audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cmp_header_outranks_the_hit_and_unset_can_be_granted() {
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&config(&vendor, "[consent]\nunset = \"grant\"")).await;
    let denied = corpus_hit_query("ga4_05_scroll_consent_denied.txt");
    let mut with_header = sluice_tests::hit_request(&denied);
    with_header.headers.insert("x-consent", "ad_storage=granted, ad_user_data=granted".parse().expect("value"));
    let (_, trace) = server.container.handle(with_header).await;
    assert!(trace.tag_run(0, "ads").expect("ran").outcome.is_ok(), "the header comes first by default");
    assert!(!trace.tag_run(0, "analytics").expect("ran").outcome.is_ok(), "gcd still denies analytics");

    let (_, trace) = server.container.handle(sluice_tests::hit_request(&corpus_hit_query("ga4_14_page_view_analytics_google_com.txt"))).await;
    assert!(trace.tag_run(0, "ads").expect("ran").outcome.is_ok(), "unset = \"grant\": consent mode not in use runs");

    let mut malformed = sluice_tests::hit_request(&denied);
    malformed.headers.insert("x-consent", "{definitely not json".parse().expect("value"));
    let (_, trace) = server.container.handle(malformed).await;
    assert!(!trace.tag_run(0, "ads").expect("ran").outcome.is_ok(), "a malformed header falls back to gcd, never to granted");
    server.stop().await;
}
