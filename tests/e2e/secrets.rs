//! No secret reaches any output, whole or in part: secrets in URL paths (a Slack-style
//! webhook whose path is the credential), queries (Meta's access token), headers (a bearer
//! token), composed strings and table parameters; vendors that refuse, fail, time out, are
//! unreachable, redirect to another origin, and echo the request back plain and encoded. Then
//! everything the process wrote — the logs in both formats, the traces, the consent audit, the
//! errors — is scanned for any secret or any 8-character piece of one.

use std::sync::Arc;

use sluice::output::LogFormat;
use sluice_tests::{Capture, FakeVendor, Received, corpus_hit_query, hit_request, loopback_outbound, scratch_dir, template};


const HOOK_PATH: &str = "/services/T0SEKRIT1/B0SEKRIT2/XyZsecretPathToken1234";
const HOOK_TOKEN: &str = "tok-Zq8Wv3Lm9Rt2";
const META_TOKEN: &str = "EAAmetaSecretTok99";
const PROBE_SECRET: &str = "prb:Sec/ret+Val=ue";
const TABLE_SECRET: &str = "tbl-NestedSecret77";
const SHORT_SECRET: &str = "k9!";

fn env(origin: &str, closed: u16) -> impl Fn(&str) -> Option<String> {
    let origin = origin.to_string();
    move |name: &str| match name {
        "HOOK_URL" => Some(format!("{origin}{HOOK_PATH}")),
        "HOOK_TOKEN" => Some(HOOK_TOKEN.into()),
        "REDIRECT_URL" => Some(format!("{origin}/redirect/{HOOK_TOKEN}")),
        "META_TOKEN" => Some(META_TOKEN.into()),
        "PROBE_SECRET" => Some(PROBE_SECRET.into()),
        "TABLE_SECRET" => Some(TABLE_SECRET.into()),
        "SHORT_SECRET" => Some(SHORT_SECRET.into()),
        "DEAD_URL" => Some(format!("http://127.0.0.1:{closed}/dead/{PROBE_SECRET}")),
        _ => None,
    }
}

fn config(origin: &str, other: &str, audit: &std::path::Path) -> String {
    format!(
        r#"{outbound}timeout_ms = 500

[outbox]
drain_ms = 300

[consent]
unset = "grant"
audit = "{audit}"

{client}

[[tag]]
name = "slack"
wasm = "{webhook}"
trigger = {{ events = ["*"] }}
params = {{ url = "${{HOOK_URL}}", token = "${{HOOK_TOKEN}}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}

[[tag]]
name = "redirected"
wasm = "{webhook}"
trigger = {{ events = ["*"] }}
params = {{ url = "${{REDIRECT_URL}}", token = "${{HOOK_TOKEN}}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/", "{other}/"] }}

[[tag]]
name = "meta"
wasm = "{meta}"
trigger = {{ events = ["*"] }}
params = {{ pixel_id = "1234567890", access_token = "${{META_TOKEN}}", endpoint = "{origin}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"], logging = true }}

[[tag]]
name = "probe"
wasm = "{probe}"
trigger = {{ events = ["*"] }}
params = {{ sink = "{origin}/echo", label = "p", secret = "${{PROBE_SECRET}}", extra_url = "${{DEAD_URL}}", log = ["composed: Bearer ${{PROBE_SECRET}}", "short ${{SHORT_SECRET}} one"], settings = {{ nested = {{ key = "${{TABLE_SECRET}}" }} }} }}
grants = {{ event_data = ["*"], outbound = ["*"], logging = true }}
"#,
        outbound = loopback_outbound(),
        audit = audit.display(),
        client = sluice_tests::ga4_client_entry(),
        webhook = template("webhook-tag").display(),
        meta = template("meta-capi-tag").display(),
        probe = template("probe-tag").display(),
    )
}

/// Every secret, and the pieces the scan looks for.
fn secrets(origin: &str) -> Vec<String> {
    vec![format!("{origin}{HOOK_PATH}"), HOOK_TOKEN.into(), META_TOKEN.into(), PROBE_SECRET.into(), TABLE_SECRET.into()]
}

fn leaks(text: &str, secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(8) {
            let piece: String = window.iter().collect();
            if text.contains(&piece) && !found.contains(&piece) {
                found.push(piece);
            }
        }
    }
    found
}

/// A vendor that refuses, fails, hangs or echoes what it got, in several encodings.
async fn hostile_vendor(other: &FakeVendor) -> FakeVendor {
    let vendor = FakeVendor::start().await;
    vendor.judge(
        "/services/",
        Arc::new(|r: &Received| {
            let auth = r.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let encoded: String = form_urlencoded::byte_serialize(r.path.as_bytes()).collect();
            (403, format!("invalid_token: {} ({auth}) url-encoded {encoded} json {}", r.path, serde_json::json!(r.path)))
        }),
    );
    vendor.judge(
        "/v",
        Arc::new(|r: &Received| (500, format!(r#"{{"error":{{"message":"upstream failed for {}"}}}}"#, r.query))),
    );
    vendor.judge(
        "/echo",
        Arc::new(|r: &Received| (502, format!("echo: {}", String::from_utf8_lossy(&r.body)))),
    );
    vendor.route("/redirect/", 302, &[("location", &format!("{}/landed", other.origin()))], "");
    vendor
}

async fn run_once(format: LogFormat) -> (String, String, String, FakeVendor, FakeVendor) {
    let other = FakeVendor::start().await;
    let vendor = hostile_vendor(&other).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("sluice-secrets-{}-{format:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let text = config(&vendor.origin(), &other.origin(), &audit);
    let parsed = sluice::ContainerConfig::parse(&text, std::path::Path::new("/test/container.toml"), &env(&vendor.origin(), closed))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut parsed = parsed;
    parsed.outbox_dir = scratch_dir("secrets-outbox");

    let (logs, _guard) = Capture::start(format, "trace");
    let container = Arc::new(sluice::Container::load(&parsed).unwrap_or_else(|e| panic!("{e}")));
    let (_, trace) = container.handle(hit_request(&corpus_hit_query("ga4_03_add_to_cart_items.txt"))).await;
    trace.log();
    // The webhook delivers from its outbox, after the request: its lines are output too.
    vendor.wait_for(HOOK_PATH, 1).await;
    vendor.wait_for("/services/", 1).await;
    vendor.wait_for("/v", 1).await;
    other.wait_for("/landed", 1).await;
    container.drain().await;
    drop(_guard);

    let traces = format!("{trace:?}\n{}", trace.events.iter().flat_map(|e| e.tags.iter().map(|t| t.outcome.to_string())).collect::<Vec<_>>().join("\n"));
    let written = logs.text();
    let audit = std::fs::read_to_string(&audit).unwrap_or_default();
    (written, traces, audit, vendor, other)
}

#[tokio::test]
async fn no_secret_or_piece_of_one_reaches_any_output() {
    for format in [LogFormat::Text, LogFormat::Json] {
        let (logs, traces, audit, vendor, other) = run_once(format).await;
        let all = secrets(&vendor.origin());

        // The scenarios happened: each vendor was called with the real credentials.
        let hook = vendor.received_at(HOOK_PATH);
        assert_eq!(hook.len(), 1, "the webhook was called");
        assert_eq!(hook[0].headers.get("authorization").unwrap(), &format!("Bearer {HOOK_TOKEN}"));
        assert!(vendor.received().iter().any(|r| r.query.contains(META_TOKEN)), "Meta got its token");
        assert!(logs.contains("outbound not completed"), "the unreachable vendor was logged:\n{logs}");
        assert!(logs.contains("composed: Bearer [secret]"), "the probe's composed log line, masked:\n{logs}");
        assert!(logs.contains("upstream failed for access_token=[secret]"), "Meta's echo is in its log line, masked:\n{logs}");
        assert!(logs.contains("dead-lettered") && logs.contains("invalid_token"), "the refusing webhook's echo is in the dead letter's log line:\n{logs}");
        // A redirect to another origin does not carry the template's credentials there.
        let landed = other.received_at("/landed");
        assert_eq!(landed.len(), 1, "the redirect was followed");
        assert!(landed[0].headers.get("authorization").is_none(), "credentials crossed origins on redirect");

        for (what, text) in [("logs", &logs), ("traces", &traces), ("audit", &audit)] {
            let found = leaks(text, &all);
            assert!(found.is_empty(), "{format:?} {what}: pieces of secrets {found:?} in:\n{text}");
            assert!(!text.contains(SHORT_SECRET), "{format:?} {what}: the short secret in:\n{text}");
        }
        assert!(!audit.is_empty(), "the audit was written");
    }
}
