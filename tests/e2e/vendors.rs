//! Vendor tags end to end: real GA4 hits in, a fake vendor that enforces the vendor's
//! documented rules receives what the real one would.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sluice_tests::{FakeVendor, Received, TestServer, corpus_batched_hit, corpus_hit_query, ga4, loopback_outbound, meta, template, tiktok};

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn fake_meta() -> sluice_tests::Judge {
    Arc::new(|r: &Received| meta::judge(r, now_secs()))
}

/// The GA4 client and the four bundled vendor tags (Meta, TikTok, GA4 web and MP), every
/// vendor endpoint at `origin`; the tokens and the MP secret are `TEST_SECRET`.
pub(crate) fn config(origin: &str) -> String {
    format!(
        r#"{outbound}
[server]
trusted_proxies = 1

[outbox]
drain_ms = 1500

{client}

[[tag]]
name = "meta"
wasm = "{tag}"
trigger = {{ events = ["purchase", "page_view", "add_to_cart"] }}
params = {{ pixel_id = "1234567890", access_token = "${{TEST_SECRET}}", endpoint = "{origin}", phone_calling_code = "1" }}
grants = {{ event_data = ["*"], cookies = ["_fbp", "_fbc"], response_cookies = ["_fbp", "_fbc"], outbound = ["{origin}/"], logging = true }}

[[tag]]
name = "tiktok"
wasm = "{tiktok}"
trigger = {{ events = ["purchase", "add_to_cart"] }}
params = {{ pixel_code = "CABC123", access_token = "${{TEST_SECRET}}", endpoint = "{origin}" }}
grants = {{ event_data = ["*"], cookies = ["ttclid", "_ttp"], outbound = ["{origin}/open_api/"], logging = true }}

[[tag]]
name = "ga4-web"
wasm = "{ga4}"
trigger = {{ events = ["*"] }}
params = {{ endpoint = "{origin}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/g/collect"] }}

[[tag]]
name = "ga4-mp"
wasm = "{ga4}"
trigger = {{ events = ["*"] }}
params = {{ endpoint = "{origin}", mode = "mp", api_secret = "${{TEST_SECRET}}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/mp/collect"] }}
"#,
        outbound = loopback_outbound(),
        client = sluice_tests::ga4_client_entry(),
        tag = template("meta-capi-tag").display(),
        tiktok = template("tiktok-events-tag").display(),
        ga4 = template("ga4-tag").display(),
        origin = origin,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_receives_valid_hashed_events_for_consented_hits_only() {
    let vendor = FakeVendor::start().await;
    vendor.judge("/v25.0/", fake_meta());
    vendor.judge("/open_api/", Arc::new(|r: &Received| tiktok::judge(r, now_secs())));
    vendor.judge("/g/collect", Arc::new(ga4::judge));
    vendor.judge("/mp/collect", Arc::new(ga4::judge));
    let server = TestServer::start(&config(&vendor.origin())).await;

    // Granted (G111 / 13r3r3r2r5l1), with customer data the site sent as ep.user_data.*.
    let granted = corpus_hit_query("ga4_03_add_to_cart_items.txt")
        + "&ep.user_data.email_address=John_Smith%40gmail.com&ep.user_data.phone_number=(650)555-1212\
           &dl=https%3A%2F%2Fshop.example%2Fp%3Ffbclid%3DIwAR2F4abc";
    let denied = corpus_hit_query("ga4_06_add_to_cart_consent_denied.txt") + "&ep.user_data.email_address=someone%40example.com";
    let mut set_cookies = Vec::new();
    for query in [&granted, &denied] {
        let res = server
            .post_hit(query, &[("user-agent", "Mozilla/5.0 (e2e)"), ("x-forwarded-for", "203.0.113.77"), ("cookie", "_fbp=fb.1.1596403881668.1116446470; _ttp=ttp-e2e-value; session=not-for-vendors")])
            .await;
        assert_eq!(res.status(), 204);
        set_cookies.push(res.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect::<Vec<_>>());
    }
    // The host set Meta's click-id cookie for the consented hit (the visitor's _fbp is kept),
    // and nothing for the hit consent blocked Meta on.
    let fbc_set: Vec<&String> = set_cookies[0].iter().filter(|l| l.starts_with("_f")).collect();
    assert!(fbc_set.len() == 1 && fbc_set[0].starts_with("_fbc=fb.1.") && fbc_set[0].contains(".IwAR2F4abc; Path=/; Max-Age=7776000"), "{set_cookies:?}");
    assert!(!set_cookies[1].iter().any(|l| l.starts_with("_fb")), "{set_cookies:?}");
    server.stop().await;

    let calls = vendor.received_at("/v25.0/1234567890/events");
    assert_eq!(calls.len(), 1, "the denied hit never reached Meta");
    assert!(calls[0].query.contains("access_token=s3cr3t-value"));
    assert!(meta::check(&calls[0], now_secs()).is_ok(), "Meta's rules accept it: {:?}", meta::check(&calls[0], now_secs()));
    let event = &calls[0].json()["data"][0];
    assert_eq!(event["event_name"], "AddToCart");
    let user = &event["user_data"];
    assert_eq!(user["em"], "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
    assert_eq!(user["ph"], "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176");
    assert_eq!(user["client_ip_address"], "203.0.113.77");
    assert_eq!(user["client_user_agent"], "Mozilla/5.0 (e2e)");
    assert_eq!(user["fbp"], "fb.1.1596403881668.1116446470");
    assert_eq!(Some(user["fbc"].as_str().unwrap_or_default()), fbc_set[0].strip_prefix("_fbc=").and_then(|l| l.split(';').next()), "Meta got the cookie the host set");
    assert_eq!(event["custom_data"]["contents"][0], json!({"id": "SKU_12345", "item_price": 10.01, "quantity": 3}));
    assert!(!String::from_utf8_lossy(&calls[0].body).contains("someone@example.com"));

    let tt = vendor.received_at("/open_api/v1.3/event/track/");
    assert_eq!(tt.len(), 1, "TikTok too got only the consented hit");
    assert_eq!(tiktok::check(&tt[0], now_secs()), Ok(()));
    assert_eq!(tt[0].headers["access-token"], "s3cr3t-value");
    let data = &tt[0].json()["data"][0];
    assert_eq!(data["event"], "AddToCart");
    assert_eq!(data["user"]["email"], "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
    assert_eq!(data["user"]["ip"], "203.0.113.77");
    assert_eq!(data["properties"]["contents"][0]["content_id"], "SKU_12345");
    // TikTok has no `fire`: the host queued its granted cookie with the event, and only that.
    assert_eq!(data["user"]["ttp"], "ttp-e2e-value");
    assert!(!String::from_utf8_lossy(&tt[0].body).contains("not-for-vendors"));
    // The hit has no event_id: both derive one from the host's fingerprint of the same event.
    let id = event["event_id"].as_str().expect("Meta got an event_id");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(data["event_id"], id, "Meta and TikTok deduplicate with the same id");

    // GA4 needs analytics_storage, granted on the first hit only (13r... vs 13p...).
    let web = vendor.received_at("/g/collect");
    assert_eq!(web.len(), 1);
    assert!(ga4::check_web(&web[0]).is_empty(), "{:?}", ga4::check_web(&web[0]));
    assert!(web[0].query.contains("en=add_to_cart") && web[0].query.contains("_uip=203.0.113.77"));
    assert!(web[0].query.contains("pr1=") && web[0].query.contains("idSKU_12345"), "items re-encoded");
    assert!(!web[0].query.contains("John_Smith"), "user_data never goes to GA4");
    assert_eq!(web[0].headers["user-agent"], "Mozilla/5.0 (e2e)");
    let mp = vendor.received_at("/mp/collect");
    assert_eq!(mp.len(), 1);
    assert!(ga4::check_mp(&mp[0]).is_empty(), "{:?}", ga4::check_mp(&mp[0]));
    assert_eq!(mp[0].json()["events"][0]["params"]["value"], 30.03);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_browser_hit_reaches_google_as_one_web_hit_of_its_events() {
    let vendor = FakeVendor::start().await;
    vendor.judge("/g/collect", Arc::new(ga4::judge));
    vendor.judge("/mp/collect", Arc::new(ga4::judge));
    let server = TestServer::start(&config(&vendor.origin())).await;
    let (query, body) = corpus_batched_hit();
    // Consent granted (the capture's gcd has every purpose unset).
    let query = query.replace("gcd=13l3l3l3l1l1", "gcd=13r3r3r2r5l1") + "&gcs=G111";
    let res = server.http.post(server.url(&format!("/g/collect?{query}"))).body(body).send().await.expect("request");
    assert_eq!(res.status(), 204);
    server.stop().await;

    let web = vendor.received_at("/g/collect");
    assert_eq!(web.len(), 1, "two events, one web hit, as gtag sent them");
    assert_eq!(ga4::check_web(&web[0]), Vec::<String>::new(), "each event has v, tid, cid and en");
    let lines = String::from_utf8_lossy(&web[0].body).into_owned();
    let names: Vec<&str> = lines.split("\r\n").filter_map(|l| l.split('&').find_map(|p| p.strip_prefix("en="))).collect();
    assert_eq!(names, ["scroll", "page_view"], "{lines}");
    assert!(lines.contains("dr=https%3A%2F%2Ffactors.directory%2Fen"), "the line that overrode dr still does: {lines}");
    let mp = vendor.received_at("/mp/collect");
    assert_eq!(mp.len(), 1, "one visitor's two events in one Measurement Protocol request");
    assert_eq!(mp[0].json()["events"].as_array().map(Vec::len), Some(2));
}

#[test]
fn the_fake_ga4_reads_each_event_of_a_batched_hit() {
    let hit = |query: &str, body: &str| Received {
        method: "POST".into(),
        path: "/g/collect".into(),
        query: query.into(),
        headers: Default::default(),
        body: body.to_string().into(),
    };
    assert!(ga4::check_web(&hit("v=2&tid=G-1&cid=1.2&en=page_view", "")).is_empty());
    assert!(ga4::check_web(&hit("v=2&tid=G-1&cid=1.2", "en=scroll&_et=3\r\nen=page_view")).is_empty());
    assert_eq!(ga4::check_web(&hit("v=2&tid=G-1&cid=1.2", "en=scroll\r\n_et=3")), ["event 1: en is required"]);
    assert_eq!(ga4::check_web(&hit("v=2&tid=G-1&cid=1.2", "")), ["event 0: en is required"]);
    assert_eq!(ga4::check_web(&hit("tid=G-1&en=x", "cid=1")), ["event 0: v=2 is required"]);
}

#[test]
fn the_fake_meta_rejects_what_meta_rejects() {
    let request = |body: Value| Received {
        method: "POST".into(),
        path: "/v25.0/1/events".into(),
        query: "access_token=t".into(),
        headers: Default::default(),
        body: body.to_string().into(),
    };
    let now = now_secs();
    let good = json!({"event_name": "Purchase", "event_time": now, "action_source": "website",
                      "user_data": {"em": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f", "client_user_agent": "UA"}});
    assert_eq!(meta::check(&request(json!({"data": [good.clone()]})), now), Ok(1));
    let mut unhashed = good.clone();
    unhashed["user_data"]["em"] = json!("john@example.com");
    let mut stale = good.clone();
    stale["event_time"] = json!(now - 8 * 24 * 3600);
    let mut millis = good.clone();
    millis["event_time"] = json!(now * 1000);
    let mut no_ua = good.clone();
    no_ua["user_data"].as_object_mut().expect("object").remove("client_user_agent");
    for (bad, why) in [(unhashed, "SHA-256"), (stale, "7 days"), (millis, "future"), (no_ua, "client_user_agent")] {
        let err = meta::check(&request(json!({"data": [good.clone(), bad]})), now).unwrap_err();
        assert!(err.contains(why), "one bad event rejects the batch: {err}");
    }
}
