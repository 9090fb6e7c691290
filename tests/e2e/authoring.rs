//! A template made outside this repository, as a third party makes one: `sluice new`, its own
//! mock-host test, `sluice build`, read as the host reads it, and served by the real host to a
//! fake vendor. Then the mistakes the build used to hide, each with the fix in its message.
//!
//! The crate depends on this checkout's `sdk/` by path (as the README says for today) and gets
//! this workspace's `Cargo.lock`, so it builds the versions CI already has. Its build shares a
//! target directory under `target/` across runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice::authoring::{self, SdkSource, TemplateKind};
use sluice_tests::{FakeVendor, TestServer, loopback_outbound, scratch_dir, template};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// `cargo ARGS` in the crate, its output captured (the outer test's cargo variables removed, so
/// the crate builds as its author's shell would build it).
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
            command.env_remove(key);
        }
    }
    command.output().expect("run cargo")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Rewrites the SDK dependency's `features = …` in the crate's Cargo.toml.
fn set_sdk_features(root: &Path, from: &str, to: &str) {
    let path = root.join("Cargo.toml");
    let cargo_toml = std::fs::read_to_string(&path).expect("Cargo.toml");
    let changed = cargo_toml.replace(&format!("features = {from}"), &format!("features = {to}"));
    assert_ne!(changed, cargo_toml, "Cargo.toml has features = {from}");
    std::fs::write(&path, changed).expect("write Cargo.toml");
}

#[test]
fn a_tag_made_with_sluice_new_outside_the_repository_tests_builds_loads_and_delivers() {
    let root = authoring::create(TemplateKind::Tag, "demo-tag", &scratch_dir("authoring"), &SdkSource::Path(repo().join("sdk")))
        .expect("sluice new tag demo-tag");
    std::fs::copy(repo().join("Cargo.lock"), root.join("Cargo.lock")).expect("copy the lock file");
    // A shared build directory, so CI compiles the crate's dependencies once per run.
    let target = repo().join("target").join("authoring-e2e");
    let cargo_config = root.join(".cargo/config.toml");
    let made = std::fs::read_to_string(&cargo_config).expect("sluice new writes .cargo/config.toml");
    std::fs::write(&cargo_config, format!("{made}\n[build]\ntarget-dir = {:?}\n", target.display().to_string())).expect("config");

    // The example test passes against the mock host.
    let tested = cargo(&root, &["test"]);
    assert!(tested.status.success() && text(&tested).contains("posts_the_event_name ... ok"), "{}", text(&tested));

    // `sluice build`: the component, with its manifest, where it says.
    let wasm = authoring::build(&root).unwrap_or_else(|e| panic!("sluice build: {e}"));
    let declared = sluice::read_declaration(&wasm, &std::fs::read(&wasm).expect("read the wasm")).expect("loads as a template");
    assert_eq!((declared.name.as_str(), declared.kind.to_string().as_str()), ("demo-tag", "tag"));

    // Served by the real host, behind the bundled JSON client, to a fake vendor.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let vendor = FakeVendor::start().await;
        let config = format!(
            "{}\n[[client]]\nname = \"json\"\nwasm = \"{}\"\ngrants = {{ body = true, remote_address = true, request_headers = [\"user-agent\"], response_headers = [\"content-type\"] }}\n\n\
             [[tag]]\nname = \"demo\"\nwasm = \"{}\"\nparams = {{ endpoint = \"{}/hook\" }}\n\
             grants = {{ event_data = [\"event_name\"], outbound = [\"{}/\"] }}\ntrigger = {{ events = [\"*\"] }}\n",
            loopback_outbound(),
            template("json-collect-client").display(),
            wasm.display(),
            vendor.origin(),
            vendor.origin()
        );
        let server = TestServer::start(&config).await;
        let answer = server.http.post(server.url("/collect")).body(r#"{"event_name":"purchase","value":30}"#).send().await.expect("post");
        assert_eq!(answer.status(), 200);
        let got = vendor.wait_for("/hook", 1).await;
        assert_eq!(got[0].json(), serde_json::json!({ "event": "purchase" }), "only the granted key, as the template sends it");
        server.stop().await;
    });

    // The export macro and the SDK's feature disagree: the compiler says which feature to set.
    let wasm_build = ["build", "--release", "--target", authoring::TARGET];
    set_sdk_features(&root, r#"["tag"]"#, r#"["client"]"#);
    let wrong = cargo(&root, &wasm_build);
    assert!(!wrong.status.success() && text(&wrong).contains("export_tag! needs sluice-sdk's `tag` feature"), "{}", text(&wrong));
    // No feature at all, in a plain `cargo build` (`sluice build` refuses it before cargo runs).
    set_sdk_features(&root, r#"["client"]"#, "[]");
    let none = cargo(&root, &wasm_build);
    assert!(!none.status.success() && text(&none).contains("sluice-sdk needs the `client` or the `tag` feature"), "{}", text(&none));
    let refused = authoring::build(&root).expect_err("sluice build checks the features first").to_string();
    assert!(refused.contains("features = [\"tag\"]"), "{refused}");
}

/// `sluice::testing::TagTest`: an author's test of the built component in the real engine,
/// against a scripted vendor — here the bundled Meta tag (fire, then a batch from `deliver`)
/// and the webhook (no fire) against a vendor that refuses everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_tag_runs_in_the_real_engine_against_a_scripted_vendor() {
    use sluice::testing::TagTest;
    let purchase = serde_json::json!({ "event_name": "purchase", "event_id": "T-1", "value": 30, "currency": "EUR",
                                       "ip_override": "203.0.113.9", "user_agent": "UA/1", "user_data": { "email_address": "jane@example.com" } });
    let run = TagTest::new(template("meta-capi-tag"))
        .param("pixel_id", "42")
        .secret_param("access_token", "tok-secret-123")
        .param("endpoint", "{vendor}")
        .answer(200, r#"{"events_received":1}"#)
        .run(purchase.clone())
        .await
        .expect("loads");
    assert!(run.outcome.is_ok() && run.denials.is_empty(), "{} {:?}", run.outcome, run.denials);
    assert_eq!((run.sent.len(), run.still_pending, run.dead_letters.len()), (1, 0, 0), "one batch delivered: {run:?}");
    let sent = &run.sent[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v25.0/42/events"));
    assert_eq!(sent.json()["data"][0]["event_name"], "Purchase");
    assert_eq!(sent.json()["data"][0]["event_id"], "T-1");

    let refused = TagTest::new(template("webhook-tag"))
        .param("url", "{vendor}/in")
        .answer(400, "no")
        .run(purchase)
        .await
        .expect("loads");
    assert_eq!(refused.outcome, sluice::Outcome::Queued);
    assert_eq!(refused.dead_letters.len(), 1, "{refused:?}");
    assert_eq!(refused.dead_letters[0].id, "T-1");
    assert!(refused.sent.iter().all(|r| r.path == "/in") && !refused.sent.is_empty());
}
