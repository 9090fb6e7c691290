//! Costs a template or a visitor can impose are bounded: one test per class of attack, each
//! with the host's real components (the probe fixtures' hostile modes).

use sluice::Outcome;
use sluice_policy::response::{MAX_COOKIES, MAX_HEADERS};
use sluice_tests::{FakeVendor, TestServer, loopback_outbound, parse_config, request, template};

/// The probe client (with `client_params`) and two probe tags on every event: `bad` (with
/// `bad_params`) and `good`, both reporting to the vendor.
fn container(vendor: &FakeVendor, sections: &str, client_params: &str, bad_params: &str) -> String {
    let origin = vendor.origin();
    format!(
        r#"{outbound}
{sections}

[[client]]
name = "c"
wasm = "{client}"
params = {{ path = "/hit", label = "c"{client_params} }}
grants = {{ response_headers = ["x-claimed-by"] }}

[[tag]]
name = "bad"
wasm = "{tag}"
priority = 10
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "bad"{bad_params} }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"], request_headers = ["user-agent"], logging = true,
           response_headers = ["*"], response_cookies = ["probe_tag"] }}

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

fn labels(vendor: &FakeVendor) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = vendor
        .received_at("/sink")
        .iter()
        .map(|r| {
            let report = r.json();
            (report["label"].as_str().unwrap_or("").to_string(), report["event"]["event_name"].as_str().unwrap_or("").to_string())
        })
        .collect();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_with_huge_names_leave_the_host_holding_a_bounded_trace() {
    // 200 refused header reads, each naming a 64 KiB header: before, every message was kept
    // whole (12.5 MiB per request in the trace, and up to 1,024 of them remembered forever).
    let vendor = FakeVendor::start().await;
    let sections = "[limits]\ncpu_ms = 2000\n";
    let server = TestServer::start(&container(&vendor, sections, "", ", mode = \"deny_flood\"")).await;
    for round in 0..2 {
        let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
        let bad = trace.tag_run(0, "bad").expect("ran");
        assert_eq!(bad.outcome, Outcome::Ok, "round {round}: refusals are errors the template handles");
        let kept: usize = bad.denials.iter().map(String::len).sum();
        assert!(bad.denials.len() <= 33 && kept < 64 * 1024, "round {round}: {} denials, {kept} bytes kept", bad.denials.len());
        assert!(bad.denials[0].contains("bytes in all") && bad.denials[0].contains("is not granted"), "{}", bad.denials[0]);
        let last = bad.denials.last().expect("a summary");
        assert!(last.contains("and 168 more denials"), "the rest are counted: {last}");
    }
    // 200 per request, plus the client's read of the query string (not granted here).
    assert_eq!(server.container.denial_count(), 2 * 201, "every refusal is counted");
    assert_eq!(labels(&vendor).len(), 4, "both tags reported both times");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templates_error_message_is_traced_and_logged_in_bounded_form() {
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&container(&vendor, "", "", ", mode = \"fail_long\"")).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    let outcome = trace.tag_run(0, "bad").expect("ran").outcome.to_string();
    assert!(outcome.starts_with("failed: eee") && outcome.ends_with('…') && outcome.len() < 4096, "{} bytes", outcome.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_hand_the_host_more_event_json_than_its_memory_budget_parses() {
    let vendor = FakeVendor::start().await;
    // One 8 MB event: over the default cap (1 MiB with memory_mb = 64), so it is never parsed.
    // Writing 8 MB takes the client tens of milliseconds, more on a loaded test machine: the
    // CPU budget is roomy, this is about the event cap.
    let roomy = "[limits]\ncpu_ms = 400\n";
    let server = TestServer::start(&container(&vendor, roomy, ", pad_bytes = 8000000", "")).await;
    let (response, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    assert_eq!(response.status, 200, "the client's answer stands");
    assert!(trace.events.is_empty(), "no tag ran on the oversized event");
    let (client, error) = &trace.client_errors[0];
    assert!(client == "c" && error.contains("event 0 (8000") && error.contains("max_event_bytes"), "{error}");
    server.stop().await;

    // Three 400 kB events under a 1,000,000-byte cap: the first two run, the third is dropped.
    let sections = "[limits]\ncpu_ms = 400\n\n[server]\nmax_event_bytes = 1000000\n";
    let server = TestServer::start(&container(&vendor, sections, ", pad_bytes = 400000, events = [\"e1\", \"e2\", \"e3\"]", "")).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    let events: Vec<&str> = trace.events.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(events, ["e1", "e2"]);
    assert!(trace.client_errors[0].1.contains("event 2 (400"), "{:?}", trace.client_errors);
    server.stop().await;

    // A cap the client's memory budget cannot parse is refused at load, with the fix.
    let text = container(&vendor, "[limits]\nmemory_mb = 16\n\n[server]\nmax_event_bytes = 4000000\n", "", "");
    let err = parse_config(&text).expect_err("over the budget").to_string();
    assert!(err.contains("[server]") && err.contains("max_event_bytes must be between 1 and 838860") && err.contains("memory_mb"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_work_done_for_a_template_is_charged_to_its_cpu_budget() {
    // The tag asks for a header with a 16 MiB name in a loop: almost no guest instructions,
    // much host work per call (copying the argument in, checking and lower-casing it). Each
    // call used to be charged one epoch tick, so the tag ran until the wall-clock limit
    // (10 x cpu_ms here); charged by the ticks it spans, it stops at its CPU budget. (The
    // budget is roomy so the good tag finishes on a loaded test machine too.)
    let vendor = FakeVendor::start().await;
    let sections = "[limits]\ncpu_ms = 400\nwall_ms = 4000\nmemory_mb = 256\n";
    let server = TestServer::start(&container(&vendor, sections, "", ", mode = \"host_flood\"")).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    assert_eq!(trace.tag_run(0, "bad").expect("ran").outcome, Outcome::CpuLimit);
    assert_eq!(trace.tag_run(0, "good").expect("ran").outcome, Outcome::Ok, "{:?}", trace.events[0].tags);
    assert_eq!(labels(&vendor), [("good".to_string(), "probe".to_string())]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_and_cookies_are_capped_in_number() {
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&container(&vendor, "", "", ", mode = \"response_flood\"")).await;
    let res = server.http.get(server.url("/hit")).send().await.expect("request");
    assert_eq!(res.status(), 200);
    let template_headers = res.headers().keys().filter(|n| n.as_str().starts_with("x-")).count();
    let cookies = res.headers().get_all("set-cookie").iter().count();
    assert_eq!((template_headers, cookies), (MAX_HEADERS, MAX_COOKIES), "the client's x-claimed-by plus the tag's, up to the cap");
    server.stop().await;
    let report = vendor.received_at("/sink").into_iter().map(|r| r.json()).find(|r| r["label"] == "bad").expect("reported");
    assert_eq!(report["flood"]["headers"], MAX_HEADERS - 1, "the rest were refused, not silently dropped");
    assert_eq!(report["flood"]["cookies"], MAX_COOKIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_has_one_deadline_however_many_events_it_carries() {
    // Ten events; the bad tag waits on a vendor that never answers. Each invocation may take
    // wall_ms = 400, so one request used to take 10 x 400 ms; now the whole request ends at
    // request_ms = 1000, and every tag of every event is accounted for.
    let vendor = FakeVendor::start().await;
    let sections = "[limits]\nwall_ms = 400\nrequest_ms = 1000\n";
    let events = ", events = [\"e0\", \"e1\", \"e2\", \"e3\", \"e4\", \"e5\", \"e6\", \"e7\", \"e8\", \"e9\"]";
    let stuck = format!(", extra_url = \"{}/gated/never\"", vendor.origin());
    let server = TestServer::start(&container(&vendor, sections, events, &stuck)).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    assert!(trace.duration < std::time::Duration::from_millis(2500), "took {:?}", trace.duration);
    assert_eq!(trace.events.len(), 10);
    let outcomes: Vec<Outcome> = trace.events.iter().map(|e| trace_outcome(e, "bad")).collect();
    // At most two 400 ms waits fit in 1,000 ms (fewer on a slow machine); the rest are cut or
    // never start.
    assert_eq!(outcomes[0], Outcome::TimedOut, "{outcomes:?}");
    assert!(outcomes.iter().filter(|o| **o == Outcome::TimedOut).count() <= 2, "{outcomes:?}");
    assert!(outcomes[2..].iter().all(|o| *o == Outcome::DeadlinePassed), "{outcomes:?}");
    let not_run = trace.events.iter().filter(|e| e.tags.iter().all(|t| t.outcome == Outcome::DeadlinePassed)).count();
    assert!(not_run >= 7, "events past the deadline run no tag, and say so: {not_run}");
    vendor.release(100);
    server.stop().await;

    let err = parse_config(&container(&vendor, "[limits]\nwall_ms = 5000\nrequest_ms = 1000\n", "", "")).expect_err("deadline below wall_ms");
    assert!(err.to_string().contains("request_ms (the whole request) must be at least wall_ms"), "{err}");
}

fn trace_outcome(event: &sluice::trace::EventTrace, tag: &str) -> Outcome {
    event.tags.iter().find(|t| t.tag == tag).map(|t| t.outcome.clone()).unwrap_or(Outcome::Ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_traps_on_one_event_costs_only_that_invocation() {
    let vendor = FakeVendor::start().await;
    let events = ", events = [\"first\", \"poison\", \"last\"]";
    let server = TestServer::start(&container(&vendor, "", events, ", panic_on = \"poison\"")).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    let outcome = trace.tag_run(1, "bad").expect("ran").outcome.to_string();
    assert!(outcome.starts_with("trapped"), "{outcome}");
    for (n, tag) in [(0, "bad"), (2, "bad"), (0, "good"), (1, "good"), (2, "good")] {
        assert_eq!(trace.tag_run(n, tag).expect("ran").outcome, Outcome::Ok, "event {n}, {tag}");
    }
    server.stop().await;
    let got = labels(&vendor);
    let want: Vec<(String, String)> = [("bad", "first"), ("bad", "last"), ("good", "first"), ("good", "last"), ("good", "poison")]
        .iter()
        .map(|(l, e)| (l.to_string(), e.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_header_grant_does_not_hand_over_credentials() {
    // The probe client declares request_headers = ["*"]; the operator grants "*" too.
    let vendor = FakeVendor::start().await;
    for (header, granted) in [("cookie", false), ("authorization", false), ("user-agent", true)] {
        let text = format!(
            "{outbound}\n[[client]]\nname = \"c\"\nwasm = \"{client}\"\n\
             params = {{ path = \"/hit\", label = \"c\", read_header = \"{header}\" }}\ngrants = {{ request_headers = [\"*\"] }}\n\n\
             [[tag]]\nname = \"t\"\nwasm = \"{tag}\"\ntrigger = {{ events = [\"*\"] }}\n\
             params = {{ sink = \"{origin}/sink\", label = \"t\" }}\ngrants = {{ event_data = [\"*\"], outbound = [\"{origin}/\"] }}\n",
            outbound = loopback_outbound(),
            client = template("probe-client").display(),
            tag = template("probe-tag").display(),
            origin = vendor.origin(),
        );
        let server = TestServer::start(&text).await;
        let mut req = request("GET", "/hit", b"");
        req.headers.insert(http::HeaderName::from_static(header), http::HeaderValue::from_static("visitor-credential"));
        let (_, trace) = server.container.handle(req).await;
        server.stop().await;
        let report = vendor.received_at("/sink").last().expect("reported").json();
        let result = &report["event"]["header_result"];
        if granted {
            assert_eq!(result["value"], "visitor-credential", "{header}: {result}");
        } else {
            let err = result["error"].as_str().expect("refused");
            assert!(err.contains("does not cover credential headers") && err.contains(header), "{header}: {err}");
            assert!(!report.to_string().contains("visitor-credential"));
        }
        assert!(trace.client_errors.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_host_drops_the_events_the_host_drops() {
    // Three 400 kB events against the default 1 MiB cap: both hosts pass the first two on.
    let vendor = FakeVendor::start().await;
    let server = TestServer::start(&container(&vendor, "", ", pad_bytes = 400000, events = [\"e1\", \"e2\", \"e3\"]", "")).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    server.stop().await;
    let host_events: Vec<String> = trace.events.iter().map(|e| e.event_name.clone()).collect();
    let host_dropped: Vec<String> = trace.client_errors.iter().map(|(_, why)| why.clone()).collect();

    let mut mock = sluice_sdk::mock::MockHost::new()
        .method("GET")
        .path("/hit")
        .param("path", "/hit")
        .param("label", "c")
        .param("pad_bytes", 400_000)
        .param("events", serde_json::json!(["e1", "e2", "e3"]));
    let sluice_sdk::Claim::Claimed(events) = mock.run_client::<probe_client::ProbeClient>().expect("claims") else {
        panic!("the probe client claims /hit");
    };
    let mock_events: Vec<String> = events.iter().map(|e| e["event_name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(host_events, ["e1", "e2"]);
    assert_eq!(mock_events, host_events);
    assert_eq!(mock.dropped_events(), host_dropped);
}
