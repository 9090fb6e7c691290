//! Outbound URL patterns, following sGTM's `send_http` convention.
//!
//! * `https://graph.facebook.com/`: a path ending in `/` is a prefix, so this allows every URL
//!   on that host (query strings included).
//! * `https://*.tiktok.com/*`: a leading `*.` in the host covers the domain itself and every
//!   subdomain (sGTM matches the apex too, unlike Spin); `*` in the path matches any run of
//!   characters.
//! * `https://example.com/hook`: no `/` at the end and no `*` means exactly that path (any query).
//! * `*` on its own: any URL. Useful in a template's *declaration* when the operator picks the
//!   endpoint (a webhook); the operator's grant then does the narrowing.
//!
//! Patterns are parsed once, at load, with errors that say how to fix them (Spin's users found a
//! silently non-matching trailing slash hard to debug, spin#2545), and matched against URLs
//! parsed by the `url` crate, which has already normalised case, ports and `..` segments.

use url::Url;

/// A parsed outbound URL pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    inner: Option<Parsed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    scheme: String,
    host: Host,
    port: Option<u16>,
    path: PathRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.example.com`, stored as `example.com`.
    WithSubdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathRule {
    Prefix(String),
    Exact(String),
    /// A glob; `with_query` when the pattern itself has a `?`.
    Glob { glob: String, with_query: bool },
}

/// Why an outbound pattern does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlPatternError {
    /// No `scheme://`.
    #[error("a pattern starts with https:// (for example \"https://graph.facebook.com/\")")]
    MissingScheme,
    /// A scheme other than http or https.
    #[error("scheme {0:?} is not supported: use https:// (or http:// for a test server the operator allows)")]
    Scheme(String),
    /// `user:pass@` in the pattern.
    #[error("credentials (user@) are not allowed in a pattern; send them in a header instead")]
    Credentials,
    /// Empty host, bad port, or a `*` somewhere other than a leading `*.`.
    #[error("host {0:?} is not valid: write a host name, optionally starting with \"*.\" to include subdomains, and an optional :port")]
    Host(String),
    /// Nothing after the host.
    #[error("a pattern needs a path: add a trailing \"/\" to allow every path on this host")]
    MissingPath,
}

impl UrlPattern {
    /// Parses a pattern.
    pub fn parse(pattern: &str) -> Result<Self, UrlPatternError> {
        if pattern == "*" {
            return Ok(UrlPattern { inner: None });
        }
        let (scheme, rest) = pattern.split_once("://").ok_or(UrlPatternError::MissingScheme)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(UrlPatternError::Scheme(scheme));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(UrlPatternError::MissingPath),
        };
        if authority.contains('@') {
            return Err(UrlPatternError::Credentials);
        }
        let (host, port) = split_port(authority)?;
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(domain) => Host::WithSubdomains(domain.to_string()),
            None => Host::Exact(host.clone()),
        };
        let name = match &host {
            Host::Exact(h) | Host::WithSubdomains(h) => h,
        };
        if name.is_empty() || name.contains('*') || name.contains(char::is_whitespace) {
            return Err(UrlPatternError::Host(authority.to_string()));
        }
        let path = if path.contains('*') {
            PathRule::Glob { glob: path.to_string(), with_query: path.contains('?') }
        } else if path.ends_with('/') {
            PathRule::Prefix(path.to_string())
        } else {
            PathRule::Exact(path.to_string())
        };
        Ok(UrlPattern { inner: Some(Parsed { scheme, host, port, path }) })
    }

    /// Whether `url` is covered by this pattern. URLs with credentials never are.
    pub fn matches(&self, url: &Url) -> bool {
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(p) = &self.inner else { return true };
        if url.scheme() != p.scheme {
            return false;
        }
        let Some(host) = url.host_str() else { return false };
        let host_ok = match &p.host {
            Host::Exact(h) => host == h,
            Host::WithSubdomains(d) => {
                host == d || (host.len() > d.len() && host.ends_with(d.as_str()) && host[..host.len() - d.len()].ends_with('.'))
            }
        };
        if !host_ok {
            return false;
        }
        let default_port = if p.scheme == "https" { 443 } else { 80 };
        if url.port_or_known_default() != Some(p.port.unwrap_or(default_port)) {
            return false;
        }
        match &p.path {
            PathRule::Prefix(prefix) => url.path().starts_with(prefix.as_str()),
            PathRule::Exact(path) => url.path() == path,
            PathRule::Glob { glob, with_query } => match (with_query, url.query()) {
                (true, Some(q)) => glob_match(glob, &format!("{}?{}", url.path(), q)),
                _ => glob_match(glob, url.path()),
            },
        }
    }
}

fn split_port(authority: &str) -> Result<(&str, Option<u16>), UrlPatternError> {
    let bad = || UrlPatternError::Host(authority.to_string());
    // IPv6 literal: [::1]:8080
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or_else(bad)?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port.parse().map_err(|_| bad())?))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(bad()),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port.parse().map_err(|_| bad())?))),
        None => Ok((authority, None)),
    }
}

/// `*` matches any run of characters (including `/`); everything else is literal.
fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, url: &str) -> bool {
        UrlPattern::parse(pattern).expect("pattern").matches(&Url::parse(url).expect("url"))
    }

    #[test]
    fn trailing_slash_is_a_prefix_including_the_query() {
        assert!(allows("https://graph.facebook.com/", "https://graph.facebook.com/v21.0/123/events?access_token=x"));
        assert!(!allows("https://graph.facebook.com/", "https://graph.facebook.com.evil.com/"));
        assert!(!allows("https://graph.facebook.com/", "http://graph.facebook.com/v21.0/"));
        assert!(allows("https://www.gtmtools.com/", "https://www.gtmtools.com/tracking/this/"));
    }

    #[test]
    fn leading_star_covers_apex_and_subdomains_only() {
        // sGTM's documented examples (shared/reference/domain.md §2.5).
        assert!(allows("https://*.simoahava.com/tracker.html", "https://simoahava.com/tracker.html"));
        assert!(allows("https://*.simoahava.com/tracker.html", "https://blog.tracker.simoahava.com/tracker.html"));
        assert!(allows("https://*.conductrics.com/", "https://de.cdn-v3.conductrics.com/ac-x/dt-b1234567?apikey=api-w123456"));
        assert!(allows("https://*.tiktok.com/*", "https://business-api.tiktok.com/open_api/v1.3/event/track/"));
        assert!(!allows("https://*.tiktok.com/*", "https://eviltiktok.com/"));
        assert!(!allows("https://*.tiktok.com/*", "https://tiktok.com.evil.net/"));
    }

    #[test]
    fn path_globs_and_exact_paths() {
        assert!(allows("https://www.tracksimo.com/*tracker.html", "https://www.tracksimo.com/tracker.html"));
        assert!(allows("https://www.tracksimo.com/*tracker.html", "https://www.tracksimo.com/track/superdupertracker.html"));
        assert!(!allows("https://www.tracksimo.com/*tracker.html", "https://www.tracksimo.com/tracker.js"));
        assert!(allows("https://example.com/hook", "https://example.com/hook?x=1"));
        assert!(!allows("https://example.com/hook", "https://example.com/hook/other"));
        // `..` is resolved before matching, so it cannot climb out of a prefix.
        assert!(!allows("https://example.com/api/", "https://example.com/api/../admin"));
    }

    #[test]
    fn ports_credentials_and_case() {
        assert!(allows("http://127.0.0.1:8081/", "http://127.0.0.1:8081/collect"));
        assert!(!allows("http://127.0.0.1:8081/", "http://127.0.0.1:8082/collect"));
        assert!(!allows("https://example.com/", "https://example.com:8443/"));
        assert!(allows("https://Example.COM/", "https://example.com/x"));
        assert!(!allows("https://example.com/", "https://user:pw@example.com/"));
        assert!(allows("*", "https://anything.example/"));
        assert!(!allows("*", "https://user:pw@evil.example/"), "not even `*` covers a URL with credentials");
    }

    #[test]
    fn bad_patterns_say_how_to_fix_them() {
        let err = |p: &str| UrlPattern::parse(p).unwrap_err().to_string();
        assert!(err("graph.facebook.com/").contains("starts with https://"));
        assert!(err("https://graph.facebook.com").contains("trailing \"/\""));
        assert!(err("ftp://x.com/").contains("not supported"));
        assert!(err("https://a.*.com/").contains("is not valid"));
        assert!(err("https://u:p@x.com/").contains("credentials"));
        assert!(err("https://x.com:99999/").contains("is not valid"));
    }
}
