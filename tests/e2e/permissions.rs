//! A template can do only what it declared and the operator granted.

use sluice_tests::{FakeVendor, TestServer, loopback_outbound, request, template};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_header_read_is_refused_with_a_typed_error() {
    let vendor = FakeVendor::start().await;
    let config = format!(
        r#"{outbound}
[[client]]
name = "c"
wasm = "{client}"
params = {{ path = "/hit", label = "c", read_header = "x-session" }}
grants = {{ request_headers = ["user-agent"] }}

[[tag]]
name = "t"
wasm = "{tag}"
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "t", read_header = "user-agent" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"], request_headers = ["user-agent"] }}
"#,
        outbound = loopback_outbound(),
        client = template("probe-client").display(),
        tag = template("probe-tag").display(),
        origin = vendor.origin(),
    );
    let server = TestServer::start(&config).await;
    let res = server
        .http
        .get(server.url("/hit"))
        .header("x-session", "visitor-secret")
        .header("user-agent", "test-agent/1.0")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "the client handled the refusal and carried on");
    let report = vendor.received_at("/sink")[0].json();
    let refused = report["event"]["header_result"]["error"].as_str().expect("client saw an error");
    assert!(refused.starts_with("permission denied: request header \"x-session\" is not granted"), "{refused}");
    assert!(refused.contains("request_headers"), "the message says how to grant it: {refused}");
    let denied = &report["event"]["header_result"];
    assert_eq!((denied["permission"].as_str(), denied["name"].as_str()), (Some("request_headers"), Some("x-session")), "and as data: {denied}");
    assert_eq!(report["header_result"]["ok"], "test-agent/1.0", "a granted header reads fine");
    assert!(!report.to_string().contains("visitor-secret"));
    // x-session, plus the query string and response header the probe tries without grants.
    assert_eq!(server.container.denial_count(), 3);
    server.stop().await;
}

fn overreaching_tag(vendor: &FakeVendor, extra_url: &str, allow_private: bool) -> String {
    let outbound = if allow_private {
        loopback_outbound()
    } else {
        "[outbound]\nallow_http = [\"http://127.0.0.1:*\", \"http://localhost:*\"]\n".to_string()
    };
    extra_url_config(vendor, extra_url, &outbound, &format!("\"{0}/sink\", \"{0}/redirect\"", vendor.origin()))
}

/// The probe client plus a probe tag that also requests `extra_url`, under `outbound` (the
/// `[outbound]` section) with `grant` as its outbound grant entries.
fn extra_url_config(vendor: &FakeVendor, extra_url: &str, outbound: &str, grant: &str) -> String {
    format!(
        r#"{outbound}
[[client]]
name = "c"
wasm = "{client}"
params = {{ path = "/hit", label = "c" }}

[[tag]]
name = "t"
wasm = "{tag}"
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/sink", label = "t", extra_url = "{extra_url}" }}
grants = {{ event_data = ["*"], outbound = [{grant}] }}
"#,
        client = template("probe-client").display(),
        tag = template("probe-tag").display(),
        origin = vendor.origin(),
    )
}

async fn extra_result(vendor: &FakeVendor, config: &str) -> serde_json::Value {
    let server = TestServer::start(config).await;
    server.http.get(server.url("/hit")).send().await.expect("request");
    server.stop().await;
    vendor.received_at("/sink").first().map(|r| r.json()["extra_result"].clone()).expect("the tag reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_url_outside_the_grant_is_refused_and_never_sent() {
    let vendor = FakeVendor::start().await;
    let url = format!("{}/admin", vendor.origin());
    let result = extra_result(&vendor, &overreaching_tag(&vendor, &url, true)).await;
    let err = result["error"].as_str().expect("refused");
    assert!(err.contains("outbound request to") && err.contains("/admin") && err.contains("not granted"), "{err}");
    assert_eq!((result["permission"].as_str(), result["name"].as_str()), (Some("outbound"), Some(vendor.origin().as_str())), "{result}");
    assert!(vendor.received_at("/admin").is_empty(), "nothing reached the vendor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_host_outside_the_grant_is_refused() {
    let vendor = FakeVendor::start().await;
    let elsewhere = FakeVendor::start().await;
    // Same machine, but a host name and port the grant does not cover.
    let target = format!("http://localhost:{}/landing", elsewhere.addr.port());
    vendor.route("/redirect", 302, &[("location", &target)], "");
    let url = format!("{}/redirect", vendor.origin());
    let result = extra_result(&vendor, &overreaching_tag(&vendor, &url, true)).await;
    let err = result["error"].as_str().expect("refused");
    assert!(err.contains("localhost") && err.contains("not granted"), "{err}");
    assert_eq!(vendor.received_at("/redirect").len(), 1, "the first hop was allowed");
    assert!(elsewhere.received().is_empty(), "the redirect target never got the request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_the_operator_allows_them() {
    let vendor = FakeVendor::start().await;
    // The grant covers the URL, but 127.0.0.1 is loopback and allow_private is not set.
    let config = overreaching_tag(&vendor, "", false);
    let server = TestServer::start(&config).await;
    let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
    let outcome = trace.tag_run(0, "t").expect("ran").outcome.to_string();
    assert!(outcome.contains("private, loopback or link-local") && outcome.contains("allow_private"), "{outcome}");
    assert!(vendor.received().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_http_origin_is_exact_to_the_port() {
    // The grant covers the vendor, but `allow_http` names the host on another port: the
    // default port (or any other) never stands for "every port".
    let vendor = FakeVendor::start().await;
    let port = vendor.addr.port();
    for listed in ["http://127.0.0.1", "http://127.0.0.1:80", &format!("http://127.0.0.1:{}", port.wrapping_add(1))] {
        let outbound = format!("[outbound]\nallow_http = [\"{listed}\"]\nallow_private = [\"127.0.0.1/32\"]\n");
        let config = extra_url_config(&vendor, "", &outbound, &format!("\"{}/\"", vendor.origin()));
        let server = TestServer::start(&config).await;
        let (_, trace) = server.container.handle(request("GET", "/hit", b"")).await;
        let outcome = trace.tag_run(0, "t").expect("ran").outcome.to_string();
        assert!(outcome.contains("plain http to http://127.0.0.1:") && outcome.contains("allow_http"), "{listed}: {outcome}");
        server.stop().await;
    }
    assert!(vendor.received().is_empty(), "nothing reached the vendor's port");
    // Listing the exact port lets it through.
    let outbound = format!("[outbound]\nallow_http = [\"{}\"]\nallow_private = [\"127.0.0.1/32\"]\n", vendor.origin());
    let server = TestServer::start(&extra_url_config(&vendor, "", &outbound, &format!("\"{}/\"", vendor.origin()))).await;
    server.http.get(server.url("/hit")).send().await.expect("request");
    server.stop().await;
    assert_eq!(vendor.received_at("/sink").len(), 1);
}

fn collect_and_probe(vendor: &FakeVendor, tags: &[(&str, &str)]) -> String {
    let mut config = format!(
        "{}\n[[client]]\nname = \"collect\"\nwasm = \"{}\"\ngrants = {{ body = true }}\n",
        loopback_outbound(),
        template("json-collect-client").display()
    );
    for (name, extra) in tags {
        config.push_str(&format!(
            "\n[[tag]]\nname = \"{name}\"\nwasm = \"{wasm}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ sink = \"{origin}/sink\", label = \"{name}\", read_consent = true, count = true }}\ngrants = {{ event_data = [\"*\"], outbound = [\"{origin}/\"]{extra} }}\n",
            wasm = template("probe-tag").display(),
            origin = vendor.origin(),
        ));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_and_storage_are_readable_only_with_their_grants() {
    let vendor = FakeVendor::start().await;
    let config = collect_and_probe(&vendor, &[("granted", ", consent = true, storage = true"), ("ungranted", "")]);
    let server = TestServer::start(&config).await;
    for _ in 0..2 {
        let res = server
            .http
            .post(server.url("/collect"))
            .body(r#"{"event_name":"purchase","consent_state":{"ad_storage":"granted"}}"#)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
    }
    server.stop().await;
    let reports: Vec<serde_json::Value> = vendor.received_at("/sink").iter().map(|r| r.json()).collect();
    let of = |label: &str| reports.iter().filter(|r| r["label"] == label).cloned().collect::<Vec<_>>();

    let granted = of("granted");
    assert_eq!(granted[0]["consent_result"]["ok"], "Granted");
    // Storage persists across invocations of the same template instance...
    let mut counts: Vec<u64> = granted.iter().filter_map(|r| r["count_result"]["ok"].as_u64()).collect();
    counts.sort();
    assert_eq!(counts, [1, 2]);

    let ungranted = of("ungranted");
    assert_eq!(ungranted.len(), 2, "refusals are errors the template handles, not traps");
    let consent_err = ungranted[0]["consent_result"]["error"].as_str().expect("denied");
    assert!(consent_err.contains("the consent state is not granted"), "{consent_err}");
    let storage_err = ungranted[0]["count_result"]["error"].as_str().expect("denied");
    assert!(storage_err.contains("template storage is not granted"), "{storage_err}");
}

/// A tag whose `extra_url` hits `path` on the vendor, under a tight outbound policy.
fn limited_outbound(vendor: &FakeVendor, path: &str) -> String {
    let outbound = "[outbound]\nallow_http = [\"http://127.0.0.1:*\"]\nallow_private = [\"127.0.0.1/32\"]\ntimeout_ms = 300\nmax_response_bytes = 1024\n";
    let origin = vendor.origin();
    extra_url_config(vendor, &format!("{origin}{path}"), outbound, &format!("\"{origin}/\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_vendor_times_out_and_an_oversized_answer_is_refused() {
    let vendor = FakeVendor::start().await;
    // `/gated/...` is held by the fake until released: it never answers within 300 ms.
    let slow = extra_result(&vendor, &limited_outbound(&vendor, "/gated/slow")).await;
    assert_eq!(slow["error"], "timed out", "{slow}");
    vendor.release(1);

    let big = FakeVendor::start().await;
    big.route("/big", 200, &[], &"x".repeat(4096));
    let result = extra_result(&big, &limited_outbound(&big, "/big")).await;
    let err = result["error"].as_str().expect("refused");
    assert!(err.contains("larger than 1024 bytes") && err.contains("max_response_bytes"), "{err}");
}
