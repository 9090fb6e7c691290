//! Consent decoding: `decode_gcs`, `decode_gcd`, and `ConsentPolicy::resolve_signals` / `resolve`
//! over a fuzzed consent header, cookie, `x-ga-gcs`, `x-ga-gcd`, Measurement Protocol `consent`
//! and `consent_state` (NUL-separated parts; the first byte picks the cookie format and the
//! unset rule).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sluice_policy::consent::{ConsentConfig, ConsentPolicy, CookieFormat, UnsetRule, decode_gcd, decode_gcs};
use sluice_policy::request::RequestSource;

struct Request<'a> {
    query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl RequestSource for Request<'_> {
    fn query(&self) -> &str {
        self.query
    }
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v).collect()
    }
    fn body(&self) -> &[u8] {
        &[]
    }
    fn remote_address(&self) -> Option<String> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (header, cookie, gcs, gcd, mp, state) = (next(), next(), next(), next(), next(), next());

    if let Ok(decoded) = decode_gcs(gcs) {
        assert_eq!(decoded.len(), 2);
    }
    if let Ok(decoded) = decode_gcd(gcd) {
        assert_eq!(decoded.len(), 4);
    }
    let _ = decode_gcs(header);
    let _ = decode_gcd(header);

    let config = ConsentConfig {
        cookie: Some("consent".into()),
        cookie_format: [CookieFormat::Auto, CookieFormat::List, CookieFormat::Json][usize::from(mode % 3)],
        unset: if mode & 4 == 0 { UnsetRule::Deny } else { UnsetRule::Grant },
        ..ConsentConfig::default()
    };
    let policy = ConsentPolicy::new(config);
    let json = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_string()));
    let mut event = Map::new();
    event.insert("x-ga-gcs".into(), Value::String(gcs.into()));
    event.insert("x-ga-gcd".into(), Value::String(gcd.into()));
    if !mp.is_empty() {
        event.insert("x-ga-mp2-consent".into(), json(mp));
    }
    if !state.is_empty() {
        event.insert("consent_state".into(), json(state));
    }
    let event = Value::Object(event);

    let resolution = policy.resolve_signals(Some(header), Some(cookie), &event);
    let _ = resolution.state.to_json();
    let _ = policy.minimises(&resolution.state);
    let _ = policy.missing(&resolution.state, &sluice_policy::Purpose::ALL);

    let cookie_header = format!("consent={cookie}");
    let request = Request { query: header, headers: vec![("x-consent", header), ("cookie", &cookie_header), ("Cookie", cookie)] };
    let _ = policy.resolve(&request, &event);
});
