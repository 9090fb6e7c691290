//! Personal data, recognised by what it is: by key **and** by value, everywhere a tag can read it.
//!
//! When the visitor has not granted `ad_user_data` (Google Consent Mode v2), no tag may see
//! personal data. A [`Minimiser`] removes it from the event ([`Minimiser::event`]), from URLs
//! ([`Minimiser::url`]), query strings ([`Minimiser::query`], [`Minimiser::query_param`]),
//! request headers ([`Minimiser::header`]), cookies ([`Minimiser::cookie`]) and request bodies
//! ([`Minimiser::body`]). The rules below are the whole contract.
//!
//! # By key
//!
//! Keys are compared ASCII case-insensitively. A key's *parts* are what lies between the
//! separators `-`, `_`, `.`, `[`, `]`; its *last segment* is what follows its last `.`, `-` or
//! `[` (a trailing `]` dropped: `ep.em`, `ud[em]` and `x-ga-mp2-em` all end in `em`).
//! A key is personal data, and its whole value (object, array or scalar) is removed, when:
//! 1. it **contains** `email`, `e_mail`, `e-mail` or `phone` (`customer_email`, `sha256_phone_number`);
//! 2. one of [`KEY_PARTS`] occurs in it **as whole parts** (`user_data`, `ip`, `uip`,
//!    `ip_override`, `client_ip_address`, `first_name`...: `x-ga-system_properties.uip`,
//!    `_uip`, `x-ga-mp2-user_data`, but not `zip` or `tip`);
//! 3. its whole key or its last segment **equals** one of [`KEY_NAMES`]: the short names vendors
//!    give hashed identifiers (Meta `em`, `ph`, `fn`, `ln`, `db`, `ge`, `ct`, `st`, `zp`,
//!    `external_id`, the pixel's `ud`/`udff`; TikTok `external_id`). Two letters are too short to
//!    match as any part (`page_st_count` is not a state), so these match only as the whole key or
//!    its last segment, but at any depth, not only inside `user_data`;
//! 4. it is a click id: it equals one of [`CLICK_IDS`] or a configured extra click id, or ends
//!    with one as a whole part (`x-ga-mp2-gclid`, `ep.gclid`, `x-ga-mp2-gbraid`), or starts with
//!    `_gac_` (GA's per-property Google Ads cookie, which holds a gclid);
//! 5. its dotted path from the root equals a configured `strip_keys` entry, segment by segment
//!    (ASCII case-insensitive, `*` matches any one segment, array indices are segments:
//!    `custom.crm_id`, `items.*.buyer_id`). In query strings a `strip_keys` entry matches a
//!    parameter name whole, and an entry without dots also matches a name's last `.` segment
//!    (`crm_id` hides `ep.crm_id`).
//!
//! A bare digest is **not** personal data by value: a 64-hex SHA-256 under `transaction_hash`
//! cannot be told from any other hash, so only the key names above remove hashed identifiers.
//!
//! # By value
//!
//! Every string at any depth (object values, array elements, object keys themselves) is checked
//! by [`holds_personal_data`]; a string with `%XX` escapes is checked as written and once
//! percent-decoded. It holds personal data if, anywhere in it, there is:
//! - **an email**: `local@domain.tld`, where `@` may also be written `%40` or `%2540`, the local
//!   part is one or more of `[A-Za-z0-9._%+-]`, the domain is `[A-Za-z0-9.-]` starting with a
//!   letter or digit, contains a dot, and ends (trailing dots aside) in a TLD of two or more ASCII
//!   letters. (`logo@2x.png` matches too: a deliberate false positive.)
//! - **an IPv4 address**: a maximal run of digits and dots, outer dots trimmed, that parses as
//!   [`std::net::Ipv4Addr`] (four dotted decimal parts, no leading zeros), and is not glued to a
//!   letter, digit or `_` on either side (`GA1.1.111.222`, the `_ga` cookie's client id, and
//!   `v1.2.3.4` do not match). Free-standing version strings such as `1.2.3.4` match: a
//!   deliberate false positive, safety over the value. One exception: an address whose last
//!   three parts are all zero (`120.0.0.0`) is never a visitor's address but is exactly how
//!   browsers now write their versions (`Chrome/120.0.0.0`, `"Not_A Brand";v="8.0.0.0"`), so it
//!   does not match and user agents survive.
//! - **an IPv6 address**: a maximal run of hex digits, `:` and `.` (a single outer `:` and trailing
//!   dots trimmed) with at least two `:` and at least one hex digit, not directly preceded or
//!   followed by a letter, digit or `_`, that parses as [`std::net::Ipv6Addr`]: `2001:db8::1`,
//!   `::ffff:1.2.3.4`, `[2001:db8::1]:443`. Not `::` alone, not times (`12:30:45`), not
//!   `std::fmt` or `Foo::bar`.
//! - **a phone number**, one of:
//!   - (a) `+` (not directly after a letter or digit) then a digit or `(`, then 7–15 digits in a
//!     run that may hold spaces, `-`, `.`, `(`, `)` (at most two in a row); a run whose only
//!     separator is a single `.` is a signed decimal (`+40.712776`), not a phone;
//!   - (b) North-American `(ddd) ddd-dddd` (the space optional; `-`, `.` or a space before the
//!     last four digits), not inside a longer digit run;
//!   - (c) 10–15 digits in three or more groups of at most 6 digits (every group but the first
//!     at least 2, so versions like `120.0.6099.130` are not phones), separated by single spaces,
//!     `-` or `.`, the run not directly preceded or followed by a letter; a run that starts with a
//!     date (`2024-01-15`, `15.01.2024`: 4-2-2 or 2-2-4 digits, one repeated `-`/`.`, a valid
//!     month and day) is judged on what follows the date, so `2024-01-15 10:30:00` is not a phone.
//!
//!   Not phones: a GA client id `1234567890.1700000000` (two groups), a bare number
//!   `1700000000123`, prices `30.00`, dates and times.
//!
//! Numbers, booleans and nulls are never personal data by value (a phone sent as a JSON number
//! is removed only by its key).
//!
//! # What happens to a string
//!
//! - A **URL-valued** string (starting with `http://` or `https://`, or containing `?` followed
//!   somewhere by `=`) goes through [`Minimiser::url`]: query parameters that are click ids or
//!   personal data by key, or whose decoded value (or name) holds personal data, are removed; a
//!   parameter whose decoded value is itself URL-valued (`dl=https%3A%2F%2F...%3Fgclid%3D...`) is
//!   minimised in turn and re-encoded (up to four URLs deep; deeper, it is removed if it holds
//!   personal data or mentions a click id). The fragment is treated like a query when it has `=`
//!   (`#/route?k=v` or `#k=v`), else removed if it holds personal data. If the rest (scheme, host,
//!   path) still holds personal data the whole string is removed. Other parameters are kept
//!   byte for byte.
//! - **Any other string** holding personal data is removed.
//!
//! In objects the key is removed; in arrays the element is removed (later elements move up; the
//! report names the original index). Objects and arrays that become empty are kept. An object
//! key that itself holds personal data removes its entry and is reported as `*`. Nesting deeper
//! than 128 levels is removed whole.
//!
//! # Requests
//!
//! - Headers: [`HIDDEN_HEADERS`] and headers whose *name* is personal data by key are hidden;
//!   `cookie` is rebuilt without click-id cookies and cookies that are personal data by name or
//!   value; `referer`, `origin` and URL-valued headers go through [`Minimiser::url`]; any other
//!   header is hidden if its value holds personal data, else unchanged.
//! - Bodies: JSON is minimised as an event; otherwise line by line (GA4 batches): query-string
//!   lines through [`Minimiser::query`], JSON lines as events, other lines dropped if they hold
//!   personal data. A body that is not UTF-8 cannot be checked and becomes empty.
//!
//! # Cost
//!
//! This runs on every event when `ad_user_data` is not granted. A string is first scanned once
//! for the bytes each recogniser needs (`@`/`%` for email, three dots or two colons for addresses,
//! seven digits for phones); only then do the recognisers run, and none of them allocates (only
//! text with `%XX` escapes is decoded into a new string). URLs, query strings and cookie headers
//! are only rebuilt when something is removed.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

/// Click-id URL parameters and cookies, built in (compared ASCII case-insensitively).
///
/// Each identifies one ad click, and so the person who clicked, to the ad network that issued it:
/// Google Ads / Marketing Platform (`gclid`, `gbraid`, `wbraid`, `dclid`, and `gclsrc`, which
/// travels with them), their first-party cookies (`_gcl_*`, the server-set `FPGCL*`), Meta
/// (`fbclid`, its `_fbc` cookie and the `fbc` pixel parameter), TikTok (`ttclid`), Microsoft
/// (`msclkid`, `_uetmsclkid`), LinkedIn (`li_fat_id`), X (`twclid`, `_twclid`), Pinterest
/// (`epik`, `_epik`), Reddit (`rdt_cid`), Snapchat (`sccid`), Impact (`irclickid`) and Yandex
/// (`yclid`). Cookies named `_gac_…` (GA's Google Ads cookie) are click ids too.
///
/// Browser ids are deliberately absent: `_ga`, `_fbp`, `_gcl_au`, `_ttp` name a browser, not a
/// click, and are governed by storage consent (`analytics_storage`, `ad_storage`), which decides
/// whether tags run at all; removing them here would break measurement that the visitor allowed.
pub const CLICK_IDS: &[&str] = &[
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "gclsrc",
    "_gcl_aw",
    "_gcl_dc",
    "_gcl_gb",
    "_gcl_ag",
    "_gcl_gs",
    "_gcl_gf",
    "_gcl_ha",
    "fpgclaw",
    "fpgcldc",
    "fpgclgb",
    "fbclid",
    "_fbc",
    "fbc",
    "ttclid",
    "msclkid",
    "_uetmsclkid",
    "li_fat_id",
    "twclid",
    "_twclid",
    "epik",
    "_epik",
    "rdt_cid",
    "sccid",
    "irclickid",
    "yclid",
];

/// Request headers hidden whole when personal data is removed: forwarding headers carry the
/// visitor's IP, credentials and identity-proxy headers identify the person.
pub const HIDDEN_HEADERS: &[&str] = &[
    // The visitor's address, as proxies and CDNs pass it on.
    "x-forwarded-for",
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-pseudo-ipv4",
    "x-client-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "client-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
    "x-proxyuser-ip",
    "x-envoy-external-address",
    "x-appengine-user-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-vercel-forwarded-for",
    "x-nf-client-connection-ip",
    "fly-client-ip",
    "do-connecting-ip",
    // Credentials and identities asserted by auth proxies.
    "authorization",
    "proxy-authorization",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "cf-access-jwt-assertion",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-goog-iap-jwt-assertion",
    "x-ms-client-principal",
    "x-ms-client-principal-id",
    "x-ms-client-principal-name",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-auth-request-user",
    "x-auth-request-email",
];

/// Key names that are personal data when they occur in a key as whole parts (rule 2).
pub const KEY_PARTS: &[&str] = &[
    "user_data",
    "ip_override",
    "uip",
    "_uip",
    "ip",
    "ip_address",
    "client_ip_address",
    "first_name",
    "last_name",
    "sha256_first_name",
    "sha256_last_name",
    "hashed_first_name",
    "hashed_last_name",
];

/// Key names that are personal data when they are the whole key or its last segment (rule 3).
pub const KEY_NAMES: &[&str] = &["em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "external_id", "ud", "udff"];

/// Substrings that make a key personal data (rule 1).
const KEY_CONTAINS: &[&str] = &["email", "e_mail", "e-mail", "phone"];

/// Objects and arrays nested deeper than this are removed whole.
const MAX_DEPTH: usize = 128;

/// URLs inside URL parameters are minimised this many levels deep.
const MAX_URL_DEPTH: u8 = 4;

/// What counts as personal data, beyond the built-ins (`[consent] strip_keys` and
/// `strip_click_ids` in the container config).
#[derive(Debug, Clone, Default)]
pub struct Minimiser {
    /// Extra dotted key paths (rule 5).
    strip_keys: Vec<String>,
    /// Extra click-id names (rule 4).
    click_ids: Vec<String>,
}

/// An event with personal data removed, and what was removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimised {
    /// The event as tags may see it.
    pub value: Value,
    /// Dotted key paths removed (`user_data`, `items.0.buyer_email`, `x-ga-system_properties.uip`);
    /// for query parameters removed from a URL-valued string, `page_location?gclid` (from its
    /// fragment `page_location#gclid`, the whole fragment `page_location#`, from a URL inside a
    /// parameter `page_location?dl?gclid`). A key that itself holds personal data is written `*`.
    /// Never values.
    pub removed: Vec<String>,
}

/// What to do with one query parameter.
enum Verdict {
    Keep,
    Drop,
    Replace(String),
}

impl Minimiser {
    /// A minimiser with the operator's extra keys (dotted paths) and click ids; blank entries are
    /// ignored.
    pub fn new(strip_keys: &[String], strip_click_ids: &[String]) -> Self {
        let clean = |list: &[String]| list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let mut click_ids: Vec<String> = clean(strip_click_ids);
        click_ids.iter_mut().for_each(|id| id.make_ascii_lowercase());
        Minimiser { strip_keys: clean(strip_keys), click_ids }
    }

    /// Whether `name` (case-insensitive) is a click-id parameter or cookie: one of [`CLICK_IDS`],
    /// a configured extra, or a `_gac_…` cookie.
    pub fn is_click_id(&self, name: &str) -> bool {
        let n = name.as_bytes();
        CLICK_IDS.iter().any(|id| n.eq_ignore_ascii_case(id.as_bytes()))
            || self.click_ids.iter().any(|id| n.eq_ignore_ascii_case(id.as_bytes()))
            || starts_with_ci(n, b"_gac_")
    }

    /// The event without personal data (see the module docs for exactly what is recognised).
    pub fn event(&self, event: &Value) -> Minimised {
        let mut value = event.clone();
        let mut removed = Vec::new();
        let mut path = String::new();
        if !self.keep_value(&mut value, &mut path, 0, &mut removed) {
            value = Value::Null;
        }
        Minimised { value, removed }
    }

    /// A URL (or any string) without personal data: click-id and personal-data query parameters
    /// removed, personal data removed from the fragment; `None` if the rest (scheme, host, path)
    /// itself holds personal data (an email or an IP in the path or host).
    pub fn url(&self, url: &str) -> Option<String> {
        self.url_at(url, 0, &mut Vec::new()).map(Cow::into_owned)
    }

    /// A request header as a tag may read it: `None` for [`HIDDEN_HEADERS`] and names that are
    /// personal data by key; `cookie` rebuilt without click-id cookies and cookies that hold
    /// personal data (`None` if none is left); `referer`, `origin` and URL-valued headers through
    /// [`Minimiser::url`]; any other header `None` if its value holds personal data, else unchanged.
    pub fn header(&self, name: &str, value: &str) -> Option<String> {
        let n = name.as_bytes();
        if HIDDEN_HEADERS.iter().any(|h| n.eq_ignore_ascii_case(h.as_bytes())) || self.key_hidden(name) {
            return None;
        }
        if n.eq_ignore_ascii_case(b"cookie") {
            return self.cookie_header(value);
        }
        if n.eq_ignore_ascii_case(b"referer") || n.eq_ignore_ascii_case(b"origin") || is_url_like(value) {
            return self.url(value);
        }
        if holds_personal_data(value) { None } else { Some(value.to_string()) }
    }

    /// A request cookie's value as a tag may read it (`None` = hidden): hidden if the name is a
    /// click id or personal data by key; a URL-valued value (also when percent-encoded) goes
    /// through [`Minimiser::url`] and is re-encoded if it was encoded; otherwise hidden if the
    /// (decoded) value holds personal data.
    pub fn cookie(&self, name: &str, value: &str) -> Option<String> {
        if self.is_click_id(name) || self.key_hidden(name) || holds_personal_data(name) {
            return None;
        }
        let decoded = percent_decode(value);
        if is_url_like(&decoded) {
            let was_encoded = matches!(decoded, Cow::Owned(_));
            return match self.url_at(&decoded, 0, &mut Vec::new()) {
                None => None,
                Some(Cow::Borrowed(_)) => Some(value.to_string()),
                Some(Cow::Owned(new)) => Some(if was_encoded { percent_encode(&new) } else { new }),
            };
        }
        if holds_personal_data(&decoded) { None } else { Some(value.to_string()) }
    }

    /// A raw query string (without the leading `?`) without click ids and personal-data
    /// parameters (names like `_uip`, `uip`, `em`, `email`, `ep.gclid`, or values that hold
    /// personal data). The other parameters are kept byte for byte; one whose value is a URL that
    /// had to change is re-encoded (`application/x-www-form-urlencoded`).
    pub fn query(&self, raw: &str) -> String {
        self.query_at(raw, 0, &mut Vec::new(), '?').into_owned()
    }

    /// One query parameter's (decoded) value as a tag may read it (`None` = hidden).
    pub fn query_param(&self, name: &str, value: &str) -> Option<String> {
        if self.param_hidden(name) || holds_personal_data(name) {
            return None;
        }
        if is_url_like(value) {
            return self.url(value);
        }
        if holds_personal_data(value) { None } else { Some(value.to_string()) }
    }

    /// A request body as a tag may read it. A JSON body (starting with `{` or `[`) is minimised as
    /// an event and re-serialised. Otherwise it is read line by line (GA4 batches are query
    /// strings separated by `\r\n` or `\n`; line ends are kept): a line that looks like a query
    /// string (has `=`, no whitespace) goes through [`Minimiser::query`], a JSON line through
    /// [`Minimiser::event`], any other line is dropped if it holds personal data. Lines left empty
    /// by minimisation are dropped with their line end. A body that is not UTF-8 cannot be
    /// checked and is returned empty.
    pub fn body(&self, body: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(body) else { return Vec::new() };
        if let Some(json) = self.json_text(text) {
            return json.into_bytes();
        }
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let (content, end) = match line.strip_suffix("\r\n") {
                Some(c) => (c, "\r\n"),
                None => match line.strip_suffix('\n') {
                    Some(c) => (c, "\n"),
                    None => (line, ""),
                },
            };
            let Some(kept) = self.body_line(content) else { continue };
            if kept.is_empty() && !content.is_empty() {
                continue;
            }
            out.push_str(&kept);
            out.push_str(end);
        }
        out.into_bytes()
    }

    // ---- events ----

    /// Minimises `v` in place; false if it must be removed (recorded in `removed`).
    fn keep_value(&self, v: &mut Value, path: &mut String, depth: usize, removed: &mut Vec<String>) -> bool {
        match v {
            Value::String(s) => self.keep_string(s, path, removed),
            Value::Object(_) | Value::Array(_) if depth > MAX_DEPTH => {
                removed.push(path.clone());
                false
            }
            Value::Object(map) => {
                map.retain(|key, child| {
                    let mark = path.len();
                    if mark > 0 {
                        path.push('.');
                    }
                    if holds_personal_data(key) {
                        path.push('*');
                        removed.push(path.clone());
                        path.truncate(mark);
                        return false;
                    }
                    path.push_str(key);
                    let keep = if self.key_hidden(key) || self.strip_path(path, key) {
                        removed.push(path.clone());
                        false
                    } else {
                        self.keep_value(child, path, depth + 1, removed)
                    };
                    path.truncate(mark);
                    keep
                });
                true
            }
            Value::Array(items) => {
                let mut index = 0usize;
                items.retain_mut(|child| {
                    let mark = path.len();
                    if mark > 0 {
                        path.push('.');
                    }
                    path.push_str(itoa(index, &mut [0u8; 20]));
                    index += 1;
                    let keep = self.keep_value(child, path, depth + 1, removed);
                    path.truncate(mark);
                    keep
                });
                true
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
        }
    }

    /// Minimises a string value in place; false if it must be removed.
    fn keep_string(&self, s: &mut String, path: &str, removed: &mut Vec<String>) -> bool {
        if is_url_like(s) {
            let mut sub = Vec::new();
            let result = self.url_at(s, 0, &mut sub);
            let new = match result {
                None => {
                    removed.push(path.to_string());
                    return false;
                }
                Some(Cow::Borrowed(_)) => return true,
                Some(Cow::Owned(new)) => new,
            };
            removed.extend(sub.into_iter().map(|suffix| format!("{path}{suffix}")));
            *s = new;
            return true;
        }
        if holds_personal_data(s) {
            removed.push(path.to_string());
            return false;
        }
        true
    }

    /// Whether a key (event key, parameter or header name) is personal data by rules 1–4.
    fn key_hidden(&self, key: &str) -> bool {
        // Lowercased once (on the stack for ordinary keys), then compared byte for byte.
        let mut buf = [0u8; 64];
        let long;
        let k: &[u8] = match buf.get_mut(..key.len()) {
            Some(b) => {
                b.copy_from_slice(key.as_bytes());
                b.make_ascii_lowercase();
                b
            }
            None => {
                long = key.to_ascii_lowercase();
                long.as_bytes()
            }
        };
        if KEY_CONTAINS.iter().any(|n| contains(k, n.as_bytes())) || has_part(k) {
            return true;
        }
        let last = last_segment(k);
        if KEY_NAMES.iter().any(|n| same(k, n.as_bytes()) || same(last, n.as_bytes())) {
            return true;
        }
        if k.starts_with(b"_gac_") {
            return true;
        }
        let k = k.strip_suffix(b"]").unwrap_or(k);
        CLICK_IDS.iter().any(|id| ends_with_part(k, id.as_bytes())) || self.click_ids.iter().any(|id| ends_with_part(k, id.as_bytes()))
    }

    /// Whether the dotted path matches a configured `strip_keys` entry (rule 5).
    fn strip_path(&self, path: &str, key: &str) -> bool {
        self.strip_keys.iter().any(|pattern| {
            // Cheap rejection first: the pattern's last segment must name this key.
            let last = pattern.rsplit('.').next().unwrap_or(pattern);
            if last != "*" && !last.eq_ignore_ascii_case(key) && !path.ends_with(last) {
                return false;
            }
            let mut want = pattern.split('.');
            let mut have = path.split('.');
            loop {
                match (want.next(), have.next()) {
                    (None, None) => return true,
                    (Some(w), Some(h)) if w == "*" || w.eq_ignore_ascii_case(h) => {}
                    _ => return false,
                }
            }
        })
    }

    /// Whether a query parameter name is personal data by key, a click id, or a `strip_keys` entry.
    fn param_hidden(&self, name: &str) -> bool {
        if self.key_hidden(name) {
            return true;
        }
        let last = name.rsplit('.').next().unwrap_or(name);
        self.strip_keys.iter().any(|p| p.eq_ignore_ascii_case(name) || (!p.contains('.') && p.eq_ignore_ascii_case(last)))
    }

    // ---- URLs and query strings ----

    /// `url` minimised; removed parameters are recorded as `?name` / `#name` / `#` suffixes.
    fn url_at<'a>(&self, url: &'a str, depth: u8, removed: &mut Vec<String>) -> Option<Cow<'a, str>> {
        let (before_fragment, fragment) = match url.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (url, None),
        };
        let (base, query) = match before_fragment.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (before_fragment, None),
        };
        if holds_personal_data(base) {
            return None;
        }
        let new_query = query.map(|q| self.query_at(q, depth, removed, '?'));
        let new_fragment = fragment.map(|f| self.fragment_at(f, depth, removed));
        let query_changed = matches!(new_query, Some(Cow::Owned(_)));
        let fragment_changed = matches!(new_fragment, Some(None) | Some(Some(Cow::Owned(_))));
        if !query_changed && !fragment_changed {
            return Some(Cow::Borrowed(url));
        }
        let mut out = String::with_capacity(url.len());
        out.push_str(base);
        if let Some(q) = &new_query
            && (!q.is_empty() || !query_changed)
        {
            out.push('?');
            out.push_str(q);
        }
        if let Some(Some(f)) = &new_fragment
            && (!f.is_empty() || !fragment_changed)
        {
            out.push('#');
            out.push_str(f);
        }
        Some(Cow::Owned(out))
    }

    /// A fragment minimised; `None` if it must go whole.
    fn fragment_at<'a>(&self, fragment: &'a str, depth: u8, removed: &mut Vec<String>) -> Option<Cow<'a, str>> {
        if let Some((route, query)) = fragment.split_once('?') {
            if holds_personal_data(route) {
                removed.push("#".into());
                return None;
            }
            return match self.query_at(query, depth, removed, '#') {
                Cow::Borrowed(_) => Some(Cow::Borrowed(fragment)),
                Cow::Owned(q) if q.is_empty() => Some(Cow::Owned(route.to_string())),
                Cow::Owned(q) => Some(Cow::Owned(format!("{route}?{q}"))),
            };
        }
        if fragment.contains('=') {
            return Some(self.query_at(fragment, depth, removed, '#'));
        }
        if holds_personal_data(fragment) {
            removed.push("#".into());
            return None;
        }
        Some(Cow::Borrowed(fragment))
    }

    /// A raw query minimised; unchanged parameters are kept byte for byte.
    fn query_at<'a>(&self, raw: &'a str, depth: u8, removed: &mut Vec<String>, marker: char) -> Cow<'a, str> {
        let mut out: Option<String> = None;
        let mut start = 0usize;
        for segment in raw.split('&') {
            let here = start;
            start += segment.len() + 1;
            let verdict = self.param_verdict(segment, depth, removed, marker);
            let kept = match verdict {
                Verdict::Keep => {
                    if let Some(o) = out.as_mut() {
                        push_segment(o, segment);
                    }
                    continue;
                }
                Verdict::Drop => None,
                Verdict::Replace(new) => Some(new),
            };
            let o = out.get_or_insert_with(|| raw.get(..here.saturating_sub(1)).unwrap_or_default().to_string());
            if let Some(new) = kept {
                push_segment(o, &new);
            }
        }
        match out {
            Some(o) => Cow::Owned(o),
            None => Cow::Borrowed(raw),
        }
    }

    /// The verdict on one raw `name=value` segment.
    fn param_verdict(&self, segment: &str, depth: u8, removed: &mut Vec<String>, marker: char) -> Verdict {
        let Some((name, value)) = form_urlencoded::parse(segment.as_bytes()).next() else { return Verdict::Keep };
        if holds_personal_data(&name) {
            removed.push(format!("{marker}*"));
            return Verdict::Drop;
        }
        if self.param_hidden(&name) {
            removed.push(format!("{marker}{name}"));
            return Verdict::Drop;
        }
        if is_url_like(&value) {
            if depth >= MAX_URL_DEPTH {
                if holds_personal_data(&value) || self.mentions_click_id(&value) {
                    removed.push(format!("{marker}{name}"));
                    return Verdict::Drop;
                }
                return Verdict::Keep;
            }
            let mut sub = Vec::new();
            let result = self.url_at(&value, depth + 1, &mut sub);
            return match result {
                None => {
                    removed.push(format!("{marker}{name}"));
                    Verdict::Drop
                }
                Some(Cow::Borrowed(_)) => Verdict::Keep,
                Some(Cow::Owned(new)) => {
                    removed.extend(sub.into_iter().map(|s| format!("{marker}{name}{s}")));
                    let raw_name = segment.split_once('=').map_or(segment, |(n, _)| n);
                    let encoded: String = form_urlencoded::byte_serialize(new.as_bytes()).collect();
                    Verdict::Replace(format!("{raw_name}={encoded}"))
                }
            };
        }
        if holds_personal_data(&value) {
            removed.push(format!("{marker}{name}"));
            return Verdict::Drop;
        }
        Verdict::Keep
    }

    /// Whether `text` mentions any click-id name (for URLs nested too deep to parse).
    fn mentions_click_id(&self, text: &str) -> bool {
        let t = text.as_bytes();
        CLICK_IDS.iter().any(|id| contains_ci(t, id.as_bytes())) || self.click_ids.iter().any(|id| contains_ci(t, id.as_bytes()))
    }

    // ---- requests ----

    /// The `cookie` header rebuilt; unchanged byte for byte when nothing is removed.
    fn cookie_header(&self, value: &str) -> Option<String> {
        let mut out = String::with_capacity(value.len());
        let mut changed = false;
        for part in value.split(';') {
            let pair = part.trim();
            if pair.is_empty() {
                continue;
            }
            let (name, raw) = pair.split_once('=').map_or(("", pair), |(n, v)| (n.trim(), v.trim()));
            let Some(kept) = self.cookie(name, raw) else {
                changed = true;
                continue;
            };
            changed |= kept != raw;
            if !out.is_empty() {
                out.push_str("; ");
            }
            if !name.is_empty() {
                out.push_str(name);
                out.push('=');
            }
            out.push_str(&kept);
        }
        if !changed {
            return Some(value.to_string());
        }
        if out.is_empty() { None } else { Some(out) }
    }

    /// `text` minimised as JSON and re-serialised, if it is JSON.
    fn json_text(&self, text: &str) -> Option<String> {
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return None;
        }
        let value: Value = serde_json::from_str(text).ok()?;
        serde_json::to_string(&self.event(&value).value).ok()
    }

    /// One non-JSON body line minimised; `None` to drop it.
    fn body_line<'a>(&self, line: &'a str) -> Option<Cow<'a, str>> {
        if line.trim().is_empty() {
            return Some(Cow::Borrowed(line));
        }
        if let Some(json) = self.json_text(line) {
            return Some(Cow::Owned(json));
        }
        if line.contains('=') && !line.bytes().any(|b| b.is_ascii_whitespace()) {
            return Some(self.query_at(line, 0, &mut Vec::new(), '?'));
        }
        if holds_personal_data(line) { None } else { Some(Cow::Borrowed(line)) }
    }
}

/// Whether a piece of text holds personal data by value: an email address, an IPv4/IPv6 address,
/// or a phone number, anywhere in it (the exact rules are in the module docs). Text with `%XX`
/// escapes is checked as written and once decoded.
pub fn holds_personal_data(text: &str) -> bool {
    if scan(text) {
        return true;
    }
    let b = text.as_bytes();
    let escaped = b.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    escaped && scan(&percent_decode(text))
}

/// One pass of cheap counts, then only the recognisers the counts allow.
fn scan(text: &str) -> bool {
    let b = text.as_bytes();
    let (mut at, mut dots, mut colons, mut digits) = (false, 0usize, 0usize, 0usize);
    for &c in b {
        match c {
            b'@' | b'%' => at = true,
            b'.' => dots += 1,
            b':' => colons += 1,
            b'0'..=b'9' => digits += 1,
            _ => {}
        }
    }
    (at && has_email(b))
        || (dots >= 3 && digits >= 4 && has_ipv4(text))
        || (colons >= 2 && has_ipv6(text))
        || (digits >= 7 && has_phone(b))
}

// ---- email ----

fn is_local_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn has_email(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        let after = if b[i] == b'@' {
            i + 1
        } else if b[i] == b'%' && b.get(i + 1..i + 3) == Some(b"40") {
            i + 3
        } else if b[i] == b'%' && b.get(i + 1..i + 5) == Some(b"2540") {
            i + 5
        } else {
            i += 1;
            continue;
        };
        let local_ok = i > 0 && is_local_byte(b[i - 1]);
        if local_ok && is_domain(b, after) {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a domain with a dot and a TLD of ≥2 letters starts at `start`.
fn is_domain(b: &[u8], start: usize) -> bool {
    let Some(&first) = b.get(start) else { return false };
    if !first.is_ascii_alphanumeric() {
        return false;
    }
    let mut end = start;
    while end < b.len() && (b[end].is_ascii_alphanumeric() || matches!(b[end], b'.' | b'-')) {
        end += 1;
    }
    while end > start && matches!(b[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &b[start..end];
    let Some(dot) = domain.iter().rposition(|&c| c == b'.') else { return false };
    let tld = &domain[dot + 1..];
    dot > 0 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
}

// ---- IP addresses ----

fn has_ipv4(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
            continue;
        }
        let (mut s, mut e) = (i, i);
        while e < b.len() && (b[e].is_ascii_digit() || b[e] == b'.') {
            e += 1;
        }
        i = e;
        // A dotted quad glued to a word is part of something else: `GA1.1.111.222` (the _ga
        // cookie, a client id), `v1.2.3.4`.
        let glued = (s > 0 && is_word_byte(b[s - 1])) || (e < b.len() && is_word_byte(b[e]));
        while s < e && b[s] == b'.' {
            s += 1;
        }
        while e > s && b[e - 1] == b'.' {
            e -= 1;
        }
        if !glued
            && (7..=15).contains(&(e - s))
            && let Some(token) = text.get(s..e)
            && let Ok(ip) = token.parse::<Ipv4Addr>()
            && ip.octets()[1..] != [0, 0, 0]
        {
            return true;
        }
    }
    false
}

fn is_v6_byte(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn has_ipv6(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !is_v6_byte(b[i]) {
            i += 1;
            continue;
        }
        let (mut s, mut e) = (i, i);
        while e < b.len() && is_v6_byte(b[e]) {
            e += 1;
        }
        i = e;
        if e - s >= 2 && b[s] == b':' && b[s + 1] != b':' {
            s += 1;
        }
        while e > s && b[e - 1] == b'.' {
            e -= 1;
        }
        if e - s >= 2 && b[e - 1] == b':' && b[e - 2] != b':' {
            e -= 1;
        }
        let token = &b[s..e];
        if token.len() > 45 || token.iter().filter(|&&c| c == b':').count() < 2 || !token.iter().any(u8::is_ascii_hexdigit) {
            continue;
        }
        let before_ok = s == 0 || !is_word_byte(b[s - 1]);
        let after_ok = e == b.len() || !is_word_byte(b[e]);
        if before_ok && after_ok && text.get(s..e).is_some_and(|t| t.parse::<Ipv6Addr>().is_ok()) {
            return true;
        }
    }
    false
}

// ---- phone numbers ----

fn has_phone(b: &[u8]) -> bool {
    plus_phone(b) || nanp_phone(b) || grouped_phone(b)
}

/// Rule (a): `+` and 7–15 digits.
fn plus_phone(b: &[u8]) -> bool {
    for (i, &c) in b.iter().enumerate() {
        if c != b'+' || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            continue;
        }
        if !b.get(i + 1).is_some_and(|&n| n.is_ascii_digit() || n == b'(') {
            continue;
        }
        let (mut digits, mut dots, mut others) = (0usize, 0usize, 0usize);
        let (mut pending_dots, mut pending_others, mut in_a_row) = (0usize, 0usize, 0usize);
        for &n in &b[i + 1..] {
            if n.is_ascii_digit() {
                digits += 1;
                dots += pending_dots;
                others += pending_others;
                (pending_dots, pending_others, in_a_row) = (0, 0, 0);
            } else if matches!(n, b' ' | b'-' | b'.' | b'(' | b')') {
                in_a_row += 1;
                if in_a_row > 2 {
                    break;
                }
                if n == b'.' {
                    pending_dots += 1;
                } else {
                    pending_others += 1;
                }
            } else {
                break;
            }
        }
        let decimal = dots == 1 && others == 0;
        if (7..=15).contains(&digits) && !decimal {
            return true;
        }
    }
    false
}

fn digits_at(b: &[u8], start: usize, n: usize) -> bool {
    b.get(start..start + n).is_some_and(|s| s.iter().all(u8::is_ascii_digit))
}

/// Rule (b): `(ddd) ddd-dddd`.
fn nanp_phone(b: &[u8]) -> bool {
    for (i, &c) in b.iter().enumerate() {
        if c != b'(' || (i > 0 && b[i - 1].is_ascii_digit()) || !digits_at(b, i + 1, 3) || b.get(i + 4) != Some(&b')') {
            continue;
        }
        let mut k = i + 5;
        if b.get(k) == Some(&b' ') {
            k += 1;
        }
        if digits_at(b, k, 3)
            && b.get(k + 3).is_some_and(|&s| matches!(s, b'-' | b'.' | b' '))
            && digits_at(b, k + 4, 4)
            && !b.get(k + 8).is_some_and(u8::is_ascii_digit)
        {
            return true;
        }
    }
    false
}

/// Rule (c): 10–15 digits in three or more groups.
fn grouped_phone(b: &[u8]) -> bool {
    const MAX_GROUPS: usize = 16;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut groups = [(0usize, 0usize); MAX_GROUPS];
        let mut seps = [0u8; MAX_GROUPS];
        let mut n = 0usize;
        loop {
            let group_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if n < MAX_GROUPS {
                groups[n] = (group_start, i - group_start);
            }
            n += 1;
            let sep = b.get(i).copied();
            if let Some(s @ (b' ' | b'-' | b'.')) = sep
                && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            {
                if n <= MAX_GROUPS {
                    seps[n - 1] = s;
                }
                i += 1;
                continue;
            }
            break;
        }
        let before_ok = run_start == 0 || !b[run_start - 1].is_ascii_alphabetic();
        let after_ok = !b.get(i).is_some_and(u8::is_ascii_alphabetic);
        if (3..=MAX_GROUPS).contains(&n) && before_ok && after_ok && groups_are_phone(b, &groups[..n], &seps[..n]) {
            return true;
        }
    }
    false
}

fn groups_are_phone(b: &[u8], groups: &[(usize, usize)], seps: &[u8]) -> bool {
    let rest = if starts_with_date(b, groups, seps) { &groups[3..] } else { groups };
    let digits: usize = rest.iter().map(|g| g.1).sum();
    // Only a leading country or trunk code is a single digit (`1 555 123 4567`); a lone digit
    // further on is a version (`120.0.6099.130`).
    rest.len() >= 3 && (10..=15).contains(&digits) && rest.iter().all(|g| g.1 <= 6) && rest.iter().skip(1).all(|g| g.1 >= 2)
}

fn small_number(b: &[u8], (start, len): (usize, usize)) -> u32 {
    b.get(start..start + len).unwrap_or_default().iter().fold(0u32, |n, d| n.saturating_mul(10).saturating_add(u32::from(d - b'0')))
}

/// `2024-01-15`, `2024.01.15`, `15.01.2024`, `01-15-2024` at the start of a run.
fn starts_with_date(b: &[u8], groups: &[(usize, usize)], seps: &[u8]) -> bool {
    let (Some(&g0), Some(&g1), Some(&g2)) = (groups.first(), groups.get(1), groups.get(2)) else { return false };
    if seps.first() != seps.get(1) || !matches!(seps.first(), Some(b'-' | b'.')) {
        return false;
    }
    let (a, m, d) = (small_number(b, g0), small_number(b, g1), small_number(b, g2));
    match (g0.1, g1.1, g2.1) {
        (4, 2, 2) => (1..=12).contains(&m) && (1..=31).contains(&d),
        (2, 2, 4) => (1..=31).contains(&a) && (1..=31).contains(&m) && (a <= 12 || m <= 12),
        _ => false,
    }
}

// ---- small helpers (bytes only: every comparison is against ASCII, so never splits a char) ----

fn is_sep(c: u8) -> bool {
    matches!(c, b'-' | b'_' | b'.' | b'[' | b']')
}

fn starts_with_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.get(..prefix.len()).is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Byte-exact `contains`; the first byte is checked before the whole window is compared.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return false };
    hay.windows(needle.len()).any(|w| w[0] == first && same(w, needle))
}

/// Slice equality as an inlined loop: key names are short, and `==` on slices calls `memcmp`.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Whether a lowercased key holds one of [`KEY_PARTS`] bounded by separators (or the ends) on
/// both sides. Only positions where a part starts are tried (or a separator, for entries that
/// begin with one).
fn has_part(k: &[u8]) -> bool {
    (0..k.len()).any(|i| {
        let part_start = i == 0 || is_sep(k[i - 1]);
        if !part_start && !is_sep(k[i]) {
            return false;
        }
        let rest = &k[i..];
        KEY_PARTS.iter().any(|entry| {
            let e = entry.as_bytes();
            let (Some(&first), Some(&last)) = (e.first(), e.last()) else { return false };
            first == k[i]
                && (part_start || is_sep(first))
                && rest.get(..e.len()).is_some_and(|r| same(r, e))
                && rest.get(e.len()).is_none_or(|&c| is_sep(c) || is_sep(last))
        })
    })
}

/// Whether a lowercased `key` ends with the lowercase `id` as a whole part (the last byte is
/// compared first: most keys end differently from most ids).
#[inline]
fn ends_with_part(key: &[u8], id: &[u8]) -> bool {
    let (Some(start), Some(last), Some(&first)) = (key.len().checked_sub(id.len()), key.last(), id.first()) else { return false };
    id.last() == Some(last) && same(&key[start..], id) && (start == 0 || is_sep(key[start - 1]) || is_sep(first))
}

/// What follows a key's last `.`, `-` or `[` (a trailing `]` dropped).
fn last_segment(key: &[u8]) -> &[u8] {
    let key = key.strip_suffix(b"]").unwrap_or(key);
    match key.iter().rposition(|&c| matches!(c, b'.' | b'-' | b'[')) {
        Some(p) => &key[p + 1..],
        None => key,
    }
}

/// Whether a string is treated as a URL: `http(s)://…`, or a `?` followed somewhere by `=`.
fn is_url_like(s: &str) -> bool {
    let b = s.as_bytes();
    starts_with_ci(b, b"http://")
        || starts_with_ci(b, b"https://")
        || b.iter().position(|&c| c == b'?').is_some_and(|q| b[q..].contains(&b'='))
}

fn push_segment(out: &mut String, segment: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(segment);
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `%XX` escapes decoded (`+` stays `+`); invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex_value(c)), b.get(i + 2).and_then(|&c| hex_value(c)))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8_lossy(&out) {
        Cow::Borrowed(_) if out.len() == b.len() => Cow::Borrowed(s),
        decoded => Cow::Owned(decoded.into_owned()),
    }
}

/// Everything but ASCII letters, digits and `-._~` percent-encoded.
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        }
    }
    out
}

/// `n` in decimal, written into `buf` (no allocation).
fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m() -> Minimiser {
        Minimiser::default()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    fn table(cases: &[&str], expected: bool) {
        for case in cases {
            assert_eq!(holds_personal_data(case), expected, "{case:?}");
        }
    }

    #[test]
    fn emails() {
        table(
            &[
                "jane@example.com",
                "Jane.Doe+shop@mail.example.co.uk",
                "contact: jane_doe-1@example.org.",
                "jane%40example.com",
                "jane%2540example.com",
                "mailto:j%2Bx@example.de?subject=hi",
                "\u{e9}t\u{e9} jane@example.com \u{1f600}",
            ],
            true,
        );
        table(&["jane@localhost", "@example.com", "jane@", "a@b.c", "v@1.2", "jane@-x.com", "x@y.c0m", "100% sure", "user at example.com"], false);
    }

    #[test]
    fn ipv4() {
        table(&["203.0.113.9", "ip=10.1.2.3&x=1", "client 192.168.0.1, proxy", "..8.8.8.8..", "version 1.2.3.4"], true);
        table(
            &[
                "1.2.3",
                "v1.2.3.4",
                "GA1.1.111.222",
                "1.2.3.4.5",
                "256.1.1.1",
                "01.2.3.4",
                "30.00",
                "1234567890.1700000000",
                "Chrome/120.0.0.0 Safari/537.36",
                "\"Not_A Brand\";v=\"8.0.0.0\"",
            ],
            false,
        );
    }

    #[test]
    fn ipv6() {
        table(
            &[
                "2001:db8::1",
                "::ffff:1.2.3.4",
                "[2001:db8::1]:443",
                "http://[2001:db8::1]/p",
                "ip:2001:db8:0:0:0:0:0:1",
                "fe80::1%eth0",
                "addr 2001:db8::1.",
                "::1",
            ],
            true,
        );
        table(&["::", "12:30:45", "10:30:00.000", "std::fmt", "Foo::bar", "00:1A:2B:3C:4D:5E", "a:b", "x2001:db8::1"], false);
    }

    #[test]
    fn phones() {
        table(
            &[
                "+15551234567",
                "+1 (555) 123-4567",
                "+44 20 7946 0958",
                "+49.30.1234.5678",
                "call (555) 123-4567 now",
                "(555)123.4567",
                "555-123-4567",
                "555 123 4567",
                "0044 20 7946 0958",
                "06 12 34 56 78",
                "2024-01-15 555 123 4567",
                "1 555 123 4567",
            ],
            true,
        );
        table(
            &[
                "1234567890.1700000000",
                "1700000000123",
                "30.00",
                "+30.00",
                "+40.712776",
                "2024-01-15",
                "2024-01-15 10:30:00",
                "15.01.2024 10:30",
                "12:30:45",
                "+123456",
                "+1234567890123456",
                "2+3456789",
                "555-1234",
                "1.0.20240115",
                "GA1.1.1234567890.1700000000",
                "fb.1.1700000000000.1234567890",
                "(555) 123-45678",
                "12345678-1234-1234-1234-123456789012",
                "2024-01-15T10:30:00+01:00",
                "Chromium;120.0.6099.130",
                "10.15.7.12345",
            ],
            false,
        );
    }

    #[test]
    fn digests_are_not_personal_data_by_value_only_by_key() {
        let digest = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514";
        assert!(!holds_personal_data(digest));
        let out = m().event(&json!({"transaction_hash": digest, "user": {"sha256_email_address": digest, "em": digest, "hashed_phone_number": digest}}));
        assert_eq!(out.value, json!({"transaction_hash": digest, "user": {}}));
        assert_eq!(sorted(out.removed), ["user.em", "user.hashed_phone_number", "user.sha256_email_address"]);
    }

    #[test]
    fn keys_by_name_part_and_exact_name() {
        let event = json!({
            "user_data": {"anything": 1}, "x-ga-mp2-user_data": {"a": 1}, "ip_override": "x", "_uip": "x", "IP_Address": "x",
            "geo_ip": "x", "client_ip_address": "x", "Customer_Email": "x", "mobilePhone": 5551234567u64, "sha256_first_name": "x",
            "ep.em": "x", "ud[ph]": "x", "ct": "x", "external_id": "x",
            "zip": "94043", "tip": "x", "ship": "x", "status": "ok", "act": "x", "x-ga-st": "kept? no", "first_visit": "1"
        });
        let out = m().event(&event);
        assert_eq!(out.value, json!({"zip": "94043", "tip": "x", "ship": "x", "status": "ok", "act": "x", "first_visit": "1"}));
        assert_eq!(
            sorted(out.removed),
            [
                "Customer_Email", "IP_Address", "_uip", "client_ip_address", "ct", "ep.em", "external_id", "geo_ip", "ip_override",
                "mobilePhone", "sha256_first_name", "ud[ph]", "user_data", "x-ga-mp2-user_data", "x-ga-st"
            ]
        );
    }

    #[test]
    fn nested_objects_arrays_and_system_properties() {
        let event = json!({
            "x-ga-system_properties": {"uip": "203.0.113.9", "fv": "1", "ss": "1"},
            "x-ga-mp2-gclid": "EAIaIQobChMI", "x-ga-mp2-gbraid": "0AAAAA", "ep.gclid": "abc", "_gcl_aw": "GCL.1.x",
            "contact": "jane@example.com",
            "items": [{"item_id": "A", "buyer_email": "x@y.zz", "note": "ring +44 20 7946 0958"}, {"item_id": "B"}],
            "tags": ["sale", "jane@example.com", "vip", "203.0.113.9"],
            "deep": {"a": {"b": [{"c": "2001:db8::1", "d": 3}]}},
            "n": 15551234567u64, "ok": true, "empty": {"email": "x"}
        });
        let out = m().event(&event);
        assert_eq!(
            out.value,
            json!({
                "x-ga-system_properties": {"fv": "1", "ss": "1"},
                "items": [{"item_id": "A"}, {"item_id": "B"}],
                "tags": ["sale", "vip"],
                "deep": {"a": {"b": [{"d": 3}]}},
                "n": 15551234567u64, "ok": true, "empty": {}
            })
        );
        assert_eq!(
            sorted(out.removed),
            [
                "_gcl_aw", "contact", "deep.a.b.0.c", "empty.email", "ep.gclid", "items.0.buyer_email", "items.0.note", "tags.1", "tags.3",
                "x-ga-mp2-gbraid", "x-ga-mp2-gclid", "x-ga-system_properties.uip"
            ]
        );
    }

    #[test]
    fn keys_holding_personal_data_are_reported_as_a_star() {
        let out = m().event(&json!({"by_person": {"jane@example.com": 3, "anon": 1}}));
        assert_eq!(out.value, json!({"by_person": {"anon": 1}}));
        assert_eq!(out.removed, ["by_person.*"]);
    }

    #[test]
    fn urls_in_events() {
        let event = json!({
            "page_location": "https://shop.example/p?gclid=abc&fbclid=def&color=red",
            "page_referrer": "https://ads.example/?ttclid=x",
            "signup": "https://shop.example/welcome?e=jane%40example.com&step=2",
            "profile": "https://shop.example/u/jane@example.com/orders",
            "spa": "https://shop.example/#/cart?gclid=1&x=2",
            "hash": "https://shop.example/p#jane@example.com",
            "ad": "https://shop.example/?dl=https%3A%2F%2Fshop.example%2F%3Fgclid%3Dabc%26a%3D1&v=2",
            "plain": "https://shop.example/p?color=red#top",
            "relative": "/search?q=call+555+123+4567&page=2",
            "odd": "https://shop.example/p?"
        });
        let out = m().event(&event);
        assert_eq!(
            out.value,
            json!({
                "page_location": "https://shop.example/p?color=red",
                "page_referrer": "https://ads.example/",
                "signup": "https://shop.example/welcome?step=2",
                "spa": "https://shop.example/#/cart?x=2",
                "hash": "https://shop.example/p",
                "ad": "https://shop.example/?dl=https%3A%2F%2Fshop.example%2F%3Fa%3D1&v=2",
                "plain": "https://shop.example/p?color=red#top",
                "relative": "/search?page=2",
                "odd": "https://shop.example/p?"
            })
        );
        assert_eq!(
            sorted(out.removed),
            [
                "ad?dl?gclid", "hash#", "page_location?fbclid", "page_location?gclid", "page_referrer?ttclid", "profile", "relative?q",
                "signup?e", "spa#gclid"
            ]
        );
    }

    #[test]
    fn url_function() {
        let mm = m();
        assert_eq!(mm.url("https://a.example/p?gclid=1&wbraid=2&x=%20y&e=a%40b.cc#k=v&gbraid=3").as_deref(), Some("https://a.example/p?x=%20y#k=v"));
        assert_eq!(mm.url("https://a.example/p?GCLID=1").as_deref(), Some("https://a.example/p"));
        assert_eq!(mm.url("https://a.example/jane@example.com"), None);
        assert_eq!(mm.url("http://203.0.113.9/x"), None);
        assert_eq!(mm.url("not a url").as_deref(), Some("not a url"));
        assert_eq!(mm.url("call +1 555 123 4567"), None);
        assert_eq!(mm.url("https://\u{e9}t\u{e9}.example/\u{1f600}?a=\u{e9}&gclid=x").as_deref(), Some("https://\u{e9}t\u{e9}.example/\u{1f600}?a=\u{e9}"));
    }

    #[test]
    fn free_text_is_dropped_only_when_it_holds_personal_data() {
        let out = m().event(&json!({"comment": "please call me on 555-123-4567", "title": "Sale: 30.00 EUR until 2024-01-15", "ver": "1.2.3.4"}));
        assert_eq!(out.value, json!({"title": "Sale: 30.00 EUR until 2024-01-15"}));
        assert_eq!(sorted(out.removed), ["comment", "ver"]);
    }

    #[test]
    fn headers() {
        let mm = m();
        assert_eq!(mm.header("X-Forwarded-For", "203.0.113.9"), None);
        assert_eq!(mm.header("forwarded", "for=203.0.113.9"), None);
        assert_eq!(mm.header("cf-connecting-ip", "203.0.113.9"), None);
        assert_eq!(mm.header("Authorization", "Bearer abc"), None);
        assert_eq!(mm.header("x-user-email", "opaque"), None);
        assert_eq!(
            mm.header("cookie", "_ga=GA1.1.1234567890.1700000000; _gcl_aw=GCL.1700000000.EAIa; who=jane%40example.com; _gac_UA-1=1.1.x; theme=dark")
                .as_deref(),
            Some("_ga=GA1.1.1234567890.1700000000; theme=dark")
        );
        assert_eq!(mm.header("cookie", "_ga=GA1.1.1234567890.1700000000;theme=dark").as_deref(), Some("_ga=GA1.1.1234567890.1700000000;theme=dark"));
        assert_eq!(mm.header("cookie", "_fbc=fb.1.1.x; _gcl_dc=1"), None);
        assert_eq!(mm.header("Referer", "https://shop.example/p?gclid=abc&q=1").as_deref(), Some("https://shop.example/p?q=1"));
        assert_eq!(mm.header("origin", "https://shop.example").as_deref(), Some("https://shop.example"));
        let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(mm.header("user-agent", ua).as_deref(), Some(ua));
        let hints = "\"Not_A Brand\";v=\"8.0.0.0\", \"Chromium\";v=\"120.0.6099.130\"";
        assert_eq!(mm.header("sec-ch-ua-full-version-list", hints).as_deref(), Some(hints));
        assert_eq!(mm.header("x-note", "mail jane@example.com"), None);
        assert_eq!(mm.header("accept-language", "en-US,en;q=0.9").as_deref(), Some("en-US,en;q=0.9"));
        for name in [
            "host", "accept", "accept-encoding", "content-type", "content-length", "cache-control", "connection", "te", "dnt", "priority",
            "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
            "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "cf-ipcountry", "cf-ray", "x-appengine-country", "x-consent",
            "x-gtm-server-preview", "upgrade-insecure-requests", "if-none-match", "via",
        ] {
            assert_eq!(mm.header(name, "v").as_deref(), Some("v"), "{name}");
        }
        let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(mm.header("traceparent", trace).as_deref(), Some(trace));
        assert_eq!(mm.header("if-modified-since", "Mon, 15 Jan 2024 10:30:00 GMT").as_deref(), Some("Mon, 15 Jan 2024 10:30:00 GMT"));
    }

    #[test]
    fn cookies() {
        let mm = m();
        assert_eq!(mm.cookie("_ga", "GA1.1.1234567890.1700000000").as_deref(), Some("GA1.1.1234567890.1700000000"));
        assert_eq!(mm.cookie("_fbp", "fb.1.1700000000000.1234567890").as_deref(), Some("fb.1.1700000000000.1234567890"));
        assert_eq!(mm.cookie("_GCL_AW", "GCL.1.x"), None);
        assert_eq!(mm.cookie("FPGCLAW", "x"), None);
        assert_eq!(mm.cookie("who", "jane%40example.com"), None);
        assert_eq!(mm.cookie("phone", "opaque"), None);
        assert_eq!(mm.cookie("landing", "https%3A%2F%2Fshop.example%2F%3Fgclid%3Dx%26a%3D1").as_deref(), Some("https%3A%2F%2Fshop.example%2F%3Fa%3D1"));
        assert_eq!(mm.cookie("landing", "https://shop.example/?a=1").as_deref(), Some("https://shop.example/?a=1"));
        let kept = [
            ("_ga_ABC123", "GS1.1.1700000000.1.1.1700000100.0.0.0"),
            ("_ga_DEF456", "GS2.1.s1700000000$o1$g1$t1700000100$j60$l0$h0"),
            ("_gid", "GA1.2.987654321.1700000000"),
            ("_gcl_au", "1.1.1234567890.1700000000"),
            ("FPID", "FPID2.2.abcdef%3D.1700000000"),
            ("_ttp", "2abcDEF123"),
            ("_uetvid", "0af76519a1b211eea0b5c1e2d3f4a5b6"),
            (
                "OptanonConsent",
                "isGpcEnabled=0&datestamp=Mon+Jan+15+2024+10%3A30%3A00+GMT%2B0100+(CET)&version=202310.1.0&consentId=550e8400-e29b-41d4-a716-446655440000&groups=C0001%3A1%2CC0002%3A0",
            ),
            ("CookieConsent", "{stamp:%27abc%3D%3D%27%2Cnecessary:true%2Cver:1%2Cutc:1700000000000%2Cregion:%27de%27}"),
        ];
        for (name, value) in kept {
            assert_eq!(mm.cookie(name, value).as_deref(), Some(value), "{name}");
        }
    }

    #[test]
    fn query_strings() {
        let mm = m();
        assert_eq!(mm.query("v=2&tid=G-X&_uip=1.2.3.4&gclid=abc&em=tv.1~em.abc&email=x&e=jane%40example.com&en=page_view"), "v=2&tid=G-X&en=page_view");
        assert_eq!(mm.query("v=2&tid=G-X"), "v=2&tid=G-X");
        assert_eq!(mm.query("_uip=1.2.3.4&v=2"), "v=2");
        assert_eq!(mm.query("ep.gclid=1&up.phone=2&uip=3&a%5Fb=%7E"), "a%5Fb=%7E");
        assert_eq!(mm.query("dt=Hello%20World&cid=1234567890.1700000000&sr=1920x1080"), "dt=Hello%20World&cid=1234567890.1700000000&sr=1920x1080");
        assert_eq!(mm.query("q=call+555+123+4567&p=1"), "p=1");
        assert_eq!(mm.query("jane%40example.com=1&p=1"), "p=1");
        assert_eq!(mm.query(""), "");
        let hit = "v=2&tid=G-X&gtm=45je4ca0v9181281589za200&_p=1700000000123&gcs=G100&gcd=13p3p3p2p5l1&npa=1&dma=1&cid=1234567890.1700000000&ul=en-us&sr=1920x1080&uaa=x86&uab=64&uafvl=Not_A%2520Brand%3B8.0.0.0%7CChromium%3B120.0.6099.130&uamb=0&uam=&uap=Windows&uapv=15.0.0&uaw=0&are=1&frm=0&pscdl=noapi&_eu=AAAI&_s=1&tag_exp=101509157~101823848&sid=1700000000&sct=3&seg=1&dl=https%3A%2F%2Fshop.example%2Fp%3Fgclid%3Dabc%26color%3Dred&dr=https%3A%2F%2Fwww.google.com%2F&dt=Shop%20%E2%80%93%20Home&en=page_view&_fv=1&_nsi=1&_ss=1&_ee=1&tfd=3500";
        assert_eq!(mm.query(hit), hit.replace("dl=https%3A%2F%2Fshop.example%2Fp%3Fgclid%3Dabc%26color%3Dred", "dl=https%3A%2F%2Fshop.example%2Fp%3Fcolor%3Dred"));
        assert_eq!(mm.query("gclid=1"), "");
        assert_eq!(mm.query_param("dl", "https://a.example/?gclid=1&b=2").as_deref(), Some("https://a.example/?b=2"));
        assert_eq!(mm.query_param("_uip", "1.2.3.4"), None);
        assert_eq!(mm.query_param("ep.note", "jane@example.com"), None);
        assert_eq!(mm.query_param("en", "page_view").as_deref(), Some("page_view"));
    }

    #[test]
    fn bodies() {
        let mm = m();
        assert_eq!(mm.body(b"en=page_view&_uip=1.2.3.4\r\nen=scroll"), b"en=page_view\r\nen=scroll");
        assert_eq!(mm.body(b"en=a&gclid=1\nen=b&ep.email=x\n"), b"en=a\nen=b\n");
        assert_eq!(mm.body(b"_uip=1.2.3.4\r\nen=scroll\r\n"), b"en=scroll\r\n");
        assert_eq!(mm.body(br#"{"client_id":"1.2","user_data":{"email":"a@b.cc"},"events":[{"name":"x","params":{"ip":"1.2.3.4","v":1}}]}"#), br#"{"client_id":"1.2","events":[{"name":"x","params":{"v":1}}]}"#);
        assert_eq!(mm.body(b"hello world\ncall jane@example.com\nbye"), b"hello world\nbye");
        assert_eq!(mm.body(b"{\"a\":1,\"email\":\"x\"}\nv=2&gclid=1"), b"{\"a\":1}\nv=2");
        assert_eq!(mm.body(b"\xff\xfe jane"), b"");
        assert_eq!(mm.body(b""), b"");
    }

    #[test]
    fn extra_strip_keys_and_click_ids() {
        let mm = Minimiser::new(&["crm_id".into(), "custom.loyalty".into(), "items.*.buyer_id".into(), " ".into()], &["mc_eid".into()]);
        assert!(mm.is_click_id("MC_EID") && mm.is_click_id("gclid") && mm.is_click_id("_gac_UA-123") && !mm.is_click_id("_ga") && !mm.is_click_id("_fbp"));
        let event = json!({
            "crm_id": "42", "custom": {"loyalty": "gold", "crm_id": "stays", "keep": 1},
            "items": [{"item_id": "A", "buyer_id": "b1"}, {"item_id": "B", "buyer_id": "b2"}],
            "x-ga-mp2-mc_eid": "abc", "page_location": "https://a.example/?mc_eid=abc&mc_cid=1"
        });
        let out = mm.event(&event);
        assert_eq!(
            out.value,
            json!({"custom": {"crm_id": "stays", "keep": 1}, "items": [{"item_id": "A"}, {"item_id": "B"}], "page_location": "https://a.example/?mc_cid=1"})
        );
        assert_eq!(sorted(out.removed), ["crm_id", "custom.loyalty", "items.0.buyer_id", "items.1.buyer_id", "page_location?mc_eid", "x-ga-mp2-mc_eid"]);
        assert_eq!(mm.query("crm_id=1&ep.crm_id=2&mc_eid=3&v=2"), "v=2");
        assert_eq!(m().query("crm_id=1&mc_eid=3"), "crm_id=1&mc_eid=3");
    }

    #[test]
    fn realistic_ga4_event() {
        let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let kept = json!({
            "event_name": "purchase",
            "client_id": "1234567890.1700000000",
            "page_referrer": "https://www.google.com/",
            "page_title": "Checkout \u{2013} Shop",
            "page_hostname": "shop.example",
            "page_path": "/checkout",
            "page_encoding": "UTF-8",
            "language": "en-us",
            "screen_resolution": "1920x1080",
            "ga_session_id": "1700000000",
            "ga_session_number": "3",
            "engagement_time_msec": 1200,
            "user_agent": ua,
            "currency": "EUR",
            "value": 59.9,
            "transaction_id": "T-2024-000123",
            "coupon": "SUMMER24",
            "event_id": "1700000000123_1",
            "debug_mode": true,
        });
        let more = json!({
            "x-ga-protocol_version": "2",
            "x-ga-measurement_id": "G-ABC123XYZ",
            "x-ga-gtm_version": "45je4ca0v9181281589za200",
            "x-ga-page_id": 123456789,
            "x-ga-gcs": "G100",
            "x-ga-gcd": "13p3p3p2p5l1",
            "x-ga-npa": "1",
            "x-ga-dma": "1",
            "x-ga-dma_cps": "-",
            "x-ga-request_count": "1",
            "x-ga-tfd": "3500",
            "x-ga-tag_exp": "101509157~101823848~102015666",
            "x-ga-js_client_id": "1234567890.1700000000",
            "x-ga-ur": "US-CA",
            "x-ga-mp2-seg": "1",
            "event_location": {"country": "US", "region": "CA"},
            "client_hints": {
                "architecture": "x86", "bitness": "64", "mobile": false, "platform": "Windows", "platform_version": "15.0.0",
                "full_version_list": [{"brand": "Not_A Brand", "version": "8.0.0.0"}, {"brand": "Chromium", "version": "120.0.6099.130"}]
            },
            "items": [
                {"item_id": "SKU-123", "item_name": "Runner 2", "item_category": "Shoes", "price": 29.95, "quantity": 2, "index": 0},
                {"item_id": "SKU-456", "item_name": "Socks", "price": 0.0, "quantity": 1, "item_list_id": "related_products"}
            ],
            "transaction_hash": "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
        });
        let mut kept = kept;
        kept.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
        let mut event = kept.clone();
        let map = event.as_object_mut().unwrap();
        map.insert("page_location".into(), json!("https://shop.example/checkout?step=2&gclid=EAIaIQ&utm_source=google"));
        map.insert("ip_override".into(), json!("203.0.113.9"));
        map.insert("x-ga-mp2-gclid".into(), json!("EAIaIQobChMI"));
        map.insert("x-ga-system_properties".into(), json!({"uip": "203.0.113.9", "fv": "1", "ss": "1", "sid": "1700000000", "sct": "3"}));
        map.insert("user_data".into(), json!({"sha256_email_address": "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"}));
        map.insert("customer_note".into(), json!("call me at +44 20 7946 0958"));
        assert!(map.len() >= 40, "{}", map.len());

        let out = m().event(&event);
        let mut expected = kept;
        let map = expected.as_object_mut().unwrap();
        map.insert("page_location".into(), json!("https://shop.example/checkout?step=2&utm_source=google"));
        map.insert("x-ga-system_properties".into(), json!({"fv": "1", "ss": "1", "sid": "1700000000", "sct": "3"}));
        assert_eq!(out.value, expected);
        assert_eq!(
            sorted(out.removed),
            ["customer_note", "ip_override", "page_location?gclid", "user_data", "x-ga-mp2-gclid", "x-ga-system_properties.uip"]
        );
        // Nothing to remove: the same event back, nothing reported.
        let clean = m().event(&out.value);
        assert_eq!((clean.value, clean.removed), (out.value, Vec::<String>::new()));
    }

    #[test]
    fn deep_nesting_is_removed_whole() {
        let mut v = json!("x");
        for _ in 0..140 {
            v = json!([v]);
        }
        let out = m().event(&json!({"deep": v}));
        assert_eq!(out.removed.len(), 1);
        assert!(out.removed[0].starts_with("deep.0.0."), "{}", out.removed[0]);
    }

    #[test]
    fn nested_urls_stop_at_a_depth() {
        let mut url = "https://a.example/?gclid=1".to_string();
        for _ in 0..6 {
            url = format!("https://a.example/?u={}", form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>());
        }
        let out = m().url(&url).unwrap();
        assert!(!out.contains("gclid"), "{out}");
        let harmless = "https://a.example/?q=%3Fa%3D%3Fa%3D%3Fa%3D%3Fa%3D%3Fa%3D%3Fa%3D1";
        assert_eq!(m().url(harmless).as_deref(), Some(harmless));
    }
}
