//! Operating a container: the admin listener (its token, its routes, never on the public
//! address), `/metrics` scraped after real traffic, the preview's record of a hit's whole
//! path, reloads under load, and the preview UI in a real browser.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{FakeVendor, loopback_outbound, scratch_dir, template};

use crate::delivery::spawn_server;

// Registered with the process-wide masker like every secret: no piece of it may appear in other
// tests' expected output (a run of digits would mask their ids).
const TOKEN: &str = "admin-token-for-the-e2e-tests-qwzx";

/// GA4 client; `ads` (a probe tag needing ad consent, trying a header it is not granted);
/// `checkout` (a webhook whose trigger wants a checkout page); `webhook` (every event,
/// batched, with a secret bearer token).
fn config(vendor: &FakeVendor, outbox: &std::path::Path, hook_path: &str, preview: &str) -> String {
    format!(
        r#"{outbound}
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
{preview}

[consent]
audit = "off"

[outbox]
dir = "{outbox}"
commit_ms = 2

[[client]]
name = "ga4"
wasm = "{ga4}"
grants = {{ query = true, body = true, remote_address = true, request_headers = ["user-agent"] }}

[[tag]]
name = "ads"
wasm = "{probe}"
trigger = {{ events = ["*"] }}
consent = ["ad_storage", "ad_user_data"]
params = {{ sink = "{origin}/sink", label = "ads", read_header = "cookie" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}

[[tag]]
name = "checkout"
wasm = "{webhook}"
trigger = {{ events = ["*"], conditions = [{{ key = "page_location", contains = "/checkout" }}] }}
params = {{ url = "{origin}/checkout" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}

[[tag]]
name = "webhook"
wasm = "{webhook}"
trigger = {{ events = ["*"] }}
params = {{ url = "{origin}{hook_path}", token = "${{TEST_SECRET}}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}
delivery = {{ max_wait_ms = 20 }}
"#,
        outbound = loopback_outbound(),
        outbox = outbox.display(),
        ga4 = template("ga4-client").display(),
        probe = template("probe-tag").display(),
        webhook = template("webhook-tag").display(),
        origin = vendor.origin(),
    )
}

/// The server and its admin listener, in this process.
struct Served {
    public: String,
    admin: String,
    http: reqwest::Client,
    live: Arc<sluice::Live>,
    token: String,
}

async fn serve(text: &str) -> Served {
    let dir = scratch_dir("admin");
    let path = dir.join("container.toml");
    std::fs::write(&path, text).expect("write the config");
    let config = sluice::ContainerConfig::parse(text, &path, &|name| (name == "TEST_SECRET").then(|| "s3cr3t-value".to_string())).expect("config");
    serve_config(config, TOKEN).await
}

async fn serve_config(config: sluice::ContainerConfig, token: &str) -> Served {
    let admin = config.admin.clone().expect("the config has [admin]");
    let live = sluice::Live::load(config).expect("load");
    let admin_listener = tokio::net::TcpListener::bind(admin.listen).await.expect("bind admin");
    let admin_addr = admin_listener.local_addr().expect("addr");
    tokio::spawn(sluice::server::serve_admin(live.clone(), admin_listener, std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let public = listener.local_addr().expect("addr");
    tokio::spawn(sluice::server::serve_live(live.clone(), listener, std::future::pending()));
    Served { public: format!("http://{public}"), admin: format!("http://{admin_addr}"), http: reqwest::Client::new(), live, token: token.to_string() }
}

impl Served {
    async fn hit(&self, query: &str, headers: &[(&str, &str)]) -> u16 {
        let mut request = self.http.post(format!("{}/g/collect?v=2&tid=G-TEST&cid=1.2&{query}", self.public));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("hit").status().as_u16()
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let response = self.http.request(method, format!("{}{path}", self.admin)).bearer_auth(&self.token).send().await.expect("admin request");
        (response.status().as_u16(), response.text().await.expect("body"))
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let (status, text) = self.admin(reqwest::Method::GET, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        samples(&text)
    }
}

/// `name{labels} value` lines of a scrape, by `name{labels}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Consent Mode v2 as gtag.js sends it: `gcs` for ad and analytics storage, `gcd` for all four
/// (ad_user_data among them), granted (`r`) or denied (`p`).
const GRANTED: &str = "en=page_view&gcs=G111&gcd=13r3r3r2r5l1&dl=https%3A%2F%2Fshop.example%2F";
const DENIED: &str = "en=page_view&gcs=G100&gcd=13p3p3p2p5l1&dl=https%3A%2F%2Fshop.example%2F";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_wants_its_token_and_is_never_on_the_public_address() {
    let vendor = FakeVendor::start().await;
    let served = serve(&config(&vendor, &scratch_dir("outbox"), "/hook", "")).await;
    let get = |url: String, auth: Option<&'static str>| {
        let mut request = served.http.get(url);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    for auth in [None, Some("Bearer wrong-token-for-the-e2e-tests-qw"), Some(TOKEN)] {
        let response = get(format!("{}/metrics", served.admin), auth).await.expect("scrape");
        assert_eq!(response.status(), 401, "{auth:?}: without `Bearer <token>` nothing is served");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    let page = get(format!("{}/", served.admin), None).await.expect("page");
    assert_eq!(page.status(), 200, "the UI's page holds no data and loads without the token");
    assert!(page.text().await.unwrap().contains("Sluice preview"));
    // The public listener has no admin route: /metrics there is a request no client claims.
    let public = get(format!("{}/metrics", served.public), Some("Bearer admin-token-for-the-e2e-tests-qwzx")).await.expect("public");
    assert_eq!(public.status(), 400);
    assert!(!public.text().await.unwrap().contains("sluice_"), "no metric on the public address");
    let public_api = get(format!("{}/api/requests", served.public), None).await.expect("public");
    assert_eq!(public_api.status(), 400);
    assert_eq!(served.admin(reqwest::Method::GET, "/api/requests?after=yesterday").await.0, 400, "a malformed query is a 400");
    assert_eq!(served.admin(reqwest::Method::GET, "/api/requests/no-such-id").await.0, 404);
    assert_eq!(served.admin(reqwest::Method::GET, "/api/nothing-here").await.0, 404);
    assert_eq!(served.admin(reqwest::Method::GET, "/api/reload").await.0, 405, "reload is a POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_real_traffic_did() {
    let vendor = FakeVendor::start().await;
    let served = serve(&config(&vendor, &scratch_dir("outbox"), "/hook", "")).await;
    for _ in 0..3 {
        assert_eq!(served.hit(GRANTED, &[]).await, 204);
    }
    for _ in 0..2 {
        assert_eq!(served.hit(DENIED, &[]).await, 204);
    }
    assert_eq!(served.http.get(format!("{}/nothing", served.public)).send().await.unwrap().status(), 400);
    vendor.wait_for("/hook", 1).await;
    let m = wait_for("the webhook's five events delivered", async || {
        let m = served.metrics().await;
        let delivered = m.get(r#"sluice_outbox_delivered_total{tag="webhook"}"#);
        (delivered == Some(&5.0)).then_some(m)
    })
    .await;
    let expected = [
        (r#"sluice_requests_total{client="ga4",status="204"}"#, 5.0),
        (r#"sluice_requests_total{client="none",status="400"}"#, 1.0),
        (r#"sluice_events_total{client="ga4"}"#, 5.0),
        (r#"sluice_tag_runs_total{tag="ads",outcome="ok"}"#, 3.0),
        (r#"sluice_tag_runs_total{tag="ads",outcome="blocked_by_consent"}"#, 2.0),
        (r#"sluice_tag_runs_total{tag="webhook",outcome="queued"}"#, 5.0),
        (r#"sluice_consent_decisions_total{purpose="ad_storage",decision="granted"}"#, 3.0),
        (r#"sluice_consent_decisions_total{purpose="ad_storage",decision="denied"}"#, 2.0),
        (r#"sluice_consent_decisions_total{purpose="ad_user_data",decision="denied"}"#, 2.0),
        // `ads` asks for the cookie header, which it is not granted, on each of its 3 runs.
        (r#"sluice_permission_denials_total{template="ads"}"#, 3.0),
        (r#"sluice_outbound_requests_total{template="ads",status="200"}"#, 3.0),
        // The client runs on the unclaimed request too (and passes).
        (r#"sluice_invocation_duration_seconds_count{template="ga4",export="run",phase="instantiate"}"#, 6.0),
        (r#"sluice_invocation_duration_seconds_count{template="ads",export="fire",phase="call"}"#, 3.0),
        (r#"sluice_outbox_queued_total{tag="webhook"}"#, 5.0),
        (r#"sluice_outbox_pending_items{tag="webhook"}"#, 0.0),
        (r#"sluice_outbox_dead_letters{tag="webhook"}"#, 0.0),
    ];
    for (key, value) in expected {
        assert_eq!(m.get(key), Some(&value), "{key} (scrape: {:?})", m.keys().filter(|k| k.starts_with(key.split('{').next().unwrap())).collect::<Vec<_>>());
    }
    assert!(m.keys().all(|k| !k.contains("checkout") || !k.starts_with("sluice_tag_runs")), "a tag whose trigger did not match did not run");
    let webhook_posts = m.iter().filter(|(k, _)| k.starts_with(r#"sluice_outbound_requests_total{template="webhook""#)).map(|(_, v)| v).sum::<f64>();
    assert!(webhook_posts >= 1.0, "the batches the webhook sent are counted");
    let (_, text) = served.admin(reqwest::Method::GET, "/metrics").await;
    assert!(text.contains("# TYPE sluice_requests counter"), "{text}");
    assert!(text.contains("# UNIT sluice_invocation_duration_seconds seconds"), "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_records_a_debug_sessions_hit_with_its_whole_path() {
    let vendor = FakeVendor::start().await;
    let served = serve(&config(&vendor, &scratch_dir("outbox"), "/hook", "")).await;
    assert_eq!(served.hit(GRANTED, &[]).await, 204);
    let (status, session) = served.admin(reqwest::Method::POST, "/api/sessions").await;
    assert_eq!(status, 201);
    let session: Value = serde_json::from_str(&session).unwrap();
    let token = session["token"].as_str().unwrap().to_string();
    assert_eq!(served.hit(DENIED, &[("x-sluice-preview", &token), ("cookie", "_fbp=fb.1.123.456")]).await, 204);
    assert_eq!(served.hit(GRANTED, &[("cookie", &format!("sluice_preview={token}"))]).await, 204);
    assert_eq!(served.hit(GRANTED, &[("x-sluice-preview", "not-a-session-token")]).await, 204);

    let (_, list) = served.admin(reqwest::Method::GET, "/api/requests").await;
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), 2, "only the two hits carrying the session's token: {list:?}");
    let (granted_id, denied_id) = (list[0]["id"].as_str().unwrap(), list[1]["id"].as_str().unwrap());

    let denied = recorded(&served, denied_id, &token).await;
    assert_eq!(denied["clients"][0]["client"], "ga4");
    assert_eq!(denied["clients"][0]["claimed"], true);
    assert!(denied["headers"].as_array().unwrap().iter().any(|h| h[0] == "cookie" && h[1] == "_fbp=(masked)"));
    let event = &denied["events"][0];
    assert_eq!(event["name"], "page_view");
    assert_eq!(event["consent"]["ad_storage"]["status"], "denied");
    assert_eq!(event["consent"]["ad_storage"]["source"], "gcd", "the first source that says something: {}", event["consent"]);
    assert_eq!(event["personal_data_removed"], true);
    let tag = |event: &Value, name: &str| event["tags"].as_array().unwrap().iter().find(|t| t["tag"] == name).cloned().unwrap_or_else(|| panic!("{name} in {event}"));
    let ads = tag(event, "ads");
    assert_eq!(ads["state"], "blocked");
    assert!(ads["reason"].as_str().unwrap().contains("ad_storage, ad_user_data not granted"), "{ads}");
    let checkout = tag(event, "checkout");
    assert_eq!(checkout["state"], "not_fired");
    assert_eq!(checkout["reason"], r#"condition failed: page_location contains "/checkout" (the event has "https://shop.example/")"#);
    assert_eq!(tag(event, "webhook")["state"], "queued");

    let granted = recorded(&served, granted_id, &token).await;
    let ads = tag(&granted["events"][0], "ads");
    assert_eq!(ads["state"], "fired");
    assert!(ads["denials"][0].as_str().unwrap().contains("cookie"), "the refused header read: {ads}");
    let exchange = granted["exchanges"].as_array().unwrap().iter().find(|x| x["template"] == "ads").cloned().expect("ads' request");
    assert_eq!((exchange["method"].as_str(), exchange["status"].as_u64()), (Some("POST"), Some(200)));
    assert!(exchange["url"].as_str().unwrap().ends_with("/sink"));
    // The webhook's event is delivered after the request, and its batch's exchange shows under it.
    let delivered = wait_for("the webhook item delivered", async || {
        let view = recorded(&served, granted_id, &token).await;
        let webhook = tag(&view["events"][0], "webhook");
        (webhook["delivery"][0]["state"] == "delivered").then_some(webhook)
    })
    .await;
    let batch = &delivered["delivery"][0]["exchanges"][0];
    assert_eq!(batch["status"], 200);
    assert!(batch["request_headers"].as_array().unwrap().iter().any(|h| h[0] == "authorization" && h[1] == "(masked)"), "{batch}");
}

/// One recorded request as the UI gets it; no secret, cookie value or session token in it.
async fn recorded(served: &Served, id: &str, session: &str) -> Value {
    let (status, body) = served.admin(reqwest::Method::GET, &format!("/api/requests/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("s3cr3t-value") && !body.contains("fb.1.123.456") && !body.contains(session), "no secret, cookie value or session token in the view: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request_and_a_bad_config_changes_nothing() {
    let vendor = FakeVendor::start().await;
    let dir = scratch_dir("reload");
    let path = dir.join("container.toml");
    let outbox = dir.join("outbox");
    // The child reads `${TEST_SECRET}` from its environment (spawn_server sets it).
    let good = |n: usize| config(&vendor, &outbox, &format!("/hook/v{n}"), "");
    std::fs::write(&path, good(0)).unwrap();
    let (child, public) = spawn_server(&path).await;
    let admin = format!("http://127.0.0.1:{}", std::fs::read_to_string(format!("{}.admin-port", path.display())).unwrap().trim());

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    // Two senders back to back: a request is always in flight, and the test machine keeps a
    // core for the other tests running beside this one.
    for worker in 0..2 {
        let (stop, sent, failed, public) = (stop.clone(), sent.clone(), failed.clone(), public.clone());
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let url = format!("{public}/g/collect?v=2&tid=G-TEST&cid=1.2&en=page_view&gcs=G111&gcd=13r3r3r2r5l1&ep.event_id=w{worker}-{n}&dl=https%3A%2F%2Fshop.example%2F");
                let answer = match http.post(url).send().await {
                    Ok(r) if r.status() == 204 => None,
                    Ok(r) => Some(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Some(format!("{e:?}")),
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if let Some(why) = answer {
                    eprintln!("request failed during the reloads: {why}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let http = reqwest::Client::new();
    let reload = async || {
        let r = http.post(format!("{admin}/api/reload")).bearer_auth(TOKEN).send().await.expect("reload");
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // A signal is not answered: wait until the reload it started is counted, so the next round
    // does not rewrite the file under it.
    let reloads = async || {
        let m = samples(&http.get(format!("{admin}/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap());
        m.iter().filter(|(k, _)| k.starts_with("sluice_reloads_total")).map(|(_, v)| *v).sum::<f64>()
    };
    let sighup = async || {
        let before = reloads().await;
        assert!(std::process::Command::new("kill").args(["-HUP", &child.pid().to_string()]).status().unwrap().success());
        wait_for("the SIGHUP's reload", async || (reloads().await > before).then_some(())).await;
    };
    // As an operator's deploy tool does: the new file replaces the old one whole.
    let write = |text: String| {
        let next = dir.join("container.toml.next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &path).unwrap();
    };
    let mut last = 0;
    for round in 1..=6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if round % 2 == 1 {
            // A template that does not exist: the running container keeps serving.
            write(good(round).replace(&template("webhook-tag").display().to_string(), "/nowhere/webhook-tag.wasm"));
            if round == 3 {
                sighup().await;
            } else {
                let (status, message) = reload().await;
                assert_eq!(status, 422, "{message}");
                assert!(message.contains("tag \"checkout\"") && message.contains("/nowhere/webhook-tag.wasm") && message.contains("keeps serving"), "names the entry, the file and what happened: {message}");
            }
        } else {
            write(good(round));
            last = round;
            if round == 4 {
                sighup().await;
            } else {
                let (status, message) = reload().await;
                assert_eq!(status, 200, "{message}");
                let reloaded: Value = serde_json::from_str(&message).unwrap();
                assert_eq!((reloaded["templates"].as_u64(), reloaded["compiled"].as_u64()), (Some(4), Some(0)), "unchanged files are not compiled again: {message}");
            }
        }
    }
    // The last good config (a new webhook path) is the one serving now.
    vendor.wait_for(&format!("/hook/v{last}"), 1).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let scrape = http.get(format!("{admin}/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let m = samples(&scrape);
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reload test: {sent} requests across 6 reloads (3 good, 3 bad), {failed} failed");
    assert!(sent > 100, "the load ran across the reloads: {sent}");
    assert_eq!(failed, 0, "no request failed across the reloads");
    assert_eq!(m.get(r#"sluice_reloads_total{result="ok"}"#), Some(&3.0), "{:?}", scrape.lines().filter(|l| l.contains("reload")).collect::<Vec<_>>());
    assert_eq!(m.get(r#"sluice_reloads_total{result="failed"}"#), Some(&3.0));
    assert_eq!(m.get(r#"sluice_requests_total{client="ga4",status="204"}"#), Some(&(sent as f64)), "counters carry on across reloads");
    // Every event queued under any of the containers reaches the vendor.
    wait_for("every event delivered", async || {
        let m = samples(&http.get(format!("{admin}/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap());
        (m.get(r#"sluice_outbox_delivered_total{tag="webhook"}"#).copied() == Some(sent as f64)).then_some(())
    })
    .await;
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_ui_works_in_a_real_browser() {
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/ui` (and `apt-get install -y chromium`), as .ci/run does"
    );
    let vendor = FakeVendor::start().await;
    let served = serve(&config(&vendor, &scratch_dir("outbox"), "/hook", "")).await;
    let screenshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-preview.png");
    let args = [format!("{}/#token={TOKEN}", served.admin), served.public.clone(), screenshot.display().to_string()];
    // Blocking: the server runs on this test's runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("node").arg(ui.join("preview.mjs")).args(args).output())
        .await
        .unwrap()
        .expect("node runs (Node.js 18 or later)");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(output.status.success(), "the browser session failed:\n{}\n{}", text(&output.stdout), text(&output.stderr));
    eprintln!("{}", text(&output.stdout).trim());
    drop(served.live);
}

/// The README's first run: the example container, as shipped, shows a newcomer's first hit end to
/// end in the preview, its webhook delivery recorded (not sent) with what it would have sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_container_shows_a_first_hit_end_to_end() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/container.toml");
    let mut config = sluice::ContainerConfig::load(&path).expect("example parses");
    config.outbox_dir = scratch_dir("example-outbox");
    for t in config.clients.iter_mut().map(|c| &mut c.template).chain(config.tags.iter_mut().map(|t| &mut t.template)) {
        let file = t.wasm.file_name().expect("file name").to_string_lossy().into_owned();
        t.wasm = template(file.trim_end_matches(".wasm"));
    }
    let admin = config.admin.as_mut().expect("the example turns the admin listener on");
    assert!(admin.listen.ip().is_loopback(), "on loopback only");
    admin.listen = "127.0.0.1:0".parse().unwrap();
    // The token is made at start and printed with the UI's address; take it from there.
    let url = admin.ui_url(admin.listen);
    let token = url.split("#token=").nth(1).expect("the URL carries the token").to_string();
    let served = serve_config(config, &token).await;
    let hit = served.http.post(format!("{}/collect", served.public)).body(r#"{"event_name":"purchase","value":30,"currency":"EUR"}"#).send().await.unwrap();
    assert!(hit.status().is_success(), "{}", hit.status());
    let id = wait_for("the hit in the preview", async || {
        let (_, list) = served.admin(reqwest::Method::GET, "/api/requests").await;
        let list: Vec<Value> = serde_json::from_str(&list).unwrap();
        list.first().map(|r| r["id"].as_str().unwrap().to_string())
    })
    .await;
    let webhook = wait_for("the webhook's delivery recorded", async || {
        let (_, view) = served.admin(reqwest::Method::GET, &format!("/api/requests/{id}")).await;
        let view: Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["claimed_by"], "collect");
        let webhook = view["events"][0]["tags"].as_array().unwrap().iter().find(|t| t["tag"] == "webhook").cloned().unwrap();
        (webhook["delivery"][0]["state"] == "delivered").then_some(webhook)
    })
    .await;
    let exchange = &webhook["delivery"][0]["exchanges"][0];
    assert_eq!(exchange["recorded_only"], true, "nothing left the machine: {exchange}");
    assert_eq!(exchange["url"], "https://hooks.example.com/sluice");
    assert!(exchange["request_body"].as_str().unwrap().contains(r#""event_name":"purchase""#), "{exchange}");
}
