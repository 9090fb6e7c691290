//! Consent: resolved per event from the request's and the event's signals, then the gate that
//! decides which tags run and whether they see personal data.
//!
//! Server-side tagging must never bypass consent, so the decision is not left to templates:
//! 1. [`ConsentPolicy::resolve`] builds a [`ConsentState`]: each purpose is granted, denied or
//!    unset, with the [`Source`] that said so. Sources are tried in the operator's order
//!    (default: CMP header, consent cookie, GA4 `gcd`, GA4 `gcs`, Measurement Protocol
//!    `consent`, event `consent_state`); for each purpose the first source that says something
//!    wins. A malformed value is reported in [`Resolution::ignored`] and skipped — it falls
//!    through to the next source and finally to "unset", never to "granted".
//! 2. [`ConsentPolicy::missing`] says which of a tag's purposes are not granted (`unset` counts
//!    as granted only with `unset = "grant"`): a tag with any missing is not run at all.
//! 3. [`ConsentPolicy::minimises`]: with `ad_user_data` not granted, every tag that runs sees
//!    the event and the request with personal data removed ([`crate::personal_data`]).
//! 4. Every decision is described by an [`AuditRecord`].
//!
//! The host and the SDK's mock host both call these functions, so a template author's unit
//! test is gated exactly as production is.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_manifest::{ConsentStatus, Purpose};

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

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Header => "header",
            Source::Cookie => "cookie",
            Source::Gcd => "gcd",
            Source::Gcs => "gcs",
            Source::Mp => "Measurement Protocol consent",
            Source::Event => "consent_state",
            Source::Default => "default",
        }
    }
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
        self.states[p.index()].0
    }

    /// One purpose's source.
    pub fn source(&self, p: Purpose) -> Source {
        self.states[p.index()].1
    }

    /// Whether `p` counts as granted under the `unset` rule.
    pub fn allows(&self, p: Purpose, unset: UnsetRule) -> bool {
        match self.status(p) {
            ConsentStatus::Granted => true,
            ConsentStatus::Denied => false,
            ConsentStatus::Unset => unset == UnsetRule::Grant,
        }
    }

    /// Sets `p` unless a source already said something about it (the first source wins).
    pub fn set_if_unset(&mut self, p: Purpose, status: ConsentStatus, source: Source) {
        let slot = &mut self.states[p.index()];
        if slot.0 == ConsentStatus::Unset && status != ConsentStatus::Unset {
            *slot = (status, source);
        }
    }

    /// `{purpose: {source, status}}`, as audit records and the preview show it (its
    /// [`Serialize`] form).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The purposes in name order: how a consent state is written (the order a JSON object's keys
/// take when read back into a `serde_json` map, so the written text is canonical).
const PURPOSES_BY_NAME: [Purpose; 7] = [
    Purpose::AdPersonalization,
    Purpose::AdStorage,
    Purpose::AdUserData,
    Purpose::AnalyticsStorage,
    Purpose::FunctionalityStorage,
    Purpose::PersonalizationStorage,
    Purpose::SecurityStorage,
];

/// Written straight from the state, no map built in between: an audit record writes it once
/// per tag the event meets.
impl Serialize for ConsentState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        #[derive(Serialize)]
        struct Entry {
            source: Source,
            status: &'static str,
        }
        let mut map = serializer.serialize_map(Some(PURPOSES_BY_NAME.len()))?;
        for purpose in PURPOSES_BY_NAME {
            let (status, source) = self.states[purpose.index()];
            map.serialize_entry(purpose.name(), &Entry { source, status: status.name() })?;
        }
        map.end()
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

/// A resolved state and the signals that were ignored on the way (to be logged).
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Per purpose: status and source.
    pub state: ConsentState,
    /// Each malformed signal: which source, and why it was ignored.
    pub ignored: Vec<String>,
}

/// The consent rules of one container.
#[derive(Debug, Clone)]
pub struct ConsentPolicy {
    config: ConsentConfig,
    minimiser: crate::personal_data::Minimiser,
}

impl ConsentPolicy {
    /// The policy for a `[consent]` section.
    pub fn new(config: ConsentConfig) -> Self {
        let minimiser = crate::personal_data::Minimiser::new(&config.strip_keys, &config.strip_click_ids);
        ConsentPolicy { config, minimiser }
    }

    /// What removes personal data when `ad_user_data` is not granted.
    pub fn minimiser(&self) -> &crate::personal_data::Minimiser {
        &self.minimiser
    }

    /// Resolves one event's consent from the request's consent header and cookie (`header`,
    /// `cookie` in `[consent]`) and the event's own signals.
    pub fn resolve(&self, request: &dyn crate::request::RequestSource, event: &Value) -> Resolution {
        let header = request.header_values(&self.config.header).first().copied();
        let cookie = self
            .config
            .cookie
            .as_deref()
            .and_then(|name| crate::request::cookie_values(request.header_values("cookie"), name).into_iter().next());
        self.resolve_signals(header, cookie.as_deref(), event)
    }

    /// [`Self::resolve`] from the consent header's and cookie's values directly.
    pub fn resolve_signals(&self, header: Option<&str>, cookie: Option<&str>, event: &Value) -> Resolution {
        let mut state = ConsentState::default();
        let mut ignored = Vec::new();
        let mut apply = |state: &mut ConsentState, source: Source, decoded: PurposeMap| match decoded {
            Ok(values) => {
                for value in values {
                    match value {
                        Ok((p, s)) => state.set_if_unset(p, s, source),
                        Err(why) => ignored.push(format!("consent {} ignored: {why}", source.label())),
                    }
                }
            }
            Err(why) => ignored.push(format!("consent {} ignored: {why}", source.label())),
        };
        for &source in &self.config.sources {
            let decoded = match source {
                Source::Header => header.map(|v| parse_purpose_map(v, CookieFormat::Auto)),
                Source::Cookie => cookie.map(|v| parse_purpose_map(v, self.config.cookie_format)),
                Source::Gcd => event.get("x-ga-gcd").and_then(Value::as_str).map(|v| all_ok(decode_gcd(v))),
                Source::Gcs => event.get("x-ga-gcs").and_then(Value::as_str).map(|v| all_ok(decode_gcs(v))),
                Source::Mp => event.get("x-ga-mp2-consent").map(purpose_map_from_json),
                Source::Event => event.get("consent_state").map(purpose_map_from_json),
                Source::Default => None,
            };
            if let Some(decoded) = decoded {
                apply(&mut state, source, decoded);
            }
        }
        Resolution { state, ignored }
    }

    /// The purposes in `needed` that `state` does not grant: empty means the tag may run.
    pub fn missing<'a>(&self, state: &ConsentState, needed: &'a [Purpose]) -> Vec<&'a Purpose> {
        needed.iter().filter(|p| !state.allows(**p, self.config.unset)).collect()
    }

    /// Whether tags see the event and request with personal data removed: `ad_user_data` is
    /// not granted.
    pub fn minimises(&self, state: &ConsentState) -> bool {
        !state.allows(Purpose::AdUserData, self.config.unset)
    }
}

/// One consent decision, as written to the audit sink: enough to prove what happened to a hit.
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
    pub purposes_needed: &'a [Purpose],
    /// Every purpose's status and source.
    pub state: &'a ConsentState,
    /// `run` or `blocked`.
    pub decision: &'a str,
    /// Needed purposes that were not granted.
    pub missing: &'a [&'a Purpose],
    /// Whether personal data was removed from what the tag saw.
    pub personal_data_removed: bool,
    /// The event key paths removed (never their values); empty when nothing was removed.
    pub removed: &'a [String],
}

/// A signal's entries: each a purpose and its status, or why that entry was ignored; `Err` when
/// the whole signal is unreadable.
type PurposeMap = Result<Vec<Result<(Purpose, ConsentStatus), String>>, String>;

fn all_ok(decoded: Result<Vec<(Purpose, ConsentStatus)>, String>) -> PurposeMap {
    decoded.map(|values| values.into_iter().map(Ok).collect())
}

fn status_word(s: &str) -> Option<ConsentStatus> {
    match s.trim().trim_matches('"').to_ascii_lowercase().as_str() {
        "granted" | "true" | "1" | "yes" => Some(ConsentStatus::Granted),
        "denied" | "false" | "0" | "no" => Some(ConsentStatus::Denied),
        _ => None,
    }
}

/// Keeps the known purposes (names of other purposes are skipped); a known purpose with an
/// unreadable status is reported and skipped, the signal's other entries still apply.
fn known(entries: Vec<(String, Option<ConsentStatus>)>) -> PurposeMap {
    Ok(entries
        .into_iter()
        .filter_map(|(name, status)| match (Purpose::named(&name), status) {
            (Some(p), Some(s)) => Some(Ok((p, s))),
            (None, _) => None,
            (Some(_), None) => Some(Err(format!("value for {name} is not granted/denied"))),
        })
        .collect())
}

fn purpose_map_from_json(v: &Value) -> PurposeMap {
    let Value::Object(map) = v else { return Err("not a JSON object".into()) };
    known(
        map.iter()
            .map(|(k, v)| {
                let status = match v {
                    Value::Bool(true) => Some(ConsentStatus::Granted),
                    Value::Bool(false) => Some(ConsentStatus::Denied),
                    Value::String(s) => status_word(s),
                    _ => None,
                };
                (k.to_ascii_lowercase(), status)
            })
            .collect(),
    )
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
    let entries = text
        .split([',', ';', '&', '|'])
        .filter(|e| !e.trim().is_empty())
        .map(|entry| match entry.split_once(['=', ':']) {
            Some((k, v)) => Ok((k.trim().to_ascii_lowercase(), status_word(v))),
            None => Err(format!("entry {entry:?} is not purpose=status")),
        })
        .collect::<Result<_, _>>()?;
    known(entries)
}

/// `gcs` = `G1` + ad_storage + analytics_storage digits (`1` granted, `0` denied, `-` unset).
pub fn decode_gcs(gcs: &str) -> Result<Vec<(Purpose, ConsentStatus)>, String> {
    let b = gcs.as_bytes();
    if b.len() != 4 || !b.starts_with(b"G1") {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_state_is_written_with_its_purposes_and_fields_in_name_order() {
        let mut names: Vec<&str> = Purpose::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        assert_eq!(PURPOSES_BY_NAME.map(|p| p.name()).to_vec(), names);
        let mut state = ConsentState::default();
        state.states[Purpose::AdStorage.index()] = (ConsentStatus::Granted, Source::Gcd);
        state.states[Purpose::AnalyticsStorage.index()] = (ConsentStatus::Denied, Source::Cookie);
        let text = serde_json::to_string(&state).expect("serialisable");
        assert!(
            text.starts_with(r#"{"ad_personalization":{"source":"default","status":"unset"},"ad_storage":{"source":"gcd","status":"granted"},"#),
            "{text}"
        );
        assert!(text.contains(r#""analytics_storage":{"source":"cookie","status":"denied"}"#), "{text}");
        // What it writes is what a map read back from it writes: canonical.
        assert_eq!(serde_json::to_string(&state.to_json()).expect("serialisable"), text);
    }

    fn policy(config: ConsentConfig) -> ConsentPolicy {
        ConsentPolicy::new(config)
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
        assert!(decode_gcs("G1x1").is_err() && decode_gcs("G11").is_err() && decode_gcs("Gé1").is_err());
    }

    #[test]
    fn sources_apply_in_the_operators_order_with_their_names() {
        let p = policy(ConsentConfig { cookie: Some("cmp".into()), ..Default::default() });
        let event = json!({"x-ga-gcs": "G100", "x-ga-gcd": "13p3p3p2p5l1"});
        let s = p.resolve_signals(Some("ad_storage=granted"), Some("analytics_storage=granted"), &event).state;
        assert_eq!((s.status(Purpose::AdStorage), s.source(Purpose::AdStorage)), (G, Source::Header));
        assert_eq!((s.status(Purpose::AnalyticsStorage), s.source(Purpose::AnalyticsStorage)), (G, Source::Cookie));
        assert_eq!((s.status(Purpose::AdUserData), s.source(Purpose::AdUserData)), (D, Source::Gcd));
        assert_eq!((s.status(Purpose::SecurityStorage), s.source(Purpose::SecurityStorage)), (U, Source::Default));

        let hits_first = policy(ConsentConfig { sources: vec![Source::Gcs, Source::Header], ..Default::default() });
        let s = hits_first.resolve_signals(Some("ad_storage=granted"), None, &event).state;
        assert_eq!((s.status(Purpose::AdStorage), s.source(Purpose::AdStorage)), (D, Source::Gcs));
    }

    #[test]
    fn json_forms_mp_and_event_consent_state() {
        let p = policy(ConsentConfig::default());
        let s = p.resolve_signals(None, None, &json!({"x-ga-mp2-consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}})).state;
        assert_eq!((s.status(Purpose::AdUserData), s.source(Purpose::AdUserData)), (G, Source::Mp));
        assert_eq!(s.status(Purpose::AdPersonalization), D);
        let s = p.resolve_signals(None, None, &json!({"consent_state": {"ad_storage": true, "analytics_storage": "denied"}})).state;
        assert_eq!((s.status(Purpose::AdStorage), s.status(Purpose::AnalyticsStorage)), (G, D));
        let s = p.resolve_signals(Some(r#"{"ad_user_data": true}"#), None, &json!({})).state;
        assert_eq!(s.status(Purpose::AdUserData), G);
    }

    #[test]
    fn malformed_signals_fall_back_never_to_granted() {
        let p = policy(ConsentConfig::default());
        let r = p.resolve_signals(Some("{not json"), None, &json!({"x-ga-gcs": "G1?1", "x-ga-gcd": "13z3z3z2z5l1", "consent_state": "yes"}));
        for purpose in Purpose::ALL {
            assert_eq!(r.state.status(purpose), U, "{purpose:?}");
            assert!(!r.state.allows(purpose, UnsetRule::Deny));
        }
        assert_eq!(r.ignored.len(), 4, "{:?}", r.ignored);
        let r = p.resolve_signals(Some("ad_storage=maybe,analytics_storage=granted"), None, &json!({}));
        assert_eq!(r.state.status(Purpose::AdStorage), U);
        assert_eq!(r.state.status(Purpose::AnalyticsStorage), G, "the signal's readable entries still apply");
        assert_eq!(r.ignored.len(), 1, "{:?}", r.ignored);
    }

    #[test]
    fn the_gate_names_what_is_missing_and_unset_follows_the_rule() {
        let needed = [Purpose::AdStorage, Purpose::AdUserData];
        let deny = policy(ConsentConfig::default());
        let s = deny.resolve_signals(Some("ad_storage=granted"), None, &json!({})).state;
        assert_eq!(deny.missing(&s, &needed), [&Purpose::AdUserData]);
        assert!(deny.minimises(&s));
        let grant = policy(ConsentConfig { unset: UnsetRule::Grant, ..Default::default() });
        assert!(grant.missing(&s, &needed).is_empty());
        assert!(!grant.minimises(&s));
        let s = grant.resolve_signals(Some("ad_user_data=denied"), None, &json!({})).state;
        assert!(grant.minimises(&s));
    }
}
