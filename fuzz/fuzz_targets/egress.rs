//! `sluice_policy::egress`: `EgressRules::new` on fuzzed allow lists and `check_url` on a fuzzed
//! URL, and `is_public` on fuzzed addresses. The input is 16 bytes of IPv6, 4 of IPv4, then
//! lines: the URL, then `allow_http` and `allow_private` entries alternately.
//!
//! Properties: an IPv6 address that embeds an IPv4 one (`::ffff:a.b.c.d`, `64:ff9b::a.b.c.d`)
//! is public exactly when the IPv4 address is; with no allow list, a URL whose host is an IP
//! literal passes `check_url` only if it is https and the address is public.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use sluice_manifest::Url;
use sluice_policy::egress::{EgressRules, is_public};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let v6: [u8; 16] = std::array::from_fn(|_| bytes.next().unwrap_or(0));
    let v4: [u8; 4] = std::array::from_fn(|_| bytes.next().unwrap_or(0));
    let rest = data.get(20..).unwrap_or_default();

    let v6 = Ipv6Addr::from(v6);
    let v4 = Ipv4Addr::from(v4);
    let _ = is_public(IpAddr::V6(v6));
    let public_v4 = is_public(IpAddr::V4(v4));
    let [a, b, c, d] = v4.octets();
    let low = [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])];
    let mapped = v4.to_ipv6_mapped();
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, low[0], low[1]);
    assert_eq!(is_public(IpAddr::V6(mapped)), public_v4, "{mapped} vs {v4}");
    assert_eq!(is_public(IpAddr::V6(nat64)), public_v4, "{nat64} vs {v4}");
    let s = v6.segments();
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        assert_eq!(is_public(IpAddr::V6(v6)), is_public(IpAddr::V4(embedded)), "{v6} vs {embedded}");
    }

    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let url = lines.next().unwrap_or("");
    let (mut allow_http, mut allow_private) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        if i % 2 == 0 { allow_http.push(line.to_string()) } else { allow_private.push(line.to_string()) }
    }
    let Ok(url) = Url::parse(url) else { return };
    let none = EgressRules::new(&[], &[]).unwrap_or_default();
    let ok = none.check_url(&url).is_ok();
    if ok {
        assert_eq!(url.scheme(), "https", "{url}");
        match url.host() {
            Some(url::Host::Ipv4(ip)) => assert!(is_public(IpAddr::V4(ip)), "{url}"),
            Some(url::Host::Ipv6(ip)) => assert!(is_public(IpAddr::V6(ip)), "{url}"),
            _ => {}
        }
    }
    if let Ok(rules) = EgressRules::new(&allow_http, &allow_private) {
        let _ = rules.check_url(&url);
        let _ = rules.address_allowed(IpAddr::V6(v6));
        let _ = rules.address_allowed(IpAddr::V4(v4));
        // Allow lists only ever widen what is allowed.
        if ok {
            assert!(rules.check_url(&url).is_ok(), "{url} allowed with no list, refused with {allow_http:?} {allow_private:?}");
        }
    }
});
