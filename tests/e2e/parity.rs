//! The mock host is the host: the same scenarios run through the real host (the probe tag's
//! component, the JSON collect client's component, a fake vendor as its sink) and through the
//! SDK's mock host (the probe tag's Rust code), and what the tag saw and did must be the same —
//! whether it ran, the event and every request accessor as it read them, the response headers
//! it could set, the permission denials. And the id cookies a tag declares (Meta's `_fbp` and
//! `_fbc`), which the host sets for it: the same cookies, with the same attributes, through the
//! host running the Meta component and the mock host running its Rust code.

use serde_json::{Value, json};
use sluice_sdk::mock::MockHost;
use sluice_tests::{FakeVendor, loopback_outbound, parse_config, template};

/// One scenario: consent signals, the purposes the tag needs, personal data everywhere.
struct Scenario {
    name: &'static str,
    consent_header: Option<&'static str>,
    /// Extra event keys (consent signals travelling in the event).
    event_extra: Value,
    purposes: &'static [&'static str],
}

const UA: &str = "Mozilla/5.0 (parity)";
const REMOTE: &str = "203.0.113.7";
const QUERY: &str = "gclid=GCLID123&_uip=198.51.100.23&v=2&em=jane%40example.com";

fn headers(s: &Scenario) -> Vec<(&'static str, &'static str)> {
    let mut h = vec![
        ("user-agent", UA),
        ("x-forwarded-for", "198.51.100.77"),
        ("authorization", "Bearer visitor-token"),
        ("referer", "https://shop.example/landing?gclid=GCLID123&color=red"),
        ("cookie", "_ga=GA1.1.111.222; _gcl_aw=GCL.1.GCLAW9; contact=jane%40example.com"),
        ("x-custom", "call +44 20 7946 0958"),
    ];
    if let Some(c) = s.consent_header {
        h.push(("x-consent", c));
    }
    h
}

fn body(s: &Scenario) -> Value {
    let mut event = json!({
        "event_name": "purchase",
        "value": 30,
        "contact": "jane@example.com",
        "profile": {"mobile": "+1 (555) 010-9999", "tier": "gold"},
        "page_location": "https://shop.example/p?gclid=GCLID123&color=red",
        "x-ga-system_properties": {"uip": "198.51.100.23", "gcs": "G111"},
        "x-ga-mp2-gbraid": "GBRAID456",
        "items": [{"item_id": "SKU_1", "buyer_email": "jane@example.com"}],
    });
    if let (Value::Object(map), Value::Object(extra)) = (&mut event, &s.event_extra) {
        map.extend(extra.clone());
    }
    event
}

fn probe_params(sink: &str) -> Value {
    json!({
        "sink": sink,
        "label": "probe",
        "read_request": true,
        "read_consent": true,
        "headers": ["user-agent", "x-forwarded-for", "authorization", "referer", "cookie", "x-custom", "x-consent"],
        "cookies": ["_ga", "_gcl_aw", "contact"],
        "query_params": ["gclid", "_uip", "v", "em"],
        "set_headers": ["x-probe", "content-length", "keep-alive", "set-cookie"],
    })
}

/// What the tag saw and did, as comparable values.
#[derive(Debug, PartialEq)]
struct Observed {
    blocked: Option<Vec<String>>,
    report: Value,
    denials: Vec<String>,
}

async fn through_host(s: &Scenario, vendor: &FakeVendor) -> Observed {
    let sink = format!("{}/sink", vendor.origin());
    let purposes = serde_json::to_string(s.purposes).unwrap();
    let params = toml_inline(&probe_params(&sink));
    let config = format!(
        "{outbound}[consent]\naudit = \"off\"\n\n\
         [[client]]\nname = \"collect\"\nwasm = \"{client}\"\n\
         grants = {{ body = true, request_headers = [\"user-agent\"], remote_address = true }}\n\n\
         [[tag]]\nname = \"probe\"\nwasm = \"{tag}\"\ntrigger = {{ events = [\"purchase\"] }}\nconsent = {purposes}\n\
         params = {params}\n\
         grants = {{ request_headers = [\"*\", \"cookie\", \"authorization\"], query = true, cookies = [\"*\"], body = true, remote_address = true, \
           event_data = [\"*\"], outbound = [\"*\"], response_headers = [\"*\"], response_cookies = [\"probe_tag\"], \
           consent = true, storage = true, logging = true }}\n",
        outbound = loopback_outbound(),
        client = template("json-collect-client").display(),
        tag = template("probe-tag").display(),
    );
    let container = sluice::Container::load(&parse_config(&config).unwrap()).unwrap();
    let container = std::sync::Arc::new(container);
    let before = vendor.received_at("/sink").len();
    let mut request = sluice_tests::request("POST", "/collect", body(s).to_string().as_bytes());
    request.query = QUERY.into();
    request.remote_addr = Some(REMOTE.parse().unwrap());
    for (name, value) in headers(s) {
        request.headers.append(http::HeaderName::from_static(name), value.parse().unwrap());
    }
    let (_, trace) = container.handle(request).await;
    let run = trace.tag_run(0, "probe").unwrap_or_else(|| panic!("{}: the probe matched: {trace:?}", s.name));
    let blocked = match &run.outcome {
        sluice::Outcome::BlockedByConsent(missing) => Some(missing.clone()),
        sluice::Outcome::Ok => None,
        other => panic!("{}: unexpected outcome {other}", s.name),
    };
    let received = vendor.received_at("/sink");
    let report = if blocked.is_some() {
        assert_eq!(received.len(), before, "{}: a blocked tag sent nothing", s.name);
        Value::Null
    } else {
        received.last().expect("the probe reported").json()
    };
    Observed { blocked, report, denials: run.denials.clone() }
}

fn through_mock(s: &Scenario, vendor: &FakeVendor) -> Observed {
    let sink = format!("{}/sink", vendor.origin());
    // What the JSON collect client adds to the event it claims.
    let mut event = body(s);
    event["user_agent"] = json!(UA);
    event["ip_override"] = json!(REMOTE);
    let mut mock = MockHost::new()
        .method("POST")
        .path("/collect")
        .query(QUERY)
        .body(body(s).to_string())
        .remote_address(REMOTE)
        .event(event)
        .consent_purposes(s.purposes)
        .allow_http(&vendor.origin())
        .allow_private("127.0.0.1/32")
        .stub(&sink, sluice_sdk::HttpResponse::new(200, "{}"));
    for (name, value) in headers(s) {
        mock = mock.header(name, value);
    }
    if let Value::Object(params) = probe_params(&sink) {
        for (name, value) in params {
            mock = mock.param(&name, value);
        }
    }
    let result = mock.run_tag::<probe_tag::ProbeTag>();
    let blocked = mock.blocked_by_consent().map(|missing| missing.iter().map(|p| p.name().to_string()).collect());
    match (&blocked, &result) {
        (Some(_), Err(_)) | (None, Ok(())) => {}
        _ => panic!("{}: mock result {result:?} with blocked {blocked:?}", s.name),
    }
    let report = match mock.sent().first() {
        Some(sent) => serde_json::from_slice(&sent.body).unwrap(),
        None => Value::Null,
    };
    Observed { blocked, report, denials: mock.denials().iter().map(|d| d.to_string()).collect() }
}

/// A JSON object as a TOML inline table (the probe's parameters in the container config).
fn toml_inline(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k} = {}", toml_inline(v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(toml_inline).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "all granted", consent_header: Some("ad_storage=granted,ad_user_data=granted,analytics_storage=granted"), event_extra: json!({}), purposes: &["ad_storage", "ad_user_data"] },
        Scenario { name: "ad_user_data denied, tag needs ad_storage", consent_header: Some("ad_storage=granted,ad_user_data=denied"), event_extra: json!({}), purposes: &["ad_storage"] },
        Scenario { name: "ad_user_data denied, tag needs it", consent_header: Some("ad_storage=granted,ad_user_data=denied"), event_extra: json!({}), purposes: &["ad_storage", "ad_user_data"] },
        Scenario { name: "unset, tag needs nothing", consent_header: None, event_extra: json!({}), purposes: &[] },
        Scenario { name: "unset, tag needs analytics_storage", consent_header: None, event_extra: json!({}), purposes: &["analytics_storage"] },
        Scenario { name: "malformed signals", consent_header: Some("{not json"), event_extra: json!({"x-ga-gcs": "G1?1", "x-ga-gcd": "13z3"}), purposes: &[] },
        Scenario { name: "gcd in the event grants all", consent_header: None, event_extra: json!({"x-ga-gcd": "13r3r3r2r5l1"}), purposes: &["ad_storage", "ad_user_data"] },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_host_sees_and_does_what_the_host_does() {
    let vendor = FakeVendor::start().await;
    for s in scenarios() {
        let host = through_host(&s, &vendor).await;
        let mock = through_mock(&s, &vendor);
        assert_eq!(host, mock, "scenario {:?}: host (left) and mock host (right) differ", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenarios_exercise_what_they_claim() {
    // Guards against a comparison of two equally empty results.
    let vendor = FakeVendor::start().await;
    let s = scenarios();
    let granted = through_host(&s[0], &vendor).await;
    assert!(granted.blocked.is_none());
    assert_eq!(granted.report["request"]["headers"]["x-forwarded-for"]["ok"], "198.51.100.77", "granted: the visitor's data is there");
    assert_eq!(granted.report["set_headers"]["x-probe"]["ok"], "set");
    assert!(granted.report["set_headers"]["content-length"]["error"].as_str().unwrap().contains("set by the host"));
    assert!(granted.report["set_headers"]["keep-alive"]["error"].is_string());

    let minimised = through_host(&s[1], &vendor).await;
    assert!(minimised.blocked.is_none());
    let text = minimised.report.to_string();
    for personal in ["198.51.100", "jane", "GCLID123", "GCLAW9", "GBRAID456", "visitor-token", "7946", "010-9999", REMOTE] {
        assert!(!text.contains(personal), "ad_user_data denied: {personal:?} reached the tag: {text}");
    }
    assert_eq!(minimised.report["request"]["cookies"]["_ga"]["ok"], json!(["GA1.1.111.222"]), "non-personal cookies stay");
    assert_eq!(minimised.report["event"]["profile"]["tier"], "gold", "non-personal data stays");

    assert_eq!(through_host(&s[2], &vendor).await.blocked, Some(vec!["ad_user_data".to_string()]));
    assert_eq!(through_host(&s[4], &vendor).await.blocked, Some(vec!["analytics_storage".to_string()]));
    assert!(through_host(&s[6], &vendor).await.report["event"]["contact"] == "jane@example.com", "gcd granted ad_user_data");
}

/// One id-cookie case: the visitor's cookies, the page, the Meta tag's settings and grant.
struct IdCase {
    name: &'static str,
    cookie: Option<&'static str>,
    page: &'static str,
    set_cookies: bool,
    response_cookies: &'static [&'static str],
    consent: &'static str,
}

fn id_cases() -> Vec<IdCase> {
    let granted = "ad_storage=granted,ad_user_data=granted";
    let click = "https://shop.example/p?fbclid=IwAR-click";
    let both: &[&str] = &["_fbp", "_fbc"];
    vec![
        IdCase { name: "new visitor from a click", cookie: None, page: click, set_cookies: true, response_cookies: both, consent: granted },
        IdCase { name: "returning visitor, same click", cookie: Some("_fbp=fb.1.1596403881668.1116446470; _fbc=fb.1.1596403881668.IwAR-click"), page: click, set_cookies: true, response_cookies: both, consent: granted },
        IdCase { name: "returning visitor, new click", cookie: Some("_fbp=fb.1.1596403881668.1116446470"), page: click, set_cookies: true, response_cookies: both, consent: granted },
        IdCase { name: "no click", cookie: None, page: "https://shop.example/p", set_cookies: true, response_cookies: both, consent: granted },
        IdCase { name: "set_cookies = false", cookie: None, page: click, set_cookies: false, response_cookies: both, consent: granted },
        IdCase { name: "only _fbc granted", cookie: None, page: click, set_cookies: true, response_cookies: &["_fbc"], consent: granted },
        IdCase { name: "blocked by consent", cookie: None, page: click, set_cookies: true, response_cookies: both, consent: "ad_storage=granted,ad_user_data=denied" },
    ]
}

fn id_event(c: &IdCase) -> Value {
    json!({"event_name": "purchase", "event_id": "T-1", "page_location": c.page, "value": 10, "currency": "EUR"})
}

/// A `Set-Cookie` line with its time and random parts (all-digit `.`-separated parts)
/// written as `N`: those differ between two runs, the rest must not.
fn cookie_shape(line: &str) -> String {
    let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
    let parts: Vec<&str> = pair.split('.').map(|p| if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) { "N" } else { p }).collect();
    format!("{};{attributes}", parts.join("."))
}

async fn id_cookies_through_host(c: &IdCase, vendor: &FakeVendor) -> Vec<String> {
    let granted = serde_json::to_string(c.response_cookies).unwrap();
    let config = format!(
        "{outbound}[consent]\naudit = \"off\"\n\n\
         [[client]]\nname = \"collect\"\nwasm = \"{client}\"\n\n\
         [[tag]]\nname = \"meta\"\nwasm = \"{tag}\"\ntrigger = {{ events = [\"purchase\"] }}\n\
         params = {{ pixel_id = \"1\", access_token = \"${{TEST_SECRET}}\", endpoint = \"{origin}\", set_cookies = {set} }}\n\
         grants = {{ event_data = [\"*\"], cookies = [\"_fbp\", \"_fbc\"], response_cookies = {granted}, outbound = [\"{origin}/\"], logging = true }}\n",
        outbound = loopback_outbound(),
        client = template("json-collect-client").display(),
        tag = template("meta-capi-tag").display(),
        origin = vendor.origin(),
        set = c.set_cookies,
    );
    let container = std::sync::Arc::new(sluice::Container::load(&parse_config(&config).unwrap()).unwrap());
    let mut request = sluice_tests::request("POST", "/collect", b"");
    request.headers.append("x-consent", c.consent.parse().unwrap());
    if let Some(cookie) = c.cookie {
        request.headers.append("cookie", cookie.parse().unwrap());
    }
    let (response, _) = container.handle_event(request, id_event(c)).await;
    response.cookies.iter().map(|line| cookie_shape(line)).collect()
}

fn id_cookies_through_mock(c: &IdCase) -> Vec<String> {
    let grant = sluice_sdk::PermissionSet {
        event_data: vec!["*".into()],
        cookies: vec!["_fbp".into(), "_fbc".into()],
        response_cookies: c.response_cookies.iter().map(|n| n.to_string()).collect(),
        outbound: vec!["https://graph.facebook.com/".into()],
        logging: true,
        ..Default::default()
    };
    let mut mock = MockHost::new()
        .event(id_event(c))
        .header("x-consent", c.consent)
        .param("pixel_id", "1")
        .secret_param("access_token", "s3cr3t-value")
        .param("set_cookies", c.set_cookies)
        .grant(grant);
    if let Some(cookie) = c.cookie {
        mock = mock.header("cookie", cookie);
    }
    let _ = mock.run_tag::<meta_capi_tag::MetaCapi>();
    mock.response()
        .cookies
        .iter()
        .map(|k| {
            let spec = sluice_policy::response::CookieSpec {
                name: &k.name,
                value: &k.value,
                domain: k.domain.as_deref(),
                path: k.path.as_deref(),
                max_age: k.max_age,
                secure: k.secure,
                http_only: k.http_only,
                same_site: k.same_site.map(|s| match s {
                    sluice_sdk::SameSite::Strict => "Strict",
                    sluice_sdk::SameSite::Lax => "Lax",
                    sluice_sdk::SameSite::None => "None",
                }),
            };
            cookie_shape(&sluice_policy::response::cookie_line(&spec).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_host_sets_the_id_cookies_the_host_sets() {
    let vendor = FakeVendor::start().await;
    for c in id_cases() {
        let host = id_cookies_through_host(&c, &vendor).await;
        assert_eq!(host, id_cookies_through_mock(&c), "case {:?}: host (left) and mock host (right) differ", c.name);
    }
    // What the cases claim, seen through the host.
    let cases = id_cases();
    let new_visitor = id_cookies_through_host(&cases[0], &vendor).await;
    assert_eq!(new_visitor, [
        "_fbp=fb.N.N.N; Path=/; Max-Age=7776000; Secure; SameSite=Lax",
        "_fbc=fb.N.N.IwAR-click; Path=/; Max-Age=7776000; Secure; SameSite=Lax",
    ]);
    assert!(id_cookies_through_host(&cases[1], &vendor).await.is_empty(), "the ids the visitor holds are kept");
    assert_eq!(id_cookies_through_host(&cases[2], &vendor).await.len(), 1, "a new click replaces only _fbc");
    assert_eq!(id_cookies_through_host(&cases[3], &vendor).await.len(), 1, "no click: only _fbp");
    for off in &cases[4..] {
        assert!(id_cookies_through_host(off, &vendor).await.iter().all(|l| !l.starts_with("_fbp")), "{}: no _fbp", off.name);
    }
    assert!(id_cookies_through_host(&cases[6], &vendor).await.is_empty(), "a tag consent blocks sets nothing");
}
