//! Claiming, priorities, triggers and tag isolation, as a site would see them.

use std::time::Duration;

use serde_json::json;
use sluice_tests::{FakeVendor, TestServer, loopback_outbound, request, template};

fn probe_client(name: &str, priority: i32, path: &str, mode: &str) -> String {
    format!(
        r#"
[[client]]
name = "{name}"
wasm = "{wasm}"
priority = {priority}
params = {{ path = "{path}", label = "{name}", mode = "{mode}" }}
grants = {{ query = true, response_headers = ["x-claimed-by"] }}
"#,
        wasm = template("probe-client").display()
    )
}

fn probe_tag(name: &str, priority: i32, sink: &FakeVendor, trigger: &str, extra_params: &str) -> String {
    format!(
        r#"
[[tag]]
name = "{name}"
wasm = "{wasm}"
priority = {priority}
trigger = {trigger}
params = {{ sink = "{origin}/sink", label = "{name}"{extra_params} }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"], response_cookies = ["probe_tag"] }}
"#,
        wasm = template("probe-tag").display(),
        origin = sink.origin()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highest_priority_claims_first_and_no_other_client_runs() {
    let vendor = FakeVendor::start().await;
    let config = [
        loopback_outbound(),
        probe_client("low", 1, "/hit", "claim"),
        probe_client("high", 10, "/hit", "claim"),
        probe_client("passer", 20, "/hit", "pass"),
        probe_client("broken", 30, "/hit", "panic"),
        // Same priority as "high": the name breaks the tie, and "high" < "other" sorts first.
        probe_client("other", 10, "/hit", "claim"),
        probe_tag("recorder", 0, &vendor, r#"{ events = ["*"] }"#, ""),
    ]
    .concat();
    let server = TestServer::start(&config).await;

    let res = server.http.get(server.url("/hit?en=page_view")).send().await.expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-claimed-by"], "high");
    assert_eq!(res.text().await.expect("body"), "ok");

    let reports = vendor.received_at("/sink");
    assert_eq!(reports.len(), 1, "exactly one claim, one event, one tag run");
    let report = reports[0].json();
    assert_eq!(report["event"]["claimed_by"], "high");
    assert_eq!(report["event"]["event_name"], "page_view");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_client_claims_gets_400() {
    let vendor = FakeVendor::start().await;
    let config = [loopback_outbound(), probe_client("c", 0, "/mine", "claim"), probe_tag("t", 0, &vendor, r#"{ events = ["*"] }"#, "")].concat();
    let server = TestServer::start(&config).await;
    let res = server.http.post(server.url("/not-mine")).body("x").send().await.expect("request");
    assert_eq!(res.status(), 400);
    assert_eq!(res.text().await.expect("body"), "no client claimed the request");
    assert!(vendor.received().is_empty(), "no tag runs for an unclaimed request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_fire_on_matching_events_in_priority_order_and_failures_stay_contained() {
    let vendor = FakeVendor::start().await;
    let collect = format!(
        "[[client]]\nname = \"collect\"\nwasm = \"{}\"\ngrants = {{ body = true, response_headers = [\"content-type\"] }}\n",
        template("json-collect-client").display()
    );
    let config = [
        loopback_outbound(),
        collect,
        probe_tag("eur-purchases", 5, &vendor, r#"{ events = ["purchase"], conditions = [{ key = "currency", equals = "EUR" }] }"#, ""),
        probe_tag("all-events", 1, &vendor, r#"{ events = ["*"] }"#, ""),
        probe_tag("z-fails", 9, &vendor, r#"{ events = ["*"] }"#, r#", mode = "fail""#),
        probe_tag("a-traps", 9, &vendor, r#"{ events = ["*"] }"#, r#", mode = "panic""#),
        probe_tag("skips", 0, &vendor, r#"{ events = ["*"] }"#, r#", mode = "skip""#),
    ]
    .concat();
    let server = TestServer::start(&config).await;
    let events = json!([
        {"event_name": "purchase", "currency": "EUR", "value": 10},
        {"event_name": "purchase", "currency": "USD", "value": 12},
        {"event_name": "page_view"}
    ]);
    let res = server.http.post(server.url("/collect")).json(&events).send().await.expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.expect("json"), json!({"received": 3}));

    let reports: Vec<serde_json::Value> = vendor.received_at("/sink").iter().map(|r| r.json()).collect();
    let seen = |label: &str| reports.iter().filter(|r| r["label"] == label).count();
    assert_eq!(seen("eur-purchases"), 1, "only the EUR purchase matches");
    assert_eq!(seen("all-events"), 3, "the failing and trapping tags did not stop it");
    let eur = reports.iter().find(|r| r["label"] == "eur-purchases").expect("eur report");
    assert_eq!(eur["event"]["value"], 10);

    // The same request through the pipeline API, to read the trace: tags start highest
    // priority first, ties by name, and each failure is recorded as what it was.
    let body = serde_json::to_vec(&events).expect("json");
    let (_, trace) = server.container.handle(request("POST", "/collect", &body)).await;
    let order: Vec<&str> = trace.events[0].tags.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(order, ["a-traps", "z-fails", "eur-purchases", "all-events", "skips"]);
    // A tag that decides there is nothing to send says why, apart from `ok` and from failing.
    let skipped = &trace.tag_run(0, "skips").expect("ran").outcome;
    assert_eq!(*skipped, sluice::Outcome::Skipped("probe tag told to skip".into()));
    assert!(skipped.is_ok() && skipped.to_string() == "skipped: probe tag told to skip", "{skipped}");
    assert!(matches!(trace.tag_run(0, "a-traps").expect("ran").outcome, sluice::Outcome::Trapped(_)));
    assert_eq!(trace.tag_run(0, "z-fails").expect("ran").outcome, sluice::Outcome::Failed("probe tag told to fail".into()));
    assert!(trace.tag_run(0, "all-events").expect("ran").outcome.is_ok());
    assert!(trace.tag_run(2, "eur-purchases").is_none(), "page_view does not trigger it");
    // Each run's time is split into its phases (the benchmarks' per-tag breakdown).
    for run in &trace.events[0].tags {
        let p = run.phases;
        assert!(p.instantiate > Duration::ZERO && p.call > Duration::ZERO && p.teardown > Duration::ZERO, "{}: {p:?}", run.tag);
        assert!(p.instantiate + p.call + p.teardown <= run.duration, "{}: {p:?} within {:?}", run.tag, run.duration);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_cannot_fan_out_into_more_events_than_the_cap() {
    let vendor = FakeVendor::start().await;
    let config = [
        loopback_outbound(),
        "[server]\nmax_events_per_request = 3\n\n".to_string(),
        format!("[[client]]\nname = \"collect\"\nwasm = \"{}\"\ngrants = {{ body = true }}\n", template("json-collect-client").display()),
        probe_tag("every-event", 1, &vendor, r#"{ events = ["*"] }"#, ""),
    ]
    .concat();
    let server = TestServer::start(&config).await;
    let events: Vec<serde_json::Value> = (0..5).map(|i| json!({"event_name": "page_view", "n": i})).collect();
    let body = serde_json::to_vec(&events).expect("json");
    let (_, trace) = server.container.handle(request("POST", "/collect", &body)).await;
    server.stop().await;
    let seen: Vec<i64> = vendor.received_at("/sink").iter().filter_map(|r| r.json()["event"]["n"].as_i64()).collect();
    assert_eq!(seen, [0, 1, 2], "the first three events ran the tag, the rest none");
    assert_eq!(trace.events.len(), 3);
    let (client, error) = &trace.client_errors[0];
    assert_eq!(client, "collect");
    assert!(error.contains("5 events") && error.contains("max_events_per_request"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_can_set_a_granted_cookie_before_the_response_goes_out() {
    let vendor = FakeVendor::start().await;
    let config = [loopback_outbound(), probe_client("c", 0, "/hit", "claim"), probe_tag("t", 0, &vendor, r#"{ events = ["*"] }"#, r#", mode = "cookie""#)].concat();
    let server = TestServer::start(&config).await;
    let res = server.http.get(server.url("/hit")).send().await.expect("request");
    let cookie = res.headers().get("set-cookie").expect("cookie set by the tag").to_str().expect("text");
    assert!(cookie.starts_with("probe_tag=1") && cookie.contains("Secure"), "{cookie}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_before_tags_answers_while_the_vendor_is_still_busy() {
    let vendor = FakeVendor::start().await;
    let client = probe_client("c", 0, "/hit", "claim").replace("priority = 0", "priority = 0\nrespond_before_tags = true");
    // The tag reports to a path the vendor holds until the test releases it.
    let tag = probe_tag("t", 0, &vendor, r#"{ events = ["*"] }"#, "").replace("/sink", "/gated/sink");
    let server = TestServer::start(&[loopback_outbound(), client, tag].concat()).await;

    let res = tokio::time::timeout(std::time::Duration::from_secs(20), server.http.get(server.url("/hit")).send())
        .await
        .expect("the response must not wait for the held tag")
        .expect("request");
    assert_eq!(res.status(), 200);
    vendor.release(1);
    server.stop().await; // waits for the background tag
    assert_eq!(vendor.received_at("/gated/sink").len(), 1, "the tag still delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_tags_are_bounded_and_a_full_background_slows_the_sender() {
    let vendor = FakeVendor::start().await;
    let client = probe_client("c", 0, "/hit", "claim").replace("priority = 0", "priority = 0\nrespond_before_tags = true");
    let tag = probe_tag("t", 0, &vendor, r#"{ events = ["*"] }"#, "").replace("/sink", "/gated/sink");
    // Four instance slots: two requests' tags may wait in the background.
    let config = ["[limits]\nmax_concurrent = 4\n\n".to_string(), loopback_outbound(), client, tag].concat();
    let server = TestServer::start(&config).await;
    let hit = || server.http.get(server.url("/hit")).send();
    let quick = std::time::Duration::from_secs(20);
    for _ in 0..2 {
        let res = tokio::time::timeout(quick, hit()).await.expect("answered before its tag").expect("request");
        assert_eq!(res.status(), 200);
    }
    // The background is full: the third request runs its tag first, which the vendor holds.
    let third = tokio::spawn(hit());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!third.is_finished(), "with the background full, the answer waits for the tag");
    vendor.release(3);
    let res = tokio::time::timeout(quick, third).await.expect("answered once the vendor answers").expect("task").expect("request");
    assert_eq!(res.status(), 200);
    server.stop().await;
    assert_eq!(vendor.received_at("/gated/sink").len(), 3, "every tag delivered; nothing was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_early_response_a_tag_cannot_set_cookies() {
    let vendor = FakeVendor::start().await;
    let client = probe_client("c", 0, "/hit", "claim").replace("priority = 0", "priority = 0\nrespond_before_tags = true");
    let config = [loopback_outbound(), client, probe_tag("t", 0, &vendor, r#"{ events = ["*"] }"#, r#", mode = "cookie""#)].concat();
    let server = TestServer::start(&config).await;
    let res = server.http.get(server.url("/hit")).send().await.expect("request");
    assert!(res.headers().get("set-cookie").is_none());
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    assert!(trace.tags_in_background && trace.events.is_empty(), "the tags' part is logged when they finish");
    server.stop().await;
    assert!(vendor.received().is_empty(), "the tag failed at set_cookie: the response had already gone");
}
