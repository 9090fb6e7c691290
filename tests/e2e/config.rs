//! What operators meet first: config mistakes caught at start with clear messages, `inspect`,
//! the bundled templates end to end, and the example container.

use serde_json::json;
use sluice::Container;
use sluice_tests::{FakeVendor, TestServer, loopback_outbound, parse_config, template};

fn load_error(text: &str) -> String {
    match parse_config(text).map_err(sluice::LoadError::from).and_then(|c| Container::load(&c)) {
        Ok(_) => panic!("config should not load:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn webhook(params: &str) -> String {
    format!(
        "[[client]]\nname = \"collect\"\nwasm = \"{}\"\n\n[[tag]]\nname = \"hook\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ {params} }}\n",
        template("json-collect-client").display(),
        template("webhook-tag").display()
    )
}

#[test]
fn config_mistakes_stop_the_host_at_start_naming_entry_and_fix() {
    let msg = load_error("[[client]]\nname = \"c\"\nwasm = \"/nonexistent/x.wasm\"\n");
    assert!(msg.contains("client \"c\"") && msg.contains("/nonexistent/x.wasm") && msg.contains("cargo xtask templates"), "{msg}");

    let msg = load_error(&format!("[[client]]\nname = \"c\"\nwasm = \"{}\"\n", template("webhook-tag").display()));
    assert!(msg.contains("client \"c\"") && msg.contains("is a tag template") && msg.contains("[[tag]]"), "{msg}");

    let msg = load_error(&webhook("urll = \"https://x.example/\""));
    assert!(msg.contains("tag \"hook\"") && msg.contains("\"urll\"") && msg.contains("it takes: url, token"), "{msg}");

    let msg = load_error(&webhook(""));
    assert!(msg.contains("parameter \"url\" is required"), "{msg}");

    // The bundled templates start with 4 MiB of linear memory; a smaller cap could never run them.
    let msg = load_error(&format!("[limits]\nmemory_mb = 2\n\n{}", webhook("url = \"https://x.example/\"")));
    assert!(msg.contains("client \"collect\"") && msg.contains("memory_mb = 2") && msg.contains("at least 4"), "{msg}");

    let msg = load_error(&webhook("url = \"https://x.example/\", token = \"written-in-clear\""));
    assert!(msg.contains("\"token\" is a secret") && msg.contains("${ENV_VAR}"), "{msg}");
    assert!(!msg.contains("written-in-clear"), "the secret itself is not echoed: {msg}");

    let msg = load_error(&format!("{}\nunknown_key = 1\n", webhook("url = \"https://x.example/\"")));
    assert!(msg.contains("container.toml") && msg.contains("unknown field `unknown_key`"), "{msg}");
}

#[test]
fn inspect_reads_the_declaration_without_running_the_template() {
    let bytes = std::fs::read(template("webhook-tag")).expect("built");
    let d = sluice::read_declaration(&template("webhook-tag"), &bytes).expect("has a manifest");
    assert_eq!((d.kind, d.name.as_str()), (sluice_manifest::Kind::Tag, "webhook"));
    assert_eq!(d.permissions.outbound, ["*"]);
    let token = d.parameter("token").expect("token parameter");
    assert!(token.secret && !token.required);
    assert!(sluice::read_declaration(std::path::Path::new("x.wasm"), b"\0asm\x01\0\0\0").unwrap_err().to_string().contains("x.wasm: has no Sluice manifest"));
    // `inspect` says which phases each bundled tag has, as its component declares them.
    let delivery = |name: &str| {
        let path = template(name);
        sluice::read_declaration(&path, &std::fs::read(&path).expect("built")).expect("manifest").delivery.to_string()
    };
    assert!(delivery("tiktok-events-tag").starts_with("the host queues each event (with its granted cookies); deliver takes up to 1000 items"));
    assert!(delivery("meta-capi-tag").starts_with("the host sets id cookies _fbp, _fbc in the visitor's request; the host queues each event"), "{}", delivery("meta-capi-tag"));
    assert!(delivery("webhook-tag").starts_with("the host queues each event"));
}

/// A vendor tag declares the host its `endpoint` names, not `"*"`: the default is declared
/// once, shown by `inspect`, and is exactly what an operator who keeps it must grant.
#[test]
fn a_vendor_tag_is_allowed_the_host_its_endpoint_names() {
    let meta = template("meta-capi-tag");
    let d = sluice::read_declaration(&meta, &std::fs::read(&meta).expect("built")).expect("manifest");
    assert_eq!(d.permissions.outbound, ["{endpoint}/"]);
    assert_eq!(d.parameter("endpoint").and_then(|p| p.default.clone()), Some("https://graph.facebook.com".into()));
    assert_eq!(d.parameter("set_cookies").and_then(|p| p.default.clone()), Some(true.into()), "a flag's default is a boolean");
    let defaults = d.resolved_permissions(|n| d.parameter(n).and_then(|p| p.default.as_ref()?.as_str().map(str::to_string))).expect("resolves");
    assert_eq!(defaults.outbound, ["https://graph.facebook.com/"]);

    let container = |params: &str, outbound: &str| {
        let text = format!(
            "[[client]]\nname = \"c\"\nwasm = \"{}\"\n\n[[tag]]\nname = \"meta\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\n\
             params = {{ pixel_id = \"1\", access_token = \"${{TEST_SECRET}}\"{params} }}\n\
             grants = {{ event_data = [\"*\"], cookies = [\"_fbp\", \"_fbc\"], response_cookies = [\"_fbp\", \"_fbc\"], outbound = [{outbound}], logging = true }}\n",
            template("json-collect-client").display(),
            meta.display()
        );
        Container::load(&parse_config(&text).expect("parses")).expect("loads")
    };
    let outbound_warnings = |c: &Container| c.warnings().into_iter().filter(|w| w.template == "meta" && w.message.contains("outbound")).count();
    // Keeping the default, granting Graph: nothing left out.
    assert_eq!(outbound_warnings(&container("", "\"https://graph.facebook.com/\"")), 0);
    // A regional endpoint the grant does not cover: said at start, with the grant to write.
    let regional = container(", endpoint = \"https://graph.eu.example\"", "\"https://graph.facebook.com/\"");
    let w = regional.warnings();
    assert!(w.iter().any(|w| w.message.contains("\"https://graph.eu.example/\"") && w.message.contains("outbound = [")), "{w:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_collect_client_and_webhook_deliver_with_the_secret_token() {
    let vendor = FakeVendor::start().await;
    let config = format!(
        r#"{outbound}
[[client]]
name = "collect"
wasm = "{client}"
grants = {{ body = true, request_headers = ["user-agent"], response_headers = ["content-type"] }}

[[tag]]
name = "hook"
wasm = "{tag}"
trigger = {{ events = ["purchase"] }}
params = {{ url = "{origin}/in", token = "${{TEST_SECRET}}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/in"], logging = true }}
"#,
        outbound = loopback_outbound(),
        client = template("json-collect-client").display(),
        tag = template("webhook-tag").display(),
        origin = vendor.origin(),
    );
    let server = TestServer::start(&config).await;
    let res = server
        .http
        .post(server.url("/collect"))
        .header("user-agent", "shop-backend/2.1")
        .body(r#"[{"event_name":"purchase","value":30,"currency":"EUR"},{"event_name":"page_view"}]"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let hits = vendor.wait_for("/in", 1).await;
    assert_eq!(hits.len(), 1, "the webhook was called once, from its outbox");
    assert_eq!(hits[0].headers["authorization"], "Bearer s3cr3t-value");
    assert_eq!(hits[0].headers["content-type"], "application/json");
    let mut events = hits[0].json();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "only the purchase triggers the webhook: {events}");
    let id = events[0].as_object_mut().and_then(|e| e.remove("x-sluice-event-id"));
    assert!(id.and_then(|id| id.as_str().map(str::len)) == Some(32), "each event carries its derived event id");
    assert_eq!(
        events[0],
        json!({"event_name":"purchase","value":30,"currency":"EUR","user_agent":"shop-backend/2.1"}),
        "no ip_override: the operator did not grant remote_address"
    );

    let bad = server.http.post(server.url("/collect")).body("{not json").send().await.expect("request");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("body").contains("not JSON"));
    assert_eq!(vendor.received_at("/in").len(), 1, "a malformed body reaches no tag");
    server.stop().await;
}

#[test]
fn the_example_container_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/container.toml");
    let mut config = sluice::ContainerConfig::load(&path).expect("example parses");
    assert_eq!(config.outbox_dir, path.with_file_name("container.toml.outbox"), "queues live beside the config by default");
    config.outbox_dir = sluice_tests::scratch_dir("example-outbox");
    // The example points at target/templates, where the tests' build put the same files.
    for t in config.clients.iter_mut().map(|c| &mut c.template).chain(config.tags.iter_mut().map(|t| &mut t.template)) {
        let file = t.wasm.file_name().expect("file name").to_owned();
        t.wasm = template(file.to_str().expect("utf-8").trim_end_matches(".wasm"));
    }
    Container::load(&config).expect("example loads");
}

/// `sluice check`'s warnings: what loads and would then fail on live traffic, one event at a
/// time, each said once at start with its fix.
#[test]
fn check_warns_about_what_loads_but_will_fail_on_live_traffic() {
    let hook = |name: &str, url: &str, grants: &str, trigger: &str| {
        format!(
            "[[tag]]\nname = \"{name}\"\nwasm = \"{}\"\nparams = {{ url = \"{url}\" }}\ngrants = {{ {grants} }}\ntrigger = {trigger}\n\n",
            template("webhook-tag").display()
        )
    };
    let client = format!(
        "[[client]]\nname = \"collect\"\nwasm = \"{}\"\ngrants = {{ body = true, remote_address = true, request_headers = [\"user-agent\"], response_headers = [\"content-type\"] }}\n\n",
        template("json-collect-client").display()
    );
    let config = [
        client,
        hook("granted-nothing-out", "https://hooks.example.com/in", "event_data = [\"*\"], logging = true", "{ events = [\"*\"] }"),
        hook("plain-http", "http://127.0.0.1:9/in", "event_data = [\"*\"], outbound = [\"http://127.0.0.1:9/\"], logging = true", "{ events = [\"*\"] }"),
        format!(
            "[[tag]]\nname = \"narrow\"\nwasm = \"{}\"\nparams = {{ sink = \"https://sink.example/\", label = \"n\" }}\n\
             grants = {{ event_data = [\"event_name\"], outbound = [\"https://sink.example/\"] }}\n\
             trigger = {{ events = [\"purchase\"], conditions = [{{ key = \"currency\", equals = \"EUR\" }}] }}\n\n",
            template("probe-tag").display()
        ),
        hook(
            "fine",
            "https://hooks.example.com/in",
            "event_data = [\"*\"], outbound = [\"https://hooks.example.com/\"], logging = true",
            "{ events = [\"*\"], conditions = [{ key = \"currency\", equals = \"EUR\" }] }",
        ),
    ]
    .concat();
    let container = Container::load(&parse_config(&config).expect("parses")).expect("it loads: these are warnings, not errors");
    let warnings = container.warnings();
    let of = |tag: &str| warnings.iter().filter(|w| w.template == tag).map(|w| w.message.as_str()).collect::<Vec<_>>();

    let none_out = of("granted-nothing-out");
    assert_eq!(none_out.len(), 1, "{warnings:#?}");
    assert!(none_out[0].contains(r#"declares outbound ["*"] and is granted none"#) && none_out[0].contains("outbound = ["), "{}", none_out[0]);

    let http = of("plain-http");
    assert_eq!(http.len(), 1, "{warnings:#?}");
    assert!(http[0].contains("\"http://127.0.0.1:9/\" will be refused") && http[0].contains("allow_http"), "{}", http[0]);

    let narrow = of("narrow");
    assert!(narrow.iter().any(|m| m.contains("trigger tests \"currency\"") && m.contains("event_data")), "{narrow:?}");
    assert!(narrow.iter().any(|m| m.contains("declares `query`")), "the probe declares more than it is given: {narrow:?}");

    assert!(of("fine").is_empty() && of("collect").is_empty(), "templates granted what they declare, reachable, are not warned about: {warnings:#?}");

    // With the rules that let it through, the http grant is fine.
    let allowed = format!("[outbound]\nallow_http = [\"http://127.0.0.1:9\"]\nallow_private = [\"127.0.0.1/32\"]\n\n{config}");
    let container = Container::load(&parse_config(&allowed).expect("parses")).expect("loads");
    assert!(!container.warnings().iter().any(|w| w.message.contains("will be refused")), "{:#?}", container.warnings());
}
