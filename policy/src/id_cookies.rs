//! Which of a tag's declared id cookies ([`sluice_manifest::IdCookie`]) the host sets for an
//! event, and their `Set-Cookie` lines: the host's fan-out and the SDK's mock host both call
//! [`for_tag`], so a template author's test sees the cookies production would set.

use std::collections::HashMap;

use serde_json::Value;
use sluice_manifest::{EffectiveGrant, IdCookieSpec, url_param};

use crate::params::Param;
use crate::request::{Reads, RequestSource};
use crate::response::{CookieSpec, cookie_line};

/// The declared id cookies the parameters leave on: one whose `enabled_by` flag the operator
/// set to `false` is off (decided once, at load).
pub fn enabled(declared: &[IdCookieSpec], params: &HashMap<String, Param>) -> Vec<IdCookieSpec> {
    let on = |flag: &String| params.get(flag).is_none_or(|p| p.value != Value::Bool(false));
    declared.iter().filter(|c| c.enabled_by.as_ref().is_none_or(on)).cloned().collect()
}

/// An id cookie to set: its name, value and `Set-Cookie` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdCookieSet {
    /// The cookie's name.
    pub name: String,
    /// Its new value.
    pub value: String,
    /// Its lifetime in seconds (`Max-Age`).
    pub max_age_secs: i64,
    /// The `Set-Cookie` line (`Path=/; Secure; SameSite=Lax`, `Max-Age` from the declaration).
    pub line: String,
}

/// What [`due`] decides on, for one tag and one event.
#[derive(Debug, Clone, Copy)]
struct IdCookieInputs<'a> {
    /// The event's `page_location`, if the tag may see it.
    page_location: Option<&'a str>,
    /// Milliseconds since the epoch.
    now_ms: u64,
    /// A fresh random number (for `{random}`).
    random: u64,
}

/// One tag's view of one event, as the host holds it when it sets the tag's id cookies.
#[derive(Clone, Copy)]
pub struct TagView<'a> {
    /// The tag's effective grant.
    pub grant: &'a EffectiveGrant,
    /// The event as the tag may see it (minimised when `ad_user_data` is not granted).
    pub event: &'a Value,
    /// The visitor's request.
    pub request: &'a dyn RequestSource,
    /// How the tag's request reads go (through the minimiser when the event is minimised).
    pub reads: Reads<'a>,
    /// The cookies this response sets so far (name and decoded value, in the order set).
    pub set: &'a [(String, String)],
}

/// The id cookies due for `tag`, within its grant: only cookies it may both read and set
/// (without reading one the host cannot know the visitor's id, and must not replace it), from
/// a `page_location` it may see, each cookie's current value read as the tag's own read would
/// see it after this response so far ([`Reads::cookies_after_response`]).
pub fn for_tag(declared: &[IdCookieSpec], tag: TagView<'_>, now_ms: u64, random: u64) -> Vec<IdCookieSet> {
    let page_location = tag.grant.check_event_key("page_location").ok().and_then(|()| tag.event.get("page_location")).and_then(Value::as_str);
    let current = |name: &str| tag.reads.cookies_after_response(tag.request, tag.set, |n| n == name).pop().map(|(_, value)| value);
    let allowed = |name: &str| tag.grant.check_cookie(name).is_ok() && tag.grant.check_response_cookie(name).is_ok();
    due(declared, IdCookieInputs { page_location, now_ms, random }, current, allowed)
}

/// The id cookies due for this event, in declaration order. `current(name)` is the cookie's
/// value as the browser will hold it after this response so far (the request's, or one this
/// response already sets), `None` when it has none; `allowed(name)` is whether the tag may
/// read and set it (a cookie it may not is never touched: without reading it the host cannot
/// know the visitor's id, and must not replace it).
///
/// * a minted id is due when the visitor has none (or an empty one);
/// * a click id is due when `page_location` carries its query parameter and the cookie does
///   not already hold that id (as one of its `.`-separated parts: pixels append to it);
/// * a value too large for a cookie is left out.
fn due(
    declared: &[IdCookieSpec],
    inputs: IdCookieInputs<'_>,
    current: impl Fn(&str) -> Option<String>,
    allowed: impl Fn(&str) -> bool,
) -> Vec<IdCookieSet> {
    let mut out = Vec::new();
    for c in declared.iter().filter(|c| allowed(&c.name)) {
        let now = current(&c.name).filter(|v| !v.is_empty());
        let value = match &c.click_param {
            None if now.is_none() => c.render(inputs.now_ms, inputs.random, None),
            None => continue,
            Some(param) => {
                let Some(id) = inputs.page_location.and_then(|url| url_param(url, param)) else { continue };
                if now.is_some_and(|v| v.split('.').any(|part| part == id)) {
                    continue;
                }
                c.render(inputs.now_ms, inputs.random, Some(&id))
            }
        };
        let max_age = i64::from(c.max_age_days) * 24 * 3600;
        let spec = CookieSpec { name: &c.name, value: &value, domain: None, path: Some("/"), max_age: Some(max_age), secure: true, http_only: false, same_site: Some("Lax") };
        // A value no cookie can hold (a click id of kilobytes, from the visitor's URL) is not
        // set: the vendor still gets the click id from the page URL in the queued event.
        let Ok(line) = cookie_line(&spec) else { continue };
        out.push(IdCookieSet { name: c.name.clone(), value, max_age_secs: max_age, line });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_manifest::IdCookie;

    fn meta() -> Vec<IdCookieSpec> {
        [IdCookie::minted("_fbp", "fb.1.{now_ms}.{random}", 90), IdCookie::click_id("_fbc", "fbclid", "fb.1.{now_ms}.{click_id}", 90)]
            .iter()
            .map(IdCookieSpec::from)
            .collect()
    }

    fn inputs(page: Option<&str>) -> IdCookieInputs<'_> {
        IdCookieInputs { page_location: page, now_ms: 1_700_000_000_123, random: 1_116_446_470 }
    }

    fn names(set: &[IdCookieSet]) -> Vec<&str> {
        set.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_new_visitor_gets_a_minted_id_and_the_click_id_of_the_page() {
        let set = due(&meta(), inputs(Some("https://shop.example/?a=1&fbclid=IwAR2F4#top")), |_| None, |_| true);
        assert_eq!(names(&set), ["_fbp", "_fbc"]);
        assert_eq!(set[0].value, "fb.1.1700000000123.1116446470");
        assert_eq!(set[0].line, "_fbp=fb.1.1700000000123.1116446470; Path=/; Max-Age=7776000; Secure; SameSite=Lax");
        assert_eq!(set[1].value, "fb.1.1700000000123.IwAR2F4");
    }

    #[test]
    fn an_id_the_visitor_holds_is_kept() {
        let held = |name: &str| match name {
            "_fbp" => Some("fb.1.1596403881668.1116446470".to_string()),
            _ => Some("fb.1.1596403881668.IwAR2F4".to_string()),
        };
        assert!(due(&meta(), inputs(Some("https://shop.example/?fbclid=IwAR2F4")), held, |_| true).is_empty());
        // A new click replaces the old click id; no click, nothing to do.
        let set = due(&meta(), inputs(Some("https://shop.example/?fbclid=NEW")), held, |_| true);
        assert_eq!((names(&set), set[0].value.as_str()), (vec!["_fbc"], "fb.1.1700000000123.NEW"));
        assert!(due(&meta(), inputs(Some("https://shop.example/")), held, |_| true).is_empty());
        // An empty cookie is no id.
        assert_eq!(names(&due(&meta(), inputs(None), |_| Some(String::new()), |_| true)), ["_fbp"]);
    }

    #[test]
    fn a_cookie_outside_the_grant_is_never_touched() {
        let set = due(&meta(), inputs(Some("https://shop.example/?fbclid=X")), |_| None, |name| name == "_fbc");
        assert_eq!(names(&set), ["_fbc"]);
        assert!(due(&meta(), inputs(Some("https://shop.example/?fbclid=X")), |_| None, |_| false).is_empty());
    }

    #[test]
    fn a_click_id_too_large_for_a_cookie_is_left_out_and_the_rest_is_set() {
        let page = format!("https://shop.example/?fbclid={}", "x".repeat(8000));
        assert_eq!(names(&due(&meta(), inputs(Some(&page)), |_| None, |_| true)), ["_fbp"]);
    }

    #[test]
    fn a_cookie_switched_off_by_its_flag_is_not_declared_any_more() {
        let declared: Vec<IdCookieSpec> = [IdCookie::minted("_a", "a", 1).enabled_by("set_cookies"), IdCookie::minted("_b", "b", 1)]
            .iter()
            .map(IdCookieSpec::from)
            .collect();
        let params = |on: bool| HashMap::from([("set_cookies".to_string(), Param::plain(on.into()))]);
        assert_eq!(enabled(&declared, &params(true)).len(), 2);
        let off = enabled(&declared, &params(false));
        assert_eq!(off.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["_b"]);
    }
}
