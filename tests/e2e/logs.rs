//! What reaches the operator's logs: enough to see what failed, never a secret.

use std::sync::Arc;

use sluice_tests::{Capture, FakeVendor, Received, TestServer, corpus_hit_query, hit_request};



/// A port nothing listens on: connecting is refused, as in a vendor outage.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

// One thread (the default test runtime), so the capturing subscriber sees the server, the
// pipeline and the outbound calls.
#[tokio::test]
async fn a_vendor_outage_is_logged_without_the_access_tokens_in_its_urls() {
    let (logs, _guard) = Capture::start(sluice::output::LogFormat::Text, "debug");
    // Meta's token and the GA4 Measurement Protocol secret travel in the URL's query string.
    let server = TestServer::start(&crate::vendors::config(&format!("http://127.0.0.1:{}", closed_port()))).await;
    let query = corpus_hit_query("ga4_03_add_to_cart_items.txt");
    assert_eq!(server.post_hit(&query, &[("user-agent", "Mozilla/5.0 (e2e)")]).await.status(), 204, "an outage never reaches the browser");
    let (_, trace) = server.container.handle(hit_request(&query)).await;
    server.stop().await;

    let outcomes: Vec<String> = trace.events[0].tags.iter().map(|t| format!("{}: {}", t.tag, t.outcome)).collect();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(trace.events[0].tags.iter().all(|t| t.outcome.is_ok() && t.queued == 1), "the visitor's request only queues: {outcomes:?}");
    let text = logs.text();
    // Delivery tried (while the server drained) and failed: logged by template, with paths.
    assert!(text.contains("outbound not completed") && text.contains("meta") && text.contains("ga4-mp"), "the failures are logged:\n{text}");
    assert!(text.contains("/v25.0/1234567890/events") && text.contains("/mp/collect"), "with the URLs' paths:\n{text}");
    for place in outcomes.iter().chain([&text]) {
        assert!(!place.contains("s3cr3t-value"), "a secret reached the logs or the trace:\n{place}");
    }
}

/// The dead-letter lines of a log.
fn server_dead_letters(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.contains("dead-lettered")).map(str::to_string).collect()
}

#[tokio::test]
async fn a_vendor_error_quoting_the_token_is_masked_in_logs_and_trace() {
    let (logs, _guard) = Capture::start(sluice::output::LogFormat::Text, "debug");
    // A vendor whose error message repeats the request's query string, token included.
    let vendor = FakeVendor::start().await;
    vendor.judge(
        "/",
        Arc::new(|r: &Received| (400, format!(r#"{{"error":{{"message":"bad request {}","type":"OAuthException","code":190}}}}"#, r.query))),
    );
    let server = TestServer::start(&crate::vendors::config(&vendor.origin())).await;
    let (_, trace) = server.container.handle(hit_request(&corpus_hit_query("ga4_03_add_to_cart_items.txt"))).await;
    server.stop().await;

    assert!(vendor.received().iter().any(|r| r.query.contains("access_token=s3cr3t-value")), "Meta was sent the real token");
    let text = logs.text();
    assert!(text.contains("Meta did not take 1 events") && text.contains("bad request access_token=[secret]"), "the tag's warning, with the vendor's message masked:\n{text}");
    let dead: Vec<String> = server_dead_letters(&text);
    assert!(!text.contains("s3cr3t-value") && dead.iter().all(|d| !d.contains("s3cr3t-value")), "a secret reached the logs:\n{text}");
    assert!(trace.tag_run(0, "meta").expect("ran").outcome.is_ok(), "the request itself only queued");
}
