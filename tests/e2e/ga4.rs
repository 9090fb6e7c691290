//! Real GA4 hits from the corpus, sent to the real server, arrive at a tag as sGTM event data.

use serde_json::Value;
use sluice_tests::{FakeVendor, TestServer, corpus_batched_hit, corpus_hit_query, loopback_outbound, template};

fn config(vendor: &FakeVendor) -> String {
    format!(
        r#"{outbound}
[server]
trusted_proxies = 2   # a CDN, then a load balancer at 10.0.0.1

[[client]]
name = "ga4"
wasm = "{client}"
params = {{ extra_paths = ["/collect"] }}
grants = {{ query = true, body = true, remote_address = true, request_headers = ["user-agent", "origin"],
           response_headers = ["access-control-allow-origin", "access-control-allow-credentials"] }}

[[tag]]
name = "recorder"
wasm = "{tag}"
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "recorder" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}
"#,
        outbound = loopback_outbound(),
        client = template("ga4-client").display(),
        tag = template("probe-tag").display(),
        origin = vendor.origin(),
    )
}

fn received_events(vendor: &FakeVendor) -> Vec<Value> {
    vendor.received_at("/sink").iter().map(|r| r.json()["event"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_hits_reach_tags_as_event_data() {
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&config(&vendor)).await;

    // A single-event hit, query only (as gtag sends it to a server container).
    let query = corpus_hit_query("ga4_03_add_to_cart_items.txt");
    let res = server
        .post_hit(&query, &[("origin", "https://shop.example"), ("user-agent", "Mozilla/5.0 (corpus)"), ("x-forwarded-for", "6.6.6.6, 203.0.113.50, 10.0.0.1")])
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://shop.example");

    // The batched capture: two events in the body, the second overriding dr.
    let (query, body) = corpus_batched_hit();
    let res = server.http.post(server.url(&format!("/collect?{query}"))).body(body).send().await.expect("request");
    assert_eq!(res.status(), 204);

    // Not a GA4 hit: claimed (it is this client's path), answered 400, nothing reaches tags.
    let res = server.http.post(server.url("/g/collect?tid=G-1&en=x")).send().await.expect("request");
    assert_eq!(res.status(), 400);
    assert!(res.text().await.expect("body").contains("v=2"));

    server.stop().await;
    let events = received_events(&vendor);
    assert_eq!(events.len(), 3, "one + two events; none from the invalid hit");
    let add = events.iter().find(|e| e["event_name"] == "add_to_cart").expect("add_to_cart");
    assert_eq!(add["items"][0]["item_id"], "SKU_12345");
    assert_eq!(add["items"][0]["quantity"], 3);
    assert_eq!(add["value"], 30.03);
    assert_eq!(add["x-ga-gcs"], "G111");
    assert_eq!(add["ip_override"], "203.0.113.50", "from X-Forwarded-For, two trusted hops from the right");
    assert_eq!(add["user_agent"], "Mozilla/5.0 (corpus)");
    let page_view = events.iter().find(|e| e["event_name"] == "page_view").expect("page_view");
    assert_eq!(page_view["page_referrer"], "https://factors.directory/en");
    assert_eq!(page_view["engagement_time_msec"], 944);
    assert!(events.iter().any(|e| e["event_name"] == "scroll" && e["percent_scrolled"] == 90));
}
