//! The effective grant (declared ∩ granted) and the checks every host call goes through.
//!
//! A call is allowed only when both the template's declaration and the operator's grant allow
//! it. Checking the two sets separately at call time (rather than precomputing an intersection)
//! keeps the rule obviously right for wildcards and URL patterns, and lets a denial say *which*
//! side refused, which is what the person fixing it needs to know.

use url::Url;

use crate::{DeclarationError, Kind, PermissionSet, UrlPattern};

/// Request headers that carry the visitor's credentials. A `"*"` in `request_headers` does not
/// cover them, on either side: a template that reads them must name them in its manifest and
/// the operator must name them in the grant, so granting "any header" never hands over a
/// session cookie or a bearer token by accident.
pub const CREDENTIAL_HEADERS: &[&str] = &["cookie", "authorization", "proxy-authorization"];

/// How much of a name chosen by the template a [`Scope`] keeps (characters). A denial is
/// logged, traced and remembered for the once-per-template warning, so what it holds must not
/// grow with what the template asked for: a 20 MiB header name is kept as its first 128
/// characters and a count.
pub const MAX_NAME_SHOWN: usize = 128;

/// A name a template chose, as a message shows it: cut to `max_chars` characters (never
/// inside a character), saying how long it was when cut. Denials use [`MAX_NAME_SHOWN`]; the
/// response rules' errors use it too, so no message grows with what a template asked for.
pub fn shorten(name: &str, max_chars: usize) -> String {
    match name.char_indices().nth(max_chars) {
        None => name.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", name.get(..cut).unwrap_or_default(), name.len()),
    }
}

fn bounded(name: &str) -> String {
    shorten(name, MAX_NAME_SHOWN)
}

/// One thing a template can ask for; what a [`Denial`] names. Names the template chose are
/// kept to [`MAX_NAME_SHOWN`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// A request header (lower-cased name).
    RequestHeader(String),
    /// The query string.
    Query,
    /// A request cookie.
    Cookie(String),
    /// The request body.
    Body,
    /// The visitor's IP address.
    RemoteAddress,
    /// The consent state.
    Consent,
    /// One event-data key path.
    EventData(String),
    /// The whole event (`event.all`).
    AllEventData,
    /// A response header.
    ResponseHeader(String),
    /// A response cookie.
    ResponseCookie(String),
    /// An outbound URL, reduced to scheme, host, port and path (the query may hold secrets).
    Outbound(String),
    /// Per-template storage.
    Storage,
    /// Log lines.
    Logging,
    /// The response status (the claiming client's alone).
    ResponseStatus,
    /// The response body (the claiming client's alone).
    ResponseBody,
}

impl Scope {
    /// What a template is told was refused, as data: the permission as the manifest and the
    /// grant spell it (`request_headers`, `cookies`, `event_data`, `outbound`, ...) and the
    /// name under it (a header, cookie or key; a URL's origin; empty for a yes/no one). The
    /// host and the mock host both send these in the WIT `denial`.
    pub fn permission(&self) -> (&'static str, String) {
        match self {
            Scope::RequestHeader(n) => ("request_headers", n.clone()),
            Scope::Cookie(n) => ("cookies", n.clone()),
            Scope::EventData(k) => ("event_data", k.clone()),
            Scope::AllEventData => ("event_data", "*".into()),
            Scope::ResponseHeader(n) => ("response_headers", n.clone()),
            Scope::ResponseCookie(n) => ("response_cookies", n.clone()),
            Scope::Outbound(u) => ("outbound", origin_of(u)),
            Scope::Query => ("query", String::new()),
            Scope::Body => ("body", String::new()),
            Scope::RemoteAddress => ("remote_address", String::new()),
            Scope::Consent => ("consent", String::new()),
            Scope::Storage => ("storage", String::new()),
            Scope::Logging => ("logging", String::new()),
            Scope::ResponseStatus => ("response_status", String::new()),
            Scope::ResponseBody => ("response_body", String::new()),
        }
    }

    /// The grant key that controls this scope, and the value an operator would add.
    fn grant_hint(&self) -> (&'static str, String) {
        match self {
            Scope::RequestHeader(n) => ("request_headers", format!("{n:?}")),
            Scope::Query => ("query", "true".into()),
            Scope::Cookie(n) => ("cookies", format!("{n:?}")),
            Scope::Body => ("body", "true".into()),
            Scope::RemoteAddress => ("remote_address", "true".into()),
            Scope::Consent => ("consent", "true".into()),
            Scope::EventData(k) => ("event_data", format!("{k:?}")),
            Scope::AllEventData => ("event_data", "\"*\"".into()),
            Scope::ResponseHeader(n) => ("response_headers", format!("{n:?}")),
            Scope::ResponseCookie(n) => ("response_cookies", format!("{n:?}")),
            Scope::Outbound(u) => ("outbound", "a pattern such as \"".to_string() + &origin_of(u) + "/\""),
            Scope::Storage => ("storage", "true".into()),
            Scope::Logging => ("logging", "true".into()),
            Scope::ResponseStatus | Scope::ResponseBody => ("", String::new()),
        }
    }
}

fn origin_of(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => url.to_string(),
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::RequestHeader(n) => write!(f, "request header {n:?}"),
            Scope::Query => f.write_str("the query string"),
            Scope::Cookie(n) => write!(f, "cookie {n:?}"),
            Scope::Body => f.write_str("the request body"),
            Scope::RemoteAddress => f.write_str("the remote address"),
            Scope::Consent => f.write_str("the consent state"),
            Scope::EventData(k) => write!(f, "event data {k:?}"),
            Scope::AllEventData => f.write_str("all event data"),
            Scope::ResponseHeader(n) => write!(f, "response header {n:?}"),
            Scope::ResponseCookie(n) => write!(f, "response cookie {n:?}"),
            Scope::Outbound(u) => write!(f, "outbound request to {u}"),
            Scope::Storage => f.write_str("template storage"),
            Scope::Logging => f.write_str("logging"),
            Scope::ResponseStatus => f.write_str("the response status"),
            Scope::ResponseBody => f.write_str("the response body"),
        }
    }
}

/// Which side refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialCause {
    /// The template did not declare it, so no grant can allow it.
    NotDeclared,
    /// The template declared it but the operator did not grant it.
    NotGranted,
    /// Only the claiming client may do this; tags cannot, whatever they are granted.
    ClientOnly,
}

/// A refused host call: what was asked for and which side refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was asked for.
    pub scope: Scope,
    /// Which side refused.
    pub cause: DenialCause,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, value) = self.scope.grant_hint();
        let credential = match &self.scope {
            Scope::RequestHeader(n) if CREDENTIAL_HEADERS.contains(&n.as_str()) => " by name (\"*\" does not cover credential headers)",
            _ => "",
        };
        match self.cause {
            DenialCause::NotGranted => write!(
                f,
                "{} is not granted: add {value} to `{key}`{credential} in this template's grants in the container config",
                self.scope
            ),
            DenialCause::NotDeclared => write!(
                f,
                "{} is not declared by the template (its manifest must list {value} under `{key}`{credential})",
                self.scope
            ),
            DenialCause::ClientOnly => {
                write!(f, "{} belongs to the claiming client: tags may only add headers and cookies", self.scope)
            }
        }
    }
}

impl std::error::Error for Denial {}

/// An event-data key pattern: `*` (everything), `user_data` (that key and everything under it),
/// `items.*` (everything under `items`), `x-ga-*` (keys starting with `x-ga-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    segments: Vec<String>,
}

impl KeyPattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(pattern: &str) -> Result<Self, &'static str> {
        if pattern == "*" {
            return Ok(KeyPattern { segments: Vec::new() });
        }
        let segments: Vec<String> = pattern.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err("key patterns are dotted paths without empty parts, e.g. \"user_data.email\"");
        }
        if segments.iter().any(|s| s.trim_end_matches('*').contains('*')) {
            return Err("'*' may only end a part of a key pattern, e.g. \"x-ga-*\" or \"items.*\"");
        }
        Ok(KeyPattern { segments })
    }

    /// Whether the dotted `path` is covered. A pattern covers the subtree below what it names.
    pub fn covers(&self, path: &str) -> bool {
        let mut parts = path.split('.');
        for seg in &self.segments {
            let Some(part) = parts.next() else { return false };
            let ok = match seg.strip_suffix('*') {
                Some(prefix) => part.starts_with(prefix),
                None => part == seg,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Whether this is the `*` pattern.
    pub fn is_everything(&self) -> bool {
        self.segments.is_empty()
    }
}

/// One side (declared or granted), pre-parsed for fast checks.
#[derive(Debug, Clone)]
struct Side {
    set: PermissionSet,
    outbound: Vec<UrlPattern>,
    keys: Vec<KeyPattern>,
}

impl Side {
    fn new(set: &PermissionSet) -> Result<Self, DeclarationError> {
        set.validate()?;
        let mut set = set.clone();
        for h in set.request_headers.iter_mut().chain(set.response_headers.iter_mut()) {
            h.make_ascii_lowercase();
        }
        let outbound = set.outbound.iter().map(|p| UrlPattern::parse(p)).collect::<Result<_, _>>();
        let keys = set.event_data.iter().map(|k| KeyPattern::parse(k)).collect::<Result<_, _>>();
        // Both were validated above; an error here would be a bug in `validate`.
        Ok(Side {
            outbound: outbound.unwrap_or_default(),
            keys: keys.unwrap_or_default(),
            set,
        })
    }
}

fn has(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == "*" || n == name)
}

/// [`has`] for request headers: credential headers only by name.
fn has_header(list: &[String], name: &str) -> bool {
    if CREDENTIAL_HEADERS.contains(&name) { list.iter().any(|n| n == name) } else { has(list, name) }
}

/// Declared ∩ granted, with one `check_*` per host capability.
#[derive(Debug, Clone)]
pub struct EffectiveGrant {
    kind: Kind,
    declared: Side,
    granted: Side,
}

impl EffectiveGrant {
    /// Combines a template's declaration with the operator's grant. Fails if either set has an
    /// entry that does not parse.
    pub fn new(kind: Kind, declared: &PermissionSet, granted: &PermissionSet) -> Result<Self, DeclarationError> {
        Ok(EffectiveGrant { kind, declared: Side::new(declared)?, granted: Side::new(granted)? })
    }

    /// The template's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn client_only(&self, scope: Scope) -> Result<(), Denial> {
        match self.kind {
            Kind::Client => Ok(()),
            Kind::Tag => Err(Denial { scope, cause: DenialCause::ClientOnly }),
        }
    }

    /// Setting the response status.
    pub fn check_response_status(&self) -> Result<(), Denial> {
        self.client_only(Scope::ResponseStatus)
    }

    /// Setting the response body.
    pub fn check_response_body(&self) -> Result<(), Denial> {
        self.client_only(Scope::ResponseBody)
    }

    /// `scope` is built only for a denial: an allowed call allocates nothing.
    fn check(&self, scope: impl FnOnce() -> Scope, allows: impl Fn(&Side) -> bool) -> Result<(), Denial> {
        if !allows(&self.declared) {
            Err(Denial { scope: scope(), cause: DenialCause::NotDeclared })
        } else if !allows(&self.granted) {
            Err(Denial { scope: scope(), cause: DenialCause::NotGranted })
        } else {
            Ok(())
        }
    }

    /// Reading a request header. [`CREDENTIAL_HEADERS`] must be named on both sides.
    pub fn check_request_header(&self, name: &str) -> Result<(), Denial> {
        let name = name.to_ascii_lowercase();
        self.check(|| Scope::RequestHeader(bounded(&name)), |s| has_header(&s.set.request_headers, &name))
    }

    /// Reading the query string.
    pub fn check_query(&self) -> Result<(), Denial> {
        self.check(|| Scope::Query, |s| s.set.query)
    }

    /// Reading a request cookie.
    pub fn check_cookie(&self, name: &str) -> Result<(), Denial> {
        self.check(|| Scope::Cookie(bounded(name)), |s| has(&s.set.cookies, name))
    }

    /// Reading the request body.
    pub fn check_body(&self) -> Result<(), Denial> {
        self.check(|| Scope::Body, |s| s.set.body)
    }

    /// Reading the visitor's IP address.
    pub fn check_remote_address(&self) -> Result<(), Denial> {
        self.check(|| Scope::RemoteAddress, |s| s.set.remote_address)
    }

    /// Reading the consent state.
    pub fn check_consent(&self) -> Result<(), Denial> {
        self.check(|| Scope::Consent, |s| s.set.consent)
    }

    /// Reading one event-data key path.
    pub fn check_event_key(&self, path: &str) -> Result<(), Denial> {
        self.check(|| Scope::EventData(bounded(path)), |s| s.keys.iter().any(|k| k.covers(path)))
    }

    /// Reading the whole event.
    pub fn check_all_event_data(&self) -> Result<(), Denial> {
        self.check(|| Scope::AllEventData, |s| s.keys.iter().any(KeyPattern::is_everything))
    }

    /// The event as the host queues it for a tag (one without `fire`, or after it): whole with
    /// `event_data = ["*"]`, else the top-level keys the grant covers — what the tag's `fire`
    /// would have read key by key — so a narrower grant sends less, not nothing.
    pub fn visible_event(&self, event: &serde_json::Map<String, serde_json::Value>) -> serde_json::Map<String, serde_json::Value> {
        if self.check_all_event_data().is_ok() {
            return event.clone();
        }
        event.iter().filter(|(key, _)| self.check_event_key(key).is_ok()).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Setting a response header.
    pub fn check_response_header(&self, name: &str) -> Result<(), Denial> {
        let name = name.to_ascii_lowercase();
        self.check(|| Scope::ResponseHeader(bounded(&name)), |s| has(&s.set.response_headers, &name))
    }

    /// Setting a response cookie.
    pub fn check_response_cookie(&self, name: &str) -> Result<(), Denial> {
        self.check(|| Scope::ResponseCookie(bounded(name)), |s| has(&s.set.response_cookies, name))
    }

    /// Sending a request to `url`.
    pub fn check_outbound(&self, url: &Url) -> Result<(), Denial> {
        let shown = || {
            let mut shown = url.clone();
            shown.set_query(None);
            shown.set_fragment(None);
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            Scope::Outbound(bounded(shown.as_str()))
        };
        self.check(shown, |s| s.outbound.iter().any(|p| p.matches(url)))
    }

    /// Using template storage.
    pub fn check_storage(&self) -> Result<(), Denial> {
        self.check(|| Scope::Storage, |s| s.set.storage)
    }

    /// Writing log lines.
    pub fn check_logging(&self) -> Result<(), Denial> {
        self.check(|| Scope::Logging, |s| s.set.logging)
    }

    /// What `sluice check` should point out about this grant: a `"*"` of request headers that
    /// leaves out the credential headers.
    pub fn notes(&self) -> Vec<String> {
        let (d, g) = (&self.declared.set.request_headers, &self.granted.set.request_headers);
        if !(has(d, "*") && has(g, "*")) {
            return Vec::new();
        }
        let left_out: Vec<&str> = CREDENTIAL_HEADERS.iter().copied().filter(|h| !(has_header(d, h) && has_header(g, h))).collect();
        if left_out.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "request_headers \"*\" does not include {}: a template reads credential headers only when its manifest and the grant name them",
            left_out.join(", ")
        )]
    }

    /// Each permission the template declares that the operator's grant leaves out, as a
    /// sentence with the grant line that would give it (`sluice check` warns with these). A
    /// narrowed pattern is not reported: declaring `outbound = ["*"]` and being granted
    /// `["https://vendor.example/"]` is the intended use; being granted nothing is not.
    pub fn ungranted(&self) -> Vec<String> {
        let (d, g) = (&self.declared.set, &self.granted.set);
        let mut out = Vec::new();
        for (name, declared, granted) in [
            ("query", d.query, g.query),
            ("body", d.body, g.body),
            ("remote_address", d.remote_address, g.remote_address),
            ("consent", d.consent, g.consent),
            ("storage", d.storage, g.storage),
            ("logging", d.logging, g.logging),
        ] {
            if declared && !granted {
                out.push(format!("declares `{name}` and the grant leaves it out: add {name} = true to its grants"));
            }
        }
        let mut list = |field: &str, declared: &[String], granted: &[String], covered: &dyn Fn(&str) -> bool| {
            let missing: Vec<&String> = declared.iter().filter(|n| if *n == "*" { granted.is_empty() } else { !covered(n) }).collect();
            if missing.is_empty() {
                return;
            }
            let mut wanted: Vec<&String> = granted.iter().chain(missing.iter().copied().filter(|n| *n != "*")).collect();
            wanted.dedup();
            let shown: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
            out.push(if wanted.is_empty() {
                format!("declares {field} [{}] and is granted none: add {field} = [...] to its grants, naming what it needs", shown.join(", "))
            } else {
                let wanted: Vec<String> = wanted.iter().map(|n| format!("{n:?}")).collect();
                format!("declares {field} {} that the grant leaves out: grant {field} = [{}]", shown.join(", "), wanted.join(", "))
            });
        };
        list("request_headers", &d.request_headers, &g.request_headers, &|n| has_header(&g.request_headers, n));
        list("cookies", &d.cookies, &g.cookies, &|n| has(&g.cookies, n));
        list("event_data", &d.event_data, &g.event_data, &|n| self.granted.keys.iter().any(|k| k.covers(n.trim_end_matches(".*"))));
        list("response_headers", &d.response_headers, &g.response_headers, &|n| has(&g.response_headers, n));
        list("response_cookies", &d.response_cookies, &g.response_cookies, &|n| has(&g.response_cookies, n));
        list("outbound", &d.outbound, &g.outbound, &|p| has(&g.outbound, p));
        out
    }

    /// The operator's outbound grant, as written (`sluice check` holds each against the
    /// `[outbound]` rules).
    pub fn granted_outbound(&self) -> &[String] {
        &self.granted.set.outbound
    }

    /// What the template effectively gets, for display (`sluice check`). Booleans and names are
    /// exact; for patterns it lists each side's entries the other side covers or shares, since
    /// pattern-against-pattern containment is decided per call.
    pub fn summary(&self) -> PermissionSet {
        let (d, g) = (&self.declared.set, &self.granted.set);
        let names_by = |a: &[String], b: &[String], has: fn(&[String], &str) -> bool| -> Vec<String> {
            let mut out: Vec<String> = a.iter().filter(|n| has(b, n)).cloned().collect();
            for n in b {
                if has(a, n) && !out.contains(n) {
                    out.push(n.clone());
                }
            }
            out.retain(|n| n != "*" || (has(a, "*") && has(b, "*")));
            out
        };
        let names = |a: &[String], b: &[String]| names_by(a, b, has);
        let keys = |a: &Side, b: &Side| -> Vec<String> {
            let mut out: Vec<String> = a
                .set
                .event_data
                .iter()
                .zip(&a.keys)
                .filter(|(raw, _)| b.keys.iter().any(|k| k.covers(raw.trim_end_matches(".*"))))
                .map(|(raw, _)| raw.clone())
                .collect();
            for raw in &b.set.event_data {
                if a.keys.iter().any(|k| k.covers(raw.trim_end_matches(".*"))) && !out.contains(raw) {
                    out.push(raw.clone());
                }
            }
            out.retain(|k| k != "*" || (d.event_data.contains(k) && g.event_data.contains(k)));
            out
        };
        let urls = if has(&d.outbound, "*") {
            g.outbound.clone()
        } else if has(&g.outbound, "*") {
            d.outbound.clone()
        } else {
            d.outbound.iter().filter(|p| g.outbound.contains(p)).cloned().collect()
        };
        PermissionSet {
            request_headers: names_by(&d.request_headers, &g.request_headers, has_header),
            query: d.query && g.query,
            cookies: names(&d.cookies, &g.cookies),
            body: d.body && g.body,
            remote_address: d.remote_address && g.remote_address,
            consent: d.consent && g.consent,
            event_data: keys(&self.declared, &self.granted),
            response_headers: names(&d.response_headers, &g.response_headers),
            response_cookies: names(&d.response_cookies, &g.response_cookies),
            outbound: urls,
            storage: d.storage && g.storage,
            logging: d.logging && g.logging,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(declared: PermissionSet, granted: PermissionSet) -> EffectiveGrant {
        EffectiveGrant::new(Kind::Tag, &declared, &granted).expect("valid sets")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_declared_permission_the_grant_leaves_out_is_named_with_the_grant_to_write() {
        let declared = PermissionSet {
            query: true,
            cookies: strings(&["_fbp", "_fbc"]),
            event_data: strings(&["*"]),
            outbound: strings(&["*"]),
            ..Default::default()
        };
        let granted = PermissionSet { cookies: strings(&["_fbp"]), event_data: strings(&["event_name"]), ..Default::default() };
        let notes = grant(declared.clone(), granted).ungranted();
        assert!(notes.iter().any(|n| n.contains("`query`") && n.contains("query = true")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("cookies \"_fbc\"") && n.contains(r#"cookies = ["_fbp", "_fbc"]"#)), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains(r#"outbound ["*"] and is granted none"#)), "{notes:?}");
        assert!(!notes.iter().any(|n| n.contains("event_data")), "a narrowed \"*\" is the intended use: {notes:?}");
        assert_eq!(notes.len(), 3, "{notes:?}");
        let everything = PermissionSet { outbound: strings(&["https://vendor.example/"]), cookies: strings(&["*"]), ..declared.clone() };
        let everything = PermissionSet { event_data: strings(&["*"]), ..everything };
        assert!(grant(declared, everything).ungranted().is_empty());
    }

    #[test]
    fn a_wildcard_of_request_headers_leaves_out_the_credential_headers() {
        let any = PermissionSet { request_headers: strings(&["*"]), ..Default::default() };
        let g = grant(any.clone(), any.clone());
        assert!(g.check_request_header("user-agent").is_ok());
        for credential in ["cookie", "Authorization", "proxy-authorization"] {
            let d = g.check_request_header(credential).expect_err(credential);
            assert_eq!(d.cause, DenialCause::NotDeclared, "{credential}");
            assert!(d.to_string().contains("by name (\"*\" does not cover credential headers)"), "{d}");
        }
        let notes = g.notes();
        assert!(notes.len() == 1 && notes[0].contains("cookie, authorization, proxy-authorization"), "{notes:?}");
        assert!(g.summary().request_headers == ["*"], "the summary does not claim cookie");

        // Named on both sides, it is granted; named on one side only, it is not.
        let named = PermissionSet { request_headers: strings(&["*", "cookie"]), ..Default::default() };
        assert!(grant(named.clone(), named.clone()).check_request_header("cookie").is_ok());
        let d = grant(named.clone(), any.clone()).check_request_header("cookie").expect_err("grant is only *");
        assert_eq!(d.cause, DenialCause::NotGranted);
        assert!(d.to_string().contains("add \"cookie\" to `request_headers` by name"), "{d}");
        let notes = grant(named.clone(), named.clone()).notes();
        assert!(!notes[0].contains("cookie") && notes[0].contains("authorization"), "{notes:?}");
        assert_eq!(grant(named.clone(), named).summary().request_headers, ["*", "cookie"]);
    }

    #[test]
    fn a_denial_keeps_a_bounded_part_of_the_name_the_template_chose() {
        let g = grant(PermissionSet::default(), PermissionSet::default());
        let huge = "é".repeat(10 << 20);
        for denial in [
            g.check_request_header(&huge).expect_err("header"),
            g.check_cookie(&huge).expect_err("cookie"),
            g.check_event_key(&huge).expect_err("event key"),
            g.check_response_header(&huge).expect_err("response header"),
            g.check_response_cookie(&huge).expect_err("response cookie"),
            g.check_outbound(&Url::parse(&format!("https://example.com/{huge}")).expect("url")).expect_err("url"),
        ] {
            let text = denial.to_string();
            assert!(text.len() < 1024, "{} bytes: {}", text.len(), &text[..200]);
            assert!(text.contains("bytes in all"), "it says the name was cut: {text}");
        }
        let short = g.check_request_header("x-custom").expect_err("header").to_string();
        assert!(short.starts_with("request header \"x-custom\" is not declared"), "{short}");
    }

    #[test]
    fn a_call_needs_both_declaration_and_grant() {
        let g = grant(
            PermissionSet { request_headers: strings(&["User-Agent", "referer"]), ..Default::default() },
            PermissionSet { request_headers: strings(&["user-agent", "authorization"]), ..Default::default() },
        );
        assert!(g.check_request_header("USER-AGENT").is_ok());
        let d = g.check_request_header("referer").unwrap_err();
        assert_eq!(d.cause, DenialCause::NotGranted);
        assert!(d.to_string().contains("add \"referer\" to `request_headers`"), "{d}");
        let d = g.check_request_header("authorization").unwrap_err();
        assert_eq!(d.cause, DenialCause::NotDeclared);
    }

    #[test]
    fn wildcards_on_either_side() {
        let g = grant(
            PermissionSet { cookies: strings(&["*"]), outbound: strings(&["*"]), ..Default::default() },
            PermissionSet {
                cookies: strings(&["_fbp"]),
                outbound: strings(&["https://hooks.example.com/"]),
                ..Default::default()
            },
        );
        assert!(g.check_cookie("_fbp").is_ok());
        assert!(g.check_cookie("_ga").is_err());
        let ok = Url::parse("https://hooks.example.com/a?token=secret").expect("url");
        assert!(g.check_outbound(&ok).is_ok());
        let bad = Url::parse("https://evil.example.net/x?token=secret").expect("url");
        let d = g.check_outbound(&bad).unwrap_err();
        assert!(!d.to_string().contains("secret"), "query must not be echoed: {d}");
        assert!(d.to_string().contains("https://evil.example.net/x"), "{d}");
        assert_eq!(g.summary().outbound, strings(&["https://hooks.example.com/"]));
        assert_eq!(g.summary().cookies, strings(&["_fbp"]));
    }

    #[test]
    fn a_queued_event_holds_the_top_level_keys_the_grant_covers() {
        let event = serde_json::json!({"event_name": "purchase", "x-ga-gcs": "G111", "user_data": {"email": "a@b.c"}, "items": []});
        let event = event.as_object().unwrap();
        let everything = grant(PermissionSet { event_data: strings(&["*"]), ..Default::default() }, PermissionSet { event_data: strings(&["*"]), ..Default::default() });
        assert_eq!(&everything.visible_event(event), event);
        let narrow = grant(
            PermissionSet { event_data: strings(&["*"]), ..Default::default() },
            PermissionSet { event_data: strings(&["event_name", "x-ga-*", "user_data.email", "items.*"]), ..Default::default() },
        );
        let seen = narrow.visible_event(event);
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["event_name", "x-ga-gcs"], "user_data and items are granted only in part: left out");
    }

    #[test]
    fn event_key_patterns_cover_subtrees() {
        let g = grant(
            PermissionSet { event_data: strings(&["*"]), ..Default::default() },
            PermissionSet { event_data: strings(&["items.*", "x-ga-*", "user_data"]), ..Default::default() },
        );
        assert!(g.check_event_key("items.0.item_id").is_ok());
        assert!(g.check_event_key("x-ga-gcs").is_ok());
        assert!(g.check_event_key("user_data.email_address").is_ok());
        assert!(g.check_event_key("ip_override").is_err());
        assert!(g.check_event_key("items").is_err(), "items.* covers what is under items, not items itself");
        assert!(g.check_all_event_data().is_err());
        assert_eq!(g.summary().event_data, strings(&["items.*", "x-ga-*", "user_data"]));
    }

    #[test]
    fn status_and_body_belong_to_the_client() {
        let all = PermissionSet { response_headers: strings(&["*"]), ..Default::default() };
        let tag = grant(all.clone(), all.clone());
        let d = tag.check_response_body().unwrap_err();
        assert_eq!(d.cause, DenialCause::ClientOnly);
        assert!(tag.check_response_header("x-anything").is_ok());
        let client = EffectiveGrant::new(Kind::Client, &all, &all).expect("valid");
        assert!(client.check_response_status().is_ok() && client.check_response_body().is_ok());
    }
}
