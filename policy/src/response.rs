//! What a template may put in the browser's response. The host owns framing, hop-by-hop
//! behaviour and cookies-as-headers; a template sets headers by name and cookies through their
//! own call, and the claiming client alone sets a final (2xx–5xx) status.

/// Response headers no template may set: framing, hop-by-hop and connection management, and
/// what the host itself writes. `set-cookie` goes through the cookie call.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
    "date",
    "set-cookie",
];

/// Most response headers templates may set on one response (a name set again replaces its
/// value and does not count twice). With [`MAX_COOKIES`] and the host's own, a response stays
/// under the 100 header lines common HTTP clients and proxies accept (hyper's default).
pub const MAX_HEADERS: usize = 32;

/// Longest header a template may set, name and value together, in bytes. Proxies and
/// browsers refuse responses whose header block passes 8–64 KiB; one header stays well below.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Most cookies templates may set on one response (RFC 6265 §6.1 asks browsers to keep at
/// least 50 per domain; more in one response would evict the site's own).
pub const MAX_COOKIES: usize = 32;

/// Longest cookie, name and encoded value, in bytes (RFC 6265 §6.1: browsers keep at least
/// 4096 bytes per cookie, and drop longer ones).
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Largest response body the claiming client may set, in bytes (a proxied `gtag.js` is about
/// 400 KiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Why a response write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseRuleError {
    /// Outside 200–599 (an interim 1xx could make a proxy open a tunnel).
    #[error("{0} is not a final HTTP status: use 200-599")]
    Status(u16),
    /// A header the host owns.
    #[error("header {0:?} is set by the host (use set-cookie for cookies)")]
    ForbiddenHeader(String),
    /// Not an HTTP token.
    #[error("{0} is not a valid header name")]
    HeaderName(String),
    /// A value with characters HTTP does not allow (line breaks, controls).
    #[error("value of {0} has characters HTTP does not allow")]
    Value(String),
    /// One more header or cookie than a response may carry.
    #[error("a response carries at most {max} {what} set by templates; this one has them all")]
    TooMany {
        /// `headers` or `cookies`.
        what: &'static str,
        /// The cap.
        max: usize,
    },
    /// A header, cookie or body over its size cap.
    #[error("{what} is {len} bytes; at most {max} are allowed")]
    TooLarge {
        /// What was too large (`header "x-a"`, `cookie "id"`, `the response body`).
        what: String,
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// A cookie as a template asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec<'a> {
    /// Name.
    pub name: &'a str,
    /// Value (percent-encoded when written).
    pub value: &'a str,
    /// `Domain`.
    pub domain: Option<&'a str>,
    /// `Path`.
    pub path: Option<&'a str>,
    /// `Max-Age` in seconds.
    pub max_age: Option<i64>,
    /// `Secure`.
    pub secure: bool,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`: `Strict`, `Lax` or `None`.
    pub same_site: Option<&'a str>,
}

/// Checks a final status.
pub fn check_status(status: u16) -> Result<(), ResponseRuleError> {
    if (200..=599).contains(&status) { Ok(()) } else { Err(ResponseRuleError::Status(status)) }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
}

/// Visible ASCII, space and tab only (what `http::HeaderValue` accepts as text, minus obs-text).
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Whether a response whose template-set headers are `existing` may take `name` (already
/// checked by [`check_header`]): a new name needs room under [`MAX_HEADERS`].
pub fn check_header_room<'a>(mut existing: impl ExactSizeIterator<Item = &'a str>, name: &str) -> Result<(), ResponseRuleError> {
    if existing.len() < MAX_HEADERS || existing.any(|n| n == name) {
        Ok(())
    } else {
        Err(ResponseRuleError::TooMany { what: "headers", max: MAX_HEADERS })
    }
}

/// Whether a response holding `existing` template-set cookies may take one more.
pub fn check_cookie_room(existing: usize) -> Result<(), ResponseRuleError> {
    if existing < MAX_COOKIES { Ok(()) } else { Err(ResponseRuleError::TooMany { what: "cookies", max: MAX_COOKIES }) }
}

/// Checks the size of a body the claiming client sets.
pub fn check_body(len: usize) -> Result<(), ResponseRuleError> {
    if len <= MAX_BODY_BYTES {
        Ok(())
    } else {
        Err(ResponseRuleError::TooLarge { what: "the response body".into(), len, max: MAX_BODY_BYTES })
    }
}

/// A name chosen by a template, as an error quotes it: at most 64 characters.
fn quoted(name: &str) -> String {
    format!("{:?}", sluice_manifest::shorten(name, 64))
}

/// Checks a header a template sets; returns the name lower-cased, as it is stored.
pub fn check_header(name: &str, value: &str) -> Result<String, ResponseRuleError> {
    let len = name.len() + value.len();
    if len > MAX_HEADER_BYTES {
        return Err(ResponseRuleError::TooLarge { what: format!("header {}", quoted(name)), len, max: MAX_HEADER_BYTES });
    }
    if !is_token(name) {
        return Err(ResponseRuleError::HeaderName(quoted(name)));
    }
    let name = name.to_ascii_lowercase();
    if FORBIDDEN_HEADERS.contains(&name.as_str()) {
        return Err(ResponseRuleError::ForbiddenHeader(name));
    }
    if !is_field_value(value) {
        return Err(ResponseRuleError::Value(format!("header {name:?}")));
    }
    Ok(name)
}

/// The `Set-Cookie` line for a cookie, or why it cannot be sent. `Domain` and `Path` may not
/// carry `;` or `,` (they would inject attributes) or anything outside visible ASCII; the
/// value is percent-encoded, so it can hold anything.
pub fn cookie_line(c: &CookieSpec<'_>) -> Result<String, ResponseRuleError> {
    let what = |attr: &str| ResponseRuleError::Value(format!("cookie {} {attr}", quoted(c.name)));
    // Checked before encoding: encoding at most triples the value.
    let len = c.name.len() + c.value.len();
    if len > MAX_COOKIE_BYTES {
        return Err(ResponseRuleError::TooLarge { what: format!("cookie {}", quoted(c.name)), len, max: MAX_COOKIE_BYTES });
    }
    if !is_token(c.name) {
        return Err(what("name"));
    }
    let attribute_ok = |s: &str| is_field_value(s) && !s.contains([';', ',']) && !s.trim().is_empty();
    let mut line = format!("{}={}", c.name, encode_cookie_value(c.value));
    let len = line.len();
    if len > MAX_COOKIE_BYTES {
        return Err(ResponseRuleError::TooLarge { what: format!("cookie {} once encoded", quoted(c.name)), len, max: MAX_COOKIE_BYTES });
    }
    if let Some(domain) = c.domain {
        if !attribute_ok(domain) || domain.contains(char::is_whitespace) {
            return Err(what("Domain"));
        }
        line.push_str("; Domain=");
        line.push_str(domain);
    }
    if let Some(path) = c.path {
        if !attribute_ok(path) || !path.starts_with('/') {
            return Err(what("Path (must start with / and hold no ; or ,)"));
        }
        line.push_str("; Path=");
        line.push_str(path);
    }
    if let Some(age) = c.max_age {
        line.push_str(&format!("; Max-Age={}", age.max(0)));
    }
    if c.secure {
        line.push_str("; Secure");
    }
    if c.http_only {
        line.push_str("; HttpOnly");
    }
    if let Some(same_site) = c.same_site {
        line.push_str("; SameSite=");
        line.push_str(same_site);
    }
    Ok(line)
}

/// Percent-encodes what a cookie value may not hold (RFC 6265 cookie-octets are kept).
pub fn encode_cookie_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let allowed = b == 0x21 || (0x23..=0x2b).contains(&b) || (0x2d..=0x3a).contains(&b) || (0x3c..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
        if allowed && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(name: &'a str, value: &'a str) -> CookieSpec<'a> {
        CookieSpec { name, value, domain: None, path: Some("/"), max_age: None, secure: true, http_only: false, same_site: Some("Lax") }
    }

    #[test]
    fn headers_the_host_owns_are_refused() {
        for name in ["Content-Length", "keep-alive", "TE", "proxy-connection", "host", "date", "content-encoding", "set-cookie"] {
            assert!(matches!(check_header(name, "x"), Err(ResponseRuleError::ForbiddenHeader(_))), "{name}");
        }
        assert_eq!(check_header("X-Custom", "ok"), Ok("x-custom".into()));
        assert!(check_header("x-a", "bad\r\nset-cookie: a=b").is_err());
        assert!(check_header("bad name", "x").is_err());
        assert!(check_status(101).is_err() && check_status(204).is_ok() && check_status(600).is_err());
    }

    #[test]
    fn cookie_attributes_cannot_inject() {
        assert_eq!(cookie_line(&spec("_fbp", "fb.1.2 3;x")).unwrap(), "_fbp=fb.1.2%203%3Bx; Path=/; Secure; SameSite=Lax");
        let bad_path = CookieSpec { path: Some("/; Domain=evil.example"), ..spec("a", "b") };
        assert!(cookie_line(&bad_path).is_err());
        let bad_domain = CookieSpec { domain: Some("example.com, b=c"), ..spec("a", "b") };
        assert!(cookie_line(&bad_domain).is_err());
        let ok = CookieSpec { domain: Some(".example.com"), max_age: Some(60), http_only: true, ..spec("a", "b") };
        assert_eq!(cookie_line(&ok).unwrap(), "a=b; Domain=.example.com; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax");
        assert!(cookie_line(&spec("bad=name", "b")).is_err());
    }

    #[test]
    fn counts_and_sizes_are_capped() {
        let big = "v".repeat(MAX_HEADER_BYTES);
        assert!(matches!(check_header("x-big", &big), Err(ResponseRuleError::TooLarge { max: MAX_HEADER_BYTES, .. })));
        let huge_name = "n".repeat(20 << 20);
        let err = check_header(&huge_name, "1").unwrap_err().to_string();
        assert!(err.len() < 200, "the error quotes a bounded part of the name: {} bytes", err.len());
        let names: Vec<String> = (0..MAX_HEADERS).map(|i| format!("x-{i}")).collect();
        let full = || names.iter().map(String::as_str);
        assert!(check_header_room(full().take(MAX_HEADERS - 1), "x-new").is_ok());
        assert!(matches!(check_header_room(full(), "x-new"), Err(ResponseRuleError::TooMany { what: "headers", .. })));
        assert!(check_header_room(full(), "x-3").is_ok(), "replacing a header needs no room");
        assert!(check_cookie_room(MAX_COOKIES - 1).is_ok() && check_cookie_room(MAX_COOKIES).is_err());
        assert!(check_body(MAX_BODY_BYTES).is_ok() && check_body(MAX_BODY_BYTES + 1).is_err());
        let long = "x".repeat(MAX_COOKIE_BYTES);
        assert!(matches!(cookie_line(&spec("id", &long)), Err(ResponseRuleError::TooLarge { .. })));
        // 2,000 spaces are 2,000 bytes raw and 6,000 encoded: refused once encoded.
        let spaces = " ".repeat(2000);
        assert!(cookie_line(&spec("id", &spaces)).unwrap_err().to_string().contains("once encoded"));
        assert!(cookie_line(&spec("id", &"x".repeat(4000))).is_ok());
    }
}
