//! First-party id cookies a tag declares and the host sets for it, in the visitor's request,
//! without running the tag: the identifiers a vendor's browser pixel would set (Meta's `_fbp`
//! and `_fbc`, TikTok's `_ttp`, Google's `_gcl_aw`...).
//!
//! Setting such a cookie is the only thing many tags need from the visitor's request, and a
//! sandbox per event just for that costs more than everything else the host does for the tag
//! (Meta's `fire` was a quarter of a hit's CPU in the request path; BENCHMARKS.md). Declared
//! here, the cookie is a rule the host applies itself — and the SDK's mock host applies the
//! same rule (`sluice_policy::id_cookies`) — so the tag can have no `fire` at all: the host sets
//! the cookies, then queues the event with them for `deliver`.
//!
//! Two kinds, after what pixels do:
//! * [`IdCookie::minted`]: set when the visitor has none, to a new value (`_fbp`:
//!   `fb.1.{now_ms}.{random}`);
//! * [`IdCookie::click_id`]: set when the event's `page_location` carries a click id in a query
//!   parameter and the cookie does not already hold that id (`_fbc`:
//!   `fb.1.{now_ms}.{click_id}` from `fbclid`).
//!
//! The value is a pattern: `{now_ms}` (milliseconds since the epoch), `{now_s}` (seconds),
//! `{random}` (ten random digits) and, for a click id, `{click_id}`. The cookie is written as
//! the SDK's `Cookie::new` writes one (`Path=/; Secure; SameSite=Lax`) with the declared
//! lifetime. It stays within the tag's grant: the host reads the cookie only if the tag may read
//! it, sets it only if the tag may set it, and reads `page_location` only if the tag may see it.

use serde::{Deserialize, Serialize};

/// A first-party id cookie the host sets for a tag (the `const` form a template author writes,
/// in [`crate::Delivery::with_id_cookies`]; the host reads it back as [`IdCookieSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdCookie {
    /// The cookie's name (it must be in the tag's `cookies` and `response_cookies`).
    pub name: &'static str,
    /// The value pattern (see the module docs for its placeholders).
    pub value: &'static str,
    /// For a click id: the query parameter of the event's `page_location` that carries it.
    /// `None`: a minted id, set when the visitor has none.
    pub click_param: Option<&'static str>,
    /// Its lifetime (`Max-Age`), in days.
    pub max_age_days: u32,
    /// A boolean parameter that switches it off when the operator sets it to `false`.
    pub enabled_by: Option<&'static str>,
}

impl IdCookie {
    /// An id minted when the visitor has none: `value` with `{now_ms}`, `{now_s}` and
    /// `{random}` filled in.
    pub const fn minted(name: &'static str, value: &'static str, max_age_days: u32) -> IdCookie {
        IdCookie { name, value, click_param: None, max_age_days, enabled_by: None }
    }

    /// A click id: set when the event's `page_location` has the query parameter `param` and the
    /// cookie does not already hold that id; `value` with `{click_id}` (and `{now_ms}`,
    /// `{now_s}`) filled in.
    pub const fn click_id(name: &'static str, param: &'static str, value: &'static str, max_age_days: u32) -> IdCookie {
        IdCookie { name, value, click_param: Some(param), max_age_days, enabled_by: None }
    }

    /// Only while the boolean parameter `param` is true (it must be declared with a default).
    pub const fn enabled_by(self, param: &'static str) -> IdCookie {
        IdCookie { enabled_by: Some(param), ..self }
    }
}

/// [`IdCookie`] as a template's manifest JSON carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdCookieSpec {
    /// See [`IdCookie::name`].
    pub name: String,
    /// See [`IdCookie::value`].
    pub value: String,
    /// See [`IdCookie::click_param`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_param: Option<String>,
    /// See [`IdCookie::max_age_days`].
    pub max_age_days: u32,
    /// See [`IdCookie::enabled_by`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_by: Option<String>,
}

impl From<&IdCookie> for IdCookieSpec {
    fn from(c: &IdCookie) -> Self {
        IdCookieSpec {
            name: c.name.into(),
            value: c.value.into(),
            click_param: c.click_param.map(Into::into),
            max_age_days: c.max_age_days,
            enabled_by: c.enabled_by.map(Into::into),
        }
    }
}

/// Browsers cap a cookie's lifetime at 400 days (RFC 6265bis).
const MAX_AGE_DAYS: u32 = 400;

/// The placeholders a value pattern may hold, and whether each needs a click id.
const PLACEHOLDERS: &[(&str, bool)] = &[("now_ms", false), ("now_s", false), ("random", false), ("click_id", true)];

impl IdCookieSpec {
    /// Checks the pattern and the lifetime; the error says what is wrong and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_age_days == 0 || self.max_age_days > MAX_AGE_DAYS {
            return Err(format!("max_age_days {} is not 1 to {MAX_AGE_DAYS} (browsers keep a cookie at most 400 days)", self.max_age_days));
        }
        if self.click_param.as_deref().is_some_and(str::is_empty) {
            return Err("the click id's query parameter is empty: name it, e.g. \"fbclid\"".into());
        }
        let mut rest = self.value.as_str();
        let mut has_click_id = false;
        while let Some(open) = rest.find('{') {
            let after = rest.get(open + 1..).unwrap_or_default();
            let Some(close) = after.find('}') else {
                return Err(format!("value {:?} opens a placeholder it does not close", self.value));
            };
            let name = after.get(..close).unwrap_or_default();
            match PLACEHOLDERS.iter().find(|(p, _)| *p == name) {
                Some((_, true)) if self.click_param.is_none() => {
                    return Err("{click_id} needs a click id: declare it with IdCookie::click_id(name, param, ..)".into());
                }
                Some((_, click)) => has_click_id |= click,
                None => return Err(format!("value {:?}: unknown placeholder {{{name}}}; use {{now_ms}}, {{now_s}}, {{random}} or {{click_id}}", self.value)),
            }
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if self.click_param.is_some() && !has_click_id {
            return Err(format!("value {:?} of a click id must hold {{click_id}}", self.value));
        }
        Ok(())
    }

    /// The value, its placeholders filled in.
    pub fn render(&self, now_ms: u64, random: u64, click_id: Option<&str>) -> String {
        self.value
            .replace("{now_ms}", &now_ms.to_string())
            .replace("{now_s}", &(now_ms / 1000).to_string())
            .replace("{random}", &format!("{:010}", random % 10_000_000_000))
            .replace("{click_id}", click_id.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c: IdCookie) -> IdCookieSpec {
        IdCookieSpec::from(&c)
    }

    #[test]
    fn patterns_fill_in_their_placeholders() {
        let fbp = spec(IdCookie::minted("_fbp", "fb.1.{now_ms}.{random}", 90));
        assert!(fbp.validate().is_ok());
        assert_eq!(fbp.render(1_596_403_881_668, 42, None), "fb.1.1596403881668.0000000042");
        let gclid = spec(IdCookie::click_id("_gcl_aw", "gclid", "GCL.{now_s}.{click_id}", 90));
        assert!(gclid.validate().is_ok());
        assert_eq!(gclid.render(1_596_403_881_668, 7, Some("Cj0K")), "GCL.1596403881.Cj0K");
    }

    #[test]
    fn a_bad_pattern_or_lifetime_is_refused_with_the_fix() {
        let unknown = spec(IdCookie::minted("_x", "x.{nonce}", 90)).validate().unwrap_err();
        assert!(unknown.contains("{nonce}") && unknown.contains("{random}"), "{unknown}");
        let click_without_param = spec(IdCookie::minted("_x", "x.{click_id}", 90)).validate().unwrap_err();
        assert!(click_without_param.contains("IdCookie::click_id"), "{click_without_param}");
        let click_without_placeholder = spec(IdCookie::click_id("_x", "xclid", "x.{now_ms}", 90)).validate().unwrap_err();
        assert!(click_without_placeholder.contains("{click_id}"), "{click_without_placeholder}");
        assert!(spec(IdCookie::minted("_x", "x.{random", 90)).validate().unwrap_err().contains("does not close"));
        assert!(spec(IdCookie::minted("_x", "x", 0)).validate().unwrap_err().contains("max_age_days 0"));
        assert!(spec(IdCookie::minted("_x", "x", 401)).validate().unwrap_err().contains("400 days"));
    }
}
