//! Runaway templates are stopped; the host and the other tags carry on.

use sluice_tests::{FakeVendor, TestServer, loopback_outbound, request, template};

fn config(vendor: &FakeVendor, mode: &str) -> String {
    let origin = vendor.origin();
    format!(
        r#"{outbound}
[limits]
cpu_ms = 200
memory_mb = 32

[[client]]
name = "c"
wasm = "{client}"
params = {{ path = "/hit", label = "c" }}

[[tag]]
name = "bad"
wasm = "{tag}"
priority = 10
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "bad", mode = "{mode}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}

[[tag]]
name = "good"
wasm = "{tag}"
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "good" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}
"#,
        outbound = loopback_outbound(),
        client = template("probe-client").display(),
        tag = template("probe-tag").display(),
    )
}

async fn runaway_is_stopped(mode: &str, expected: sluice::Outcome) {
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&config(&vendor, mode)).await;

    for round in 0..2 {
        let res = server.http.get(server.url("/hit")).send().await.expect("request");
        assert_eq!(res.status(), 200, "round {round}: the host answers despite the runaway tag");
    }
    let labels: Vec<String> = vendor.received_at("/sink").iter().map(|r| r.json()["label"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(labels, ["good", "good"], "the good tag delivered both times; the bad one never did");

    let health = server.http.get(server.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);

    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    assert_eq!(trace.tag_run(0, "bad").expect("ran").outcome, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_loops_forever_is_stopped_by_the_cpu_limit() {
    runaway_is_stopped("spin", sluice::Outcome::CpuLimit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_allocates_without_bound_is_stopped_by_the_memory_limit() {
    runaway_is_stopped("hog", sluice::Outcome::MemoryLimit).await;
}
