//! The egress rules that need no network: which URLs a template may be sent to at all, on top
//! of its own grant. https only, unless the operator lists a plain-http origin; no loopback,
//! private, link-local (cloud metadata), CGNAT, ULA or other non-public address unless the
//! operator lists its range. The host applies them to the first URL, to every redirect hop and
//! (for names) to every address the resolver returns; the mock host applies the same checks to
//! the URL, so a template's test that sends to `http://127.0.0.1` fails as production would.
//!
//! IPv4 addresses embedded in IPv6 are judged as the IPv4 address they reach: IPv4-mapped
//! `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` (and the local-use
//! `64:ff9b:1::/48`), 6to4 `2002::/16`; deprecated site-local `fec0::/10` is private.
//!
//! An `allow_http` origin is exact: scheme, host and *effective* port, as browsers compare
//! origins. `http://127.0.0.1` and `http://127.0.0.1:80` are the same origin (port 80 only);
//! any port of a host must be asked for in so many words, `http://127.0.0.1:*` (a test set-up
//! whose fake vendors listen on ephemeral ports).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use sluice_manifest::Url;

/// `[outbound]`'s allow lists, parsed.
#[derive(Debug, Clone, Default)]
pub struct EgressRules {
    allow_http: Vec<HttpOrigin>,
    allow_private: Vec<IpNet>,
}

/// One `allow_http` entry: a host and the port it may be reached on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpOrigin {
    /// As the `url` crate serialises hosts (lower case, IPv6 in brackets).
    host: String,
    /// `None` for `:*`, any port.
    port: Option<u16>,
}

impl HttpOrigin {
    fn parse(origin: &str) -> Result<Self, EgressConfigError> {
        let invalid = || EgressConfigError::HttpOrigin(origin.to_string());
        let (text, any_port) = match origin.strip_suffix(":*") {
            Some(rest) => (rest, true),
            None => (origin, false),
        };
        let url = Url::parse(text).map_err(|_| invalid())?;
        let host = url.host_str().filter(|_| url.scheme() == "http" && url.path() == "/").ok_or_else(invalid)?;
        // `:80:*` names a port and any port at once (the url crate reads `:80` as no port).
        let names_port = text.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if any_port && names_port {
            return Err(invalid());
        }
        // Url::port_or_known_default: an explicit :80 and no port are one origin.
        let port = if any_port { None } else { url.port_or_known_default() };
        Ok(HttpOrigin { host: host.to_string(), port })
    }

    fn covers(&self, url: &Url) -> bool {
        url.host_str() == Some(self.host.as_str()) && self.port.is_none_or(|p| url.port_or_known_default() == Some(p))
    }
}

/// An allow-list entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressConfigError {
    /// Not an `http://host[:port]` origin.
    #[error("allow_http entry {0:?} must be an origin like \"http://127.0.0.1:8081\" (port 80 when none is given; \"http://127.0.0.1:*\" for any port)")]
    HttpOrigin(String),
    /// Not a CIDR or an address.
    #[error("allow_private entry {0:?} is not a CIDR like \"127.0.0.1/32\"")]
    Cidr(String),
}

/// Why a URL may not be reached. The text names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressRefusal {
    /// Plain http to an origin that is not listed.
    #[error("plain http to {0} is not allowed: use https, or add the origin to [outbound] allow_http")]
    PlainHttp(String),
    /// Neither http nor https.
    #[error("scheme {0:?} is not allowed: use https")]
    Scheme(String),
    /// An address (literal or resolved) that is not public.
    #[error("{0} is a private, loopback or link-local address: templates may not reach it unless the operator adds it to [outbound] allow_private")]
    PrivateAddress(String),
    /// A name that resolves only to non-public addresses.
    #[error("{0} resolves only to private, loopback or link-local addresses: templates may not reach them unless the operator adds them to [outbound] allow_private")]
    PrivateName(String),
}

impl EgressRefusal {
    /// What a template is told (the WIT `denial`): the permission `network` (the container's
    /// rules refused it, not the grant), the URL's origin, and this explanation.
    pub fn denial_parts(&self, url: &Url) -> (&'static str, String, String) {
        ("network", url.origin().ascii_serialization(), self.to_string())
    }
}

impl EgressRules {
    /// Parses `allow_http` origins and `allow_private` CIDRs (a bare address is a /32 or /128).
    pub fn new(allow_http: &[String], allow_private: &[String]) -> Result<Self, EgressConfigError> {
        let allow_http = allow_http.iter().map(|origin| HttpOrigin::parse(origin)).collect::<Result<_, _>>()?;
        let allow_private = allow_private
            .iter()
            .map(|cidr| {
                cidr.parse::<IpNet>()
                    .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| EgressConfigError::Cidr(cidr.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(EgressRules { allow_http, allow_private })
    }

    /// Whether templates may connect to this address.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow_private.iter().any(|net| net.contains(&ip))
    }

    /// The scheme rule and, for an IP-literal host, the address rule.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressRefusal> {
        match url.scheme() {
            "https" => {}
            "http" => {
                if !self.allow_http.iter().any(|origin| origin.covers(url)) {
                    return Err(EgressRefusal::PlainHttp(url.origin().ascii_serialization()));
                }
            }
            other => return Err(EgressRefusal::Scheme(other.to_string())),
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.address_allowed(ip) { Ok(()) } else { Err(EgressRefusal::PrivateAddress(ip.to_string())) }
    }
}

/// The IPv4 address an IPv6 address reaches, for the forms that embed one.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // IPv4-compatible ::a.b.c.d (deprecated, but routed by some stacks); :: and ::1 are not.
        [0, 0, 0, 0, 0, 0, _, _] if s[6] != 0 => Some(low),
        // NAT64 well-known prefix 64:ff9b::/96, and local-use 64:ff9b:1::/48.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 1, ..] => Some(low),
        // 6to4 2002:AABB:CCDD::/48 carries a.b.c.d in segments 1 and 2.
        [0x2002, a, b, ..] => Some(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

/// Whether an address is publicly routable (not loopback, private, link-local, CGNAT, ULA,
/// documentation, multicast...). IPv6 forms that embed an IPv4 address are judged by it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes_with_every_embedding() {
        for private in [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "198.18.0.1",
            "::1", "::", "fe80::1", "fd00::1", "fec0::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "::169.254.169.254",
            "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1", "64:ff9b:1::7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private} must be blocked");
        }
        for public in ["8.8.8.8", "157.240.1.35", "2a03:2880:f003:c07:face:b00c::2", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("ip")), "{public} is public");
        }
    }

    #[test]
    fn allow_lists_parse_and_apply() {
        let rules = EgressRules::new(&["http://127.0.0.1:8081".into()], &["127.0.0.1/32".into()]).expect("valid");
        assert!(rules.address_allowed("127.0.0.1".parse().expect("ip")));
        assert!(!rules.address_allowed("127.0.0.2".parse().expect("ip")));
        assert!(rules.check_url(&Url::parse("http://127.0.0.1:8081/x").expect("url")).is_ok());
        assert!(matches!(rules.check_url(&Url::parse("http://127.0.0.1:9999/x").expect("url")), Err(EgressRefusal::PlainHttp(_))));
        assert!(matches!(rules.check_url(&Url::parse("https://10.0.0.1/x").expect("url")), Err(EgressRefusal::PrivateAddress(_))));
        assert!(matches!(rules.check_url(&Url::parse("ftp://example.com/").expect("url")), Err(EgressRefusal::Scheme(_))));
        let none = EgressRules::default();
        assert!(none.check_url(&Url::parse("http://127.0.0.1/").expect("url")).is_err(), "plain http needs listing");
        assert!(none.check_url(&Url::parse("https://[::ffff:127.0.0.1]/").expect("url")).is_err());
        let err = EgressRules::new(&[], &["localhost".into()]).unwrap_err().to_string();
        assert!(err.contains("allow_private") && err.contains("localhost"), "{err}");
    }

    #[test]
    fn an_http_origin_is_scheme_host_and_effective_port() {
        let url = |u: &str| Url::parse(u).expect("url");
        let allows = |origins: &[&str], u: &str| {
            let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
            EgressRules::new(&origins, &["127.0.0.0/8".into(), "::1/128".into()]).expect("valid").check_url(&url(u)).is_ok()
        };
        // (allow_http entries, URL, allowed)
        for (origins, target, allowed) in [
            (&["http://127.0.0.1:80"][..], "http://127.0.0.1/x", true),
            (&["http://127.0.0.1:80"], "http://127.0.0.1:80/x", true),
            (&["http://127.0.0.1:80"], "http://127.0.0.1:8080/x", false),
            (&["http://127.0.0.1:80"], "http://127.0.0.1:6379/", false),
            (&["http://127.0.0.1"], "http://127.0.0.1:80/x", true),
            (&["http://127.0.0.1"], "http://127.0.0.1:9000/x", false),
            (&["http://127.0.0.1:9000"], "http://127.0.0.1:9000/x", true),
            (&["http://127.0.0.1:9000"], "http://127.0.0.1/x", false),
            (&["http://127.0.0.1:9000"], "http://127.0.0.2:9000/x", false),
            (&["http://127.0.0.1:9000"], "http://localhost:9000/x", false),
            (&["http://LOCALHOST:9000"], "http://localhost:9000/x", true),
            (&["http://127.0.0.1:*"], "http://127.0.0.1:1/x", true),
            (&["http://127.0.0.1:*"], "http://127.0.0.1/x", true),
            (&["http://127.0.0.1:*"], "http://127.0.0.2:1/x", false),
            (&["http://[::1]:8080"], "http://[::1]:8080/", true),
            (&["http://[::1]:8080"], "http://[::1]:8081/", false),
            (&["http://[::1]:*"], "http://[::1]:8081/", true),
        ] {
            assert_eq!(allows(origins, target), allowed, "allow_http = {origins:?}, {target}");
        }
        for bad in ["http://127.0.0.1:80:*", "https://127.0.0.1", "http://127.0.0.1/path", "127.0.0.1:80", "http://:*", "http://x:99999"] {
            let err = EgressRules::new(&[bad.to_string()], &[]).expect_err(bad).to_string();
            assert!(err.contains(bad) && err.contains("http://127.0.0.1:*"), "{err}");
        }
    }

    #[test]
    fn a_table_of_embedded_ipv4_forms() {
        // Every form that reaches 169.254.169.254 (cloud metadata) or 10.0.0.1 is refused, in
        // each spelling the url crate accepts; the same forms around a public address pass.
        let rules = EgressRules::default();
        for host in [
            "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[0:0:0:0:0:ffff:a9fe:a9fe]", "[::169.254.169.254]",
            "[64:ff9b::169.254.169.254]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::a9fe:a9fe]", "[2002:a9fe:a9fe::]",
            "[2002:0a00:0001:1234::1]", "[fec0::1]", "[feff::1]", "[::ffff:10.0.0.1]", "[64:ff9b::10.0.0.1]",
            "169.254.169.254", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "10.1", "127.1",
        ] {
            let target = format!("https://{host}/latest/meta-data/");
            assert!(matches!(rules.check_url(&url::Url::parse(&target).expect("url")), Err(EgressRefusal::PrivateAddress(_))), "{target}");
        }
        for host in ["[::ffff:8.8.8.8]", "[64:ff9b::8.8.8.8]", "[2002:808:808::]", "8.8.8.8", "[2a00:1450:4001::200e]"] {
            let target = format!("https://{host}/");
            assert!(rules.check_url(&url::Url::parse(&target).expect("url")).is_ok(), "{target}");
        }
    }
}
