//! Consent: resolved by the host, per event, before any tag runs.
//!
//! Server-side tagging must never bypass consent, so the decision is not left to templates:
//! 1. [`ConsentPolicy::resolve`] builds a [`ConsentState`] for the event: each purpose is
//!    granted, denied or unset, with the [`Source`] that said so. Sources are tried in the
//!    operator's order (default: CMP header, consent cookie, GA4 `gcd`, GA4 `gcs`, Measurement
//!    Protocol `consent`, event `consent_state`); for each purpose the first source that says
//!    something wins. A malformed value is logged and skipped — it falls through to the next
//!    source and finally to "unset", never to "granted".
//! 2. The pipeline runs a tag only if every purpose it needs is granted; `unset` counts as
//!    granted only if the operator says so (`unset = "grant"`; the default denies). A blocked
//!    tag is not instantiated at all.
//! 3. With `ad_user_data` not granted, personal data is removed from what every tag sees
//!    ([`ConsentPolicy::strip`]): `user_data`, `ip_override`, email/phone-like keys, click ids.
//! 4. Every decision is written as an [`AuditRecord`] JSON line.
//!
//! Nothing is cached: each request is resolved from its own signals.

use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bindings::types::{ConsentStatus, Purpose};

/// All purposes, in WIT order.
pub const PURPOSES: [Purpose; 7] = [
    Purpose::AdStorage,
    Purpose::AnalyticsStorage,
    Purpose::AdUserData,
    Purpose::AdPersonalization,
    Purpose::FunctionalityStorage,
    Purpose::PersonalizationStorage,
    Purpose::SecurityStorage,
];

/// The event-model name of a purpose (`ad_storage`...).
pub fn purpose_key(p: Purpose) -> &'static str {
    match p {
        Purpose::AdStorage => "ad_storage",
        Purpose::AnalyticsStorage => "analytics_storage",
        Purpose::AdUserData => "ad_user_data",
        Purpose::AdPersonalization => "ad_personalization",
        Purpose::FunctionalityStorage => "functionality_storage",
        Purpose::PersonalizationStorage => "personalization_storage",
        Purpose::SecurityStorage => "security_storage",
    }
}

/// The purpose with this name.
pub fn purpose_named(name: &str) -> Option<Purpose> {
    PURPOSES.iter().copied().find(|p| purpose_key(*p) == name)
}

fn index(p: Purpose) -> usize {
    PURPOSES.iter().position(|q| *q == p).unwrap_or(0)
}

/// Where a purpose's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The consent platform's request header.
    Header,
    /// The consent cookie.
    Cookie,
    /// GA4 Consent Mode v2 `gcd` (`x-ga-gcd`).
    Gcd,
    /// GA4 `gcs` (`x-ga-gcs`).
    Gcs,
    /// The Measurement Protocol `consent` object (`x-ga-mp2-consent`).
    Mp,
    /// A structured `consent_state` object in event data.
    Event,
    /// No source said anything.
    Default,
}

/// Consent for one event: per purpose, a status and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentState {
    states: [(ConsentStatus, Source); 7],
}

impl Default for ConsentState {
    fn default() -> Self {
        ConsentState { states: [(ConsentStatus::Unset, Source::Default); 7] }
    }
}

impl ConsentState {
    /// One purpose's status (what templates see through the consent interface).
    pub fn status(&self, p: Purpose) -> ConsentStatus {
        self.states[index(p)].0
    }

    /// One purpose's source.
    pub fn source(&self, p: Purpose) -> Source {
        self.states[index(p)].1
    }

    /// Whether `p` counts as granted under the operator's `unset` rule.
    pub fn allows(&self, p: Purpose, unset_grants: bool) -> bool {
        match self.status(p) {
            ConsentStatus::Granted => true,
            ConsentStatus::Denied => false,
            ConsentStatus::Unset => unset_grants,
        }
    }

    fn set_if_unset(&mut self, p: Purpose, status: ConsentStatus, source: Source) {
        let slot = &mut self.states[index(p)];
        if slot.0 == ConsentStatus::Unset && status != ConsentStatus::Unset {
            *slot = (status, source);
        }
    }

    /// `{purpose: {status, source}}` for audit records.
    pub fn to_json(&self) -> Value {
        Value::Object(
            PURPOSES
                .iter()
                .map(|p| {
                    let (status, source) = self.states[index(*p)];
                    let status = match status {
                        ConsentStatus::Granted => "granted",
                        ConsentStatus::Denied => "denied",
                        ConsentStatus::Unset => "unset",
                    };
                    (purpose_key(*p).to_string(), serde_json::json!({ "status": status, "source": source }))
                })
                .collect(),
        )
    }
}

/// `[consent]` in the container config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsentConfig {
    /// Sources in priority order.
    pub sources: Vec<Source>,
    /// Request header set by the consent platform.
    pub header: String,
    /// Consent cookie name (none by default).
    pub cookie: Option<String>,
    /// Cookie format: `auto` (JSON if it starts with `{`), `list` or `json`.
    pub cookie_format: CookieFormat,
    /// What `unset` means for a tag that needs the purpose: `deny` (default) or `grant`.
    pub unset: UnsetRule,
    /// Extra event keys (dotted paths) removed when `ad_user_data` is not granted.
    pub strip_keys: Vec<String>,
    /// Extra URL parameters and cookies (click ids) removed when `ad_user_data` is not granted.
    pub strip_click_ids: Vec<String>,
    /// Where audit records go: `stdout`, `off`, or a file path (appended).
    pub audit: String,
}

/// How to read the consent cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CookieFormat {
    /// JSON if the value starts with `{`, else a list.
    #[default]
    Auto,
    /// `ad_storage=granted,analytics_storage=denied` (`,` `;` `&` `|` separate; `=` or `:`).
    List,
    /// `{"ad_storage":"granted","analytics_storage":false}`.
    Json,
}

/// What `unset` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnsetRule {
    /// Unset blocks tags that need the purpose.
    #[default]
    Deny,
    /// Unset lets them run (Google's tags' own default behaviour).
    Grant,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            sources: vec![Source::Header, Source::Cookie, Source::Gcd, Source::Gcs, Source::Mp, Source::Event],
            header: "x-consent".into(),
            cookie: None,
            cookie_format: CookieFormat::Auto,
            unset: UnsetRule::Deny,
            strip_keys: Vec::new(),
            strip_click_ids: Vec::new(),
            audit: "stdout".into(),
        }
    }
}

/// Click-id URL parameters and cookies removed when `ad_user_data` is not granted.
pub const CLICK_IDS: &[&str] = &["gclid", "gbraid", "wbraid", "dclid", "fbclid", "ttclid", "msclkid", "_fbc", "_gcl_aw", "_gcl_dc", "_gcl_gb", "_gcl_ag"];

/// The consent policy: resolution, stripping and the audit sink.
pub struct ConsentPolicy {
    config: ConsentConfig,
    audit: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for ConsentPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentPolicy").field("config", &self.config).finish()
    }
}

/// One consent decision, as written to the audit sink.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    /// Unix time in milliseconds.
    pub ts_ms: u128,
    /// Request id (matches the request log line).
    pub request_id: &'a str,
    /// The event's name.
    pub event_name: &'a str,
    /// The tag.
    pub tag: &'a str,
    /// Purposes the tag needs.
    #[serde(serialize_with = "purpose_names")]
    pub purposes_needed: &'a [(String, Purpose)],
    /// Every purpose's status and source.
    pub state: &'a Value,
    /// `run` or `blocked`.
    pub decision: &'a str,
    /// Needed purposes that were not granted.
    pub missing: &'a [String],
    /// Whether personal data was removed from what the tag saw.
    pub personal_data_removed: bool,
}

impl ConsentPolicy {
    /// Builds the policy; opens the audit file if one is configured.
    pub fn new(config: ConsentConfig) -> Result<Self, String> {
        let audit: Option<Mutex<Box<dyn Write + Send>>> = match config.audit.as_str() {
            "off" | "" => None,
            "stdout" => Some(Mutex::new(Box::new(std::io::stdout()))),
            path => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open the consent audit file {path}: {e}"))?;
                Some(Mutex::new(Box::new(file)))
            }
        };
        Ok(ConsentPolicy { config, audit })
    }

    /// Whether `unset` counts as granted.
    pub fn unset_grants(&self) -> bool {
        self.config.unset == UnsetRule::Grant
    }

    /// Resolves the consent state of one event.
    pub fn resolve(&self, headers: &http::HeaderMap, event: &Value, request_id: &str) -> ConsentState {
        let mut state = ConsentState::default();
        let warn = |source: &str, why: String| {
            tracing::warn!(request_id, "consent {source} ignored: {why}; falling back to the next source or the default");
        };
        for source in &self.config.sources {
            match source {
                Source::Header => {
                    if let Some(v) = headers.get(self.config.header.as_str()).and_then(|v| v.to_str().ok()) {
                        apply_map(&mut state, parse_purpose_map(v, CookieFormat::Auto), Source::Header, &warn);
                    }
                }
                Source::Cookie => {
                    if let Some(name) = &self.config.cookie
                        && let Some(v) = crate::state::cookie_values(headers, name).into_iter().next()
                    {
                        apply_map(&mut state, parse_purpose_map(&v, self.config.cookie_format), Source::Cookie, &warn);
                    }
                }
                Source::Gcd => {
                    if let Some(gcd) = event.get("x-ga-gcd").and_then(Value::as_str) {
                        apply_decoded(&mut state, decode_gcd(gcd), Source::Gcd, "gcd", &warn);
                    }
                }
                Source::Gcs => {
                    if let Some(gcs) = event.get("x-ga-gcs").and_then(Value::as_str) {
                        apply_decoded(&mut state, decode_gcs(gcs), Source::Gcs, "gcs", &warn);
                    }
                }
                Source::Mp => {
                    if let Some(obj) = event.get("x-ga-mp2-consent") {
                        apply_map(&mut state, purpose_map_from_json(obj), Source::Mp, &warn);
                    }
                }
                Source::Event => {
                    if let Some(obj) = event.get("consent_state") {
                        apply_map(&mut state, purpose_map_from_json(obj), Source::Event, &warn);
                    }
                }
                Source::Default => {}
            }
        }
        state
    }

    /// The event as tags may see it when `ad_user_data` is not granted: personal data removed.
    pub fn strip(&self, event: &Value) -> Value {
        let mut event = event.clone();
        let Value::Object(map) = &mut event else { return event };
        map.remove("user_data");
        map.remove("ip_override");
        for path in &self.config.strip_keys {
            remove_path(map, path);
        }
        let click_ids: Vec<&str> = CLICK_IDS.iter().copied().chain(self.config.strip_click_ids.iter().map(String::as_str)).collect();
        scrub(map, &click_ids);
        event
    }

    /// Whether a cookie or URL parameter is a click id to hide when personal data is removed.
    pub fn is_click_id(&self, name: &str) -> bool {
        CLICK_IDS.contains(&name) || self.config.strip_click_ids.iter().any(|n| n == name)
    }

    /// `url` with click-id parameters removed (unchanged if it is not a URL).
    pub fn strip_url(&self, url: &str) -> String {
        let ids: Vec<&str> = CLICK_IDS.iter().copied().chain(self.config.strip_click_ids.iter().map(String::as_str)).collect();
        strip_click_params(url, &ids)
    }

    /// Whether decisions are audited (`audit` is not `off`): callers skip building records
    /// nobody will read.
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }

    /// Writes audit records (one event's decisions), a JSON line each, in one write and flush.
    pub fn audit(&self, records: &[AuditRecord<'_>]) {
        let Some(sink) = &self.audit else { return };
        let mut lines = Vec::with_capacity(records.len() * 512);
        for record in records {
            if serde_json::to_writer(&mut lines, record).is_ok() {
                lines.push(b'\n');
            }
        }
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.write_all(&lines).and_then(|()| sink.flush()) {
            tracing::error!("consent audit records could not be written: {e}");
        }
    }
}

type PurposeMap = Result<Vec<(String, Option<ConsentStatus>)>, String>;

/// Serialises `(name, purpose)` pairs as the list of names the operator wrote.
fn purpose_names<S: serde::Serializer>(purposes: &&[(String, Purpose)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(purposes.iter().map(|(name, _)| name))
}

/// Applies a decoded Consent Mode signal (`gcd`/`gcs`), or warns why it was ignored.
fn apply_decoded(
    state: &mut ConsentState,
    decoded: Result<Vec<(Purpose, ConsentStatus)>, String>,
    source: Source,
    label: &str,
    warn: &dyn Fn(&str, String),
) {
    match decoded {
        Ok(values) => {
            for (p, s) in values {
                state.set_if_unset(p, s, source);
            }
        }
        Err(why) => warn(label, why),
    }
}

fn apply_map(state: &mut ConsentState, map: PurposeMap, source: Source, warn: &dyn Fn(&str, String)) {
    let label = match source {
        Source::Header => "header",
        Source::Cookie => "cookie",
        Source::Mp => "Measurement Protocol consent",
        _ => "consent_state",
    };
    match map {
        Ok(entries) => {
            for (name, status) in entries {
                match (purpose_named(&name), status) {
                    (Some(p), Some(s)) => state.set_if_unset(p, s, source),
                    (None, _) => {}
                    (Some(_), None) => warn(label, format!("value for {name} is not granted/denied")),
                }
            }
        }
        Err(why) => warn(label, why),
    }
}

fn status_word(s: &str) -> Option<ConsentStatus> {
    match s.trim().trim_matches('"').to_ascii_lowercase().as_str() {
        "granted" | "true" | "1" | "yes" => Some(ConsentStatus::Granted),
        "denied" | "false" | "0" | "no" => Some(ConsentStatus::Denied),
        _ => None,
    }
}

fn purpose_map_from_json(v: &Value) -> PurposeMap {
    let Value::Object(map) = v else { return Err("not a JSON object".into()) };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let status = match v {
                Value::Bool(true) => Some(ConsentStatus::Granted),
                Value::Bool(false) => Some(ConsentStatus::Denied),
                Value::String(s) => status_word(s),
                _ => None,
            };
            (k.to_ascii_lowercase(), status)
        })
        .collect())
}

/// A header or cookie value: JSON (`{...}`) or a `purpose=status` list.
fn parse_purpose_map(raw: &str, format: CookieFormat) -> PurposeMap {
    let text = raw.trim();
    let json = match format {
        CookieFormat::Json => true,
        CookieFormat::List => false,
        CookieFormat::Auto => text.starts_with('{'),
    };
    if json {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        return purpose_map_from_json(&v);
    }
    let entries: Vec<(String, Option<ConsentStatus>)> = text
        .split([',', ';', '&', '|'])
        .filter(|e| !e.trim().is_empty())
        .map(|entry| match entry.split_once(['=', ':']) {
            Some((k, v)) => Ok((k.trim().to_ascii_lowercase(), status_word(v))),
            None => Err(format!("entry {entry:?} is not purpose=status")),
        })
        .collect::<Result<_, _>>()?;
    Ok(entries)
}

/// `gcs` = `G1` + ad_storage + analytics_storage digits (`1` granted, `0` denied, `-` unset).
pub fn decode_gcs(gcs: &str) -> Result<Vec<(Purpose, ConsentStatus)>, String> {
    let b = gcs.as_bytes();
    if b.len() != 4 || &b[..2] != b"G1" {
        return Err(format!("gcs {gcs:?} is not G1 followed by two digits"));
    }
    let digit = |c: u8| match c {
        b'1' => Ok(ConsentStatus::Granted),
        b'0' => Ok(ConsentStatus::Denied),
        b'-' => Ok(ConsentStatus::Unset),
        _ => Err(format!("gcs {gcs:?} has an unknown digit {:?}", c as char)),
    };
    Ok(vec![(Purpose::AdStorage, digit(b[2])?), (Purpose::AnalyticsStorage, digit(b[3])?)])
}

/// `gcd` letters at positions 2, 4, 6, 8 (ad_storage, analytics_storage, ad_user_data,
/// ad_personalization), each encoding a default and an update state; the update wins when set.
pub fn decode_gcd(gcd: &str) -> Result<Vec<(Purpose, ConsentStatus)>, String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
    let b = gcd.as_bytes();
    if b.len() < 9 || b[0] != b'1' {
        return Err(format!("gcd {gcd:?} is not a Consent Mode v2 string (1 + at least 8 characters)"));
    }
    let letter = |c: u8| -> Result<ConsentStatus, String> {
        let i = ALPHABET.iter().position(|a| *a == c).and_then(|i| i.checked_sub(16)).filter(|i| *i < 16);
        let Some(i) = i else { return Err(format!("gcd {gcd:?} has an unknown letter {:?}", c as char)) };
        let (default, update) = (i >> 2, i & 3);
        let effective = if update != 1 { update } else { default };
        match effective {
            1 => Ok(ConsentStatus::Unset),
            2 => Ok(ConsentStatus::Denied),
            3 => Ok(ConsentStatus::Granted),
            _ => Err(format!("gcd {gcd:?} has an invalid letter {:?}", c as char)),
        }
    };
    Ok(vec![
        (Purpose::AdStorage, letter(b[2])?),
        (Purpose::AnalyticsStorage, letter(b[4])?),
        (Purpose::AdUserData, letter(b[6])?),
        (Purpose::AdPersonalization, letter(b[8])?),
    ])
}

fn remove_path(map: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            map.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(inner)) = map.get_mut(head) {
                remove_path(inner, rest);
            }
        }
    }
}

/// Removes email/phone-like keys and click-id keys everywhere, and click-id parameters from URLs.
fn scrub(map: &mut Map<String, Value>, click_ids: &[&str]) {
    map.retain(|k, _| {
        let k = k.to_ascii_lowercase();
        !(k.contains("email") || k.contains("phone") || click_ids.contains(&k.as_str()))
    });
    for value in map.values_mut() {
        match value {
            Value::Object(inner) => scrub(inner, click_ids),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        scrub(inner, click_ids);
                    }
                }
            }
            Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
                *s = strip_click_params(s, click_ids);
            }
            _ => {}
        }
    }
}

fn strip_click_params(url: &str, click_ids: &[&str]) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return url.to_string() };
    if parsed.query().is_none() {
        return url.to_string();
    }
    let kept: Vec<(String, String)> =
        parsed.query_pairs().filter(|(k, _)| !click_ids.contains(&k.as_ref())).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(config: ConsentConfig) -> ConsentPolicy {
        ConsentPolicy::new(ConsentConfig { audit: "off".into(), ..config }).expect("policy")
    }

    fn resolve(p: &ConsentPolicy, headers: &[(&str, &str)], event: Value) -> ConsentState {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        p.resolve(&map, &event, "test")
    }

    use ConsentStatus::{Denied as D, Granted as G, Unset as U};

    #[test]
    fn gcd_letters_decode_with_update_over_default() {
        let four = |gcd: &str| decode_gcd(gcd).expect("valid").into_iter().map(|(_, s)| s).collect::<Vec<_>>();
        assert_eq!(four("13r3r3r2r5l1"), [G, G, G, G], "denied by default, then granted");
        assert_eq!(four("13p3p3p2p5l1"), [D, D, D, D]);
        assert_eq!(four("13t3t3t2t5l1"), [G, G, G, G]);
        assert_eq!(four("13l3l3l3l1l1"), [U, U, U, U], "consent mode not used");
        assert_eq!(four("13l3l3l2l1"), [U, U, U, U], "older 10-character form");
        assert_eq!(four("13u3v3m2n1"), [D, G, D, G], "u = granted then denied");
        assert!(decode_gcd("13z3r3r2r5l1").is_err() && decode_gcd("1").is_err() && decode_gcd("").is_err());
    }

    #[test]
    fn gcs_digits() {
        assert_eq!(decode_gcs("G111").expect("valid"), [(Purpose::AdStorage, G), (Purpose::AnalyticsStorage, G)]);
        assert_eq!(decode_gcs("G101").expect("valid"), [(Purpose::AdStorage, D), (Purpose::AnalyticsStorage, G)]);
        assert!(decode_gcs("G1x1").is_err() && decode_gcs("G11").is_err());
    }

    #[test]
    fn sources_apply_in_the_operators_order_with_their_names() {
        let p = policy(ConsentConfig { cookie: Some("cmp".into()), ..Default::default() });
        let event = json!({"x-ga-gcs": "G100", "x-ga-gcd": "13p3p3p2p5l1"});
        let s = resolve(&p, &[("x-consent", "ad_storage=granted"), ("cookie", "cmp=analytics_storage%3Dgranted")], event.clone());
        assert_eq!((s.status(Purpose::AdStorage), s.source(Purpose::AdStorage)), (G, Source::Header));
        assert_eq!((s.status(Purpose::AnalyticsStorage), s.source(Purpose::AnalyticsStorage)), (G, Source::Cookie));
        assert_eq!((s.status(Purpose::AdUserData), s.source(Purpose::AdUserData)), (D, Source::Gcd));
        assert_eq!((s.status(Purpose::SecurityStorage), s.source(Purpose::SecurityStorage)), (U, Source::Default));

        let hits_first = policy(ConsentConfig { sources: vec![Source::Gcs, Source::Header], ..Default::default() });
        let s = resolve(&hits_first, &[("x-consent", "ad_storage=granted")], event);
        assert_eq!((s.status(Purpose::AdStorage), s.source(Purpose::AdStorage)), (D, Source::Gcs));
    }

    #[test]
    fn json_forms_mp_and_event_consent_state() {
        let p = policy(ConsentConfig { cookie: Some("cmp".into()), ..Default::default() });
        let cookie = format!("cmp={}", "%7B%22ad_user_data%22%3Atrue%7D");
        let s = resolve(&p, &[("cookie", &cookie)], json!({}));
        assert_eq!(s.status(Purpose::AdUserData), G);
        let s = resolve(&p, &[], json!({"x-ga-mp2-consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}}));
        assert_eq!((s.status(Purpose::AdUserData), s.source(Purpose::AdUserData)), (G, Source::Mp));
        assert_eq!(s.status(Purpose::AdPersonalization), D);
        let s = resolve(&p, &[], json!({"consent_state": {"ad_storage": true, "analytics_storage": "denied"}}));
        assert_eq!((s.status(Purpose::AdStorage), s.status(Purpose::AnalyticsStorage)), (G, D));
    }

    #[test]
    fn malformed_signals_fall_back_never_to_granted() {
        let p = policy(ConsentConfig::default());
        let s = resolve(&p, &[("x-consent", "{not json")], json!({"x-ga-gcs": "G1?1", "x-ga-gcd": "13z3z3z2z5l1", "consent_state": "yes"}));
        for purpose in PURPOSES {
            assert_eq!(s.status(purpose), U, "{purpose:?}");
            assert!(!s.allows(purpose, false));
        }
        let s = resolve(&p, &[("x-consent", "ad_storage=maybe")], json!({}));
        assert_eq!(s.status(Purpose::AdStorage), U);
    }

    #[test]
    fn stripping_removes_personal_data_and_click_ids() {
        let p = policy(ConsentConfig { strip_keys: vec!["custom.crm_id".into()], ..Default::default() });
        let event = json!({
            "event_name": "purchase", "value": 10, "ip_override": "203.0.113.1",
            "user_data": {"email_address": "a@b.c"}, "customer_email": "a@b.c", "Phone": "+1555",
            "gclid": "abc", "custom": {"crm_id": "42", "keep": 1},
            "page_location": "https://shop.example/p?gclid=abc&fbclid=def&color=red",
            "page_referrer": "https://ads.example/?ttclid=x",
            "items": [{"item_id": "A", "buyer_email": "x@y.z"}]
        });
        assert_eq!(
            p.strip(&event),
            json!({
                "event_name": "purchase", "value": 10, "custom": {"keep": 1},
                "page_location": "https://shop.example/p?color=red",
                "page_referrer": "https://ads.example/",
                "items": [{"item_id": "A"}]
            })
        );
        assert!(p.is_click_id("_fbc") && !p.is_click_id("_ga"));
    }
}
