//! `sluice_manifest::UrlPattern::parse` on the first line, and `matches` against the rest parsed
//! with `url::Url::parse`. A pattern other than `*` never matches a URL with credentials, nor
//! one of another scheme.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_manifest::{Url, UrlPattern};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, url) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(parsed) = UrlPattern::parse(pattern) else { return };
    let _ = UrlPattern::parse(&pattern.to_ascii_uppercase());
    let Ok(url) = Url::parse(url) else { return };
    let matched = parsed.matches(&url);
    if matched && pattern != "*" {
        assert!(url.username().is_empty() && url.password().is_none(), "{pattern:?} matched {url} with credentials");
        assert!(url.scheme() == "https" || url.scheme() == "http", "{pattern:?} matched {url}");
    }
});
