//! Reading the incoming request, as a template's host calls do: the same answers from the host
//! (over the HTTP request) and the mock host (over the test's request), with personal data
//! removed when `ad_user_data` is not granted.
//!
//! Both sides implement [`RequestSource`] over what they hold; [`Reads`] is every accessor's
//! rule (how repeated headers join, how cookies and query parameters are parsed, what the
//! [`Minimiser`] hides). The permission check comes first, on each side, with the grant.

use crate::personal_data::Minimiser;

/// The raw request, as a host holds it.
pub trait RequestSource {
    /// The raw query string (no leading `?`).
    fn query(&self) -> &str;
    /// Every value of the header with this (case-insensitive) name, in order.
    fn header_values(&self, name: &str) -> Vec<&str>;
    /// The body.
    fn body(&self) -> &[u8];
    /// The visitor's IP address, as text.
    fn remote_address(&self) -> Option<String>;
}

/// The request accessors' rules for one invocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reads<'a> {
    /// Set when `ad_user_data` is not granted: every answer goes through it.
    pub minimiser: Option<&'a Minimiser>,
}

impl Reads<'_> {
    /// The query string.
    pub fn query_string(&self, src: &dyn RequestSource) -> String {
        match self.minimiser {
            Some(m) => m.query(src.query()),
            None => src.query().to_string(),
        }
    }

    /// The percent-decoded value of the first query parameter with this name.
    pub fn query_param(&self, src: &dyn RequestSource, name: &str) -> Option<String> {
        let value = form_urlencoded::parse(src.query().as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())?;
        match self.minimiser {
            Some(m) => m.query_param(name, &value),
            None => Some(value),
        }
    }

    /// A header; repeated headers are joined with `", "`.
    pub fn header(&self, src: &dyn RequestSource, name: &str) -> Option<String> {
        let values = src.header_values(name);
        let value = (!values.is_empty()).then(|| values.join(", "))?;
        match self.minimiser {
            Some(m) => m.header(name, &value),
            None => Some(value),
        }
    }

    /// Every value of the cookies with this name, percent-decoded.
    pub fn cookie(&self, src: &dyn RequestSource, name: &str) -> Vec<String> {
        cookie_values(src.header_values("cookie"), name).into_iter().filter_map(|v| self.cookie_value(name, v)).collect()
    }

    /// A cookie's value as this read sees it: `None` when it is personal data and personal
    /// data is removed.
    fn cookie_value(&self, name: &str, value: String) -> Option<String> {
        match self.minimiser {
            Some(m) => m.cookie(name, &value),
            None => Some(value),
        }
    }

    /// Every cookie whose name `granted` accepts, name and value, in the request's order: what
    /// a tag without `fire` gets with its queued event, read as [`Reads::cookie`] reads one.
    /// One pass over the `Cookie` headers: a name's values stay together, at its first place.
    pub fn granted_cookies(&self, src: &dyn RequestSource, granted: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let headers = src.header_values("cookie");
        let mut found: Vec<(&str, Vec<String>)> = Vec::new();
        for (name, value) in headers.iter().flat_map(|h| cookie_pairs(h)) {
            match found.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(percent_decode(value)),
                None if granted(name) => found.push((name, vec![percent_decode(value)])),
                None => {}
            }
        }
        let mut cookies = Vec::with_capacity(found.iter().map(|(_, values)| values.len()).sum());
        for (name, values) in found {
            cookies.extend(values.into_iter().filter_map(|v| self.cookie_value(name, v)).map(|v| (name.to_string(), v)));
        }
        cookies
    }

    /// [`Reads::granted_cookies`] as the browser holds them after this response: each cookie
    /// the response sets (`set`, name and value, in the order set) replaces the request's of
    /// that name. What a tag that ran `fire` first (to set cookies) gets with its queued event.
    pub fn cookies_after_response(
        &self,
        src: &dyn RequestSource,
        set: &[(String, String)],
        granted: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut cookies = self.granted_cookies(src, &granted);
        for (name, value) in set.iter().filter(|(name, _)| granted(name)) {
            cookies.retain(|(n, _)| n != name);
            cookies.extend(self.cookie_value(name, value.clone()).map(|v| (name.clone(), v)));
        }
        cookies
    }

    /// The body.
    pub fn body(&self, src: &dyn RequestSource) -> Vec<u8> {
        match self.minimiser {
            Some(m) => m.body(src.body()),
            None => src.body().to_vec(),
        }
    }

    /// The visitor's IP address: hidden when personal data is removed.
    pub fn remote_address(&self, src: &dyn RequestSource) -> Option<String> {
        if self.minimiser.is_some() { None } else { src.remote_address() }
    }
}

/// The values of the cookies named `name` in a request's `Cookie` header values,
/// percent-decoded: the one cookie parser.
pub fn cookie_values<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Vec<String> {
    headers.into_iter().flat_map(cookie_pairs).filter(|(k, _)| *k == name).map(|(_, v)| percent_decode(v)).collect()
}

/// A `Cookie` header's pairs in order: the name trimmed, the value trimmed and unquoted (still
/// percent-encoded). A piece without `=` is not a cookie.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let value = value.trim();
        Some((name.trim(), value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)))
    })
}

/// The name and decoded value a `Set-Cookie` line sets (the inverse of the host's
/// [`crate::response::cookie_line`]).
pub fn set_cookie_pair(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split(';').next()?.split_once('=')?;
    Some((name.trim().to_string(), percent_decode(value.trim())))
}

fn percent_decode(s: &str) -> String {
    // form_urlencoded would also turn '+' into a space, which cookies do not do.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req(Vec<(&'static str, &'static str)>);

    impl RequestSource for Req {
        fn query(&self) -> &str {
            "gclid=abc&v=2"
        }
        fn header_values(&self, name: &str) -> Vec<&str> {
            self.0.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v).collect()
        }
        fn body(&self) -> &[u8] {
            b""
        }
        fn remote_address(&self) -> Option<String> {
            Some("203.0.113.7".into())
        }
    }

    #[test]
    fn reads_join_parse_and_minimise() {
        let req = Req(vec![("Accept", "a"), ("accept", "b"), ("cookie", "_ga=1; _gcl_aw=x")]);
        let plain = Reads::default();
        assert_eq!(plain.header(&req, "accept").as_deref(), Some("a, b"));
        assert_eq!(plain.cookie(&req, "_gcl_aw"), ["x"]);
        assert_eq!(plain.query_param(&req, "gclid").as_deref(), Some("abc"));
        assert_eq!(plain.remote_address(&req).as_deref(), Some("203.0.113.7"));
        let m = Minimiser::default();
        let minimised = Reads { minimiser: Some(&m) };
        assert!(minimised.cookie(&req, "_gcl_aw").is_empty());
        assert_eq!(minimised.cookie(&req, "_ga"), ["1"]);
        assert_eq!(minimised.query_param(&req, "gclid"), None);
        assert_eq!(minimised.query_string(&req), "v=2");
        assert_eq!(minimised.remote_address(&req), None);
    }

    #[test]
    fn granted_cookies_are_those_the_grant_names_read_as_one_cookie_is() {
        let src = Req(vec![("cookie", "_ttp=a%20b; session=secret; ttclid=x"), ("cookie", "_ttp=second")]);
        let granted = |n: &str| n == "_ttp" || n == "ttclid";
        assert_eq!(
            Reads::default().granted_cookies(&src, granted),
            [("_ttp".to_string(), "a b".to_string()), ("_ttp".into(), "second".into()), ("ttclid".into(), "x".into())],
            "every value, decoded, and nothing the grant does not name"
        );
        assert!(Reads::default().granted_cookies(&src, |_| false).is_empty());

        // With personal data removed, exactly what reading each name alone gives.
        let src = Req(vec![("cookie", "_ga=1; _gcl_aw=click; _fbp=fb.1; _ga=2")]);
        let m = Minimiser::default();
        let minimised = Reads { minimiser: Some(&m) };
        let one_by_one: Vec<(String, String)> =
            ["_ga", "_gcl_aw", "_fbp"].iter().flat_map(|n| minimised.cookie(&src, n).into_iter().map(|v| (n.to_string(), v))).collect();
        assert_eq!(minimised.granted_cookies(&src, |_| true), one_by_one);
        assert!(!one_by_one.iter().any(|(n, _)| n == "_gcl_aw"), "the click id is personal data");
    }

    #[test]
    fn after_the_response_a_cookie_it_sets_replaces_the_requests() {
        let src = Req(vec![("cookie", "_fbp=old; _fbc=kept; other=x")]);
        let spec = crate::response::CookieSpec {
            name: "_fbp",
            value: "fb.1.2.3 ✓",
            domain: None,
            path: Some("/"),
            max_age: Some(60),
            secure: true,
            http_only: false,
            same_site: Some("Lax"),
        };
        let line = crate::response::cookie_line(&spec).unwrap();
        let set: Vec<(String, String)> = [line.as_str(), "ignored=1; Path=/"].iter().filter_map(|l| set_cookie_pair(l)).collect();
        let granted = |n: &str| n == "_fbp" || n == "_fbc";
        assert_eq!(
            Reads::default().cookies_after_response(&src, &set, granted),
            [("_fbc".to_string(), "kept".to_string()), ("_fbp".into(), "fb.1.2.3 ✓".into())]
        );
    }

    #[test]
    fn cookie_values_are_found_and_decoded() {
        let headers = ["_ga=GA1.1.2; cmp=ad_storage%3Dgranted", "x=1; _ga=second"];
        assert_eq!(cookie_values(headers, "_ga"), ["GA1.1.2", "second"]);
        assert_eq!(cookie_values(headers, "cmp"), ["ad_storage=granted"]);
        assert!(cookie_values(headers, "none").is_empty());
        assert_eq!(cookie_values(["a=%E2%9C%93+x"], "a"), ["✓+x"]);
    }
}
