//! `sluice_policy::request::cookie_values`, the one cookie parser: the first line is the cookie
//! name, every other line a `Cookie` header value. Also the request accessors (`Reads`) over
//! the same input as query and headers, with and without the personal-data minimiser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::personal_data::Minimiser;
use sluice_policy::request::{Reads, RequestSource, cookie_values};

struct Request<'a> {
    query: &'a str,
    cookies: Vec<&'a str>,
}

impl RequestSource for Request<'_> {
    fn query(&self) -> &str {
        self.query
    }
    fn header_values(&self, name: &str) -> Vec<&str> {
        if name.eq_ignore_ascii_case("cookie") { self.cookies.clone() } else { self.cookies.iter().take(1).copied().collect() }
    }
    fn body(&self) -> &[u8] {
        self.query.as_bytes()
    }
    fn remote_address(&self) -> Option<String> {
        Some(self.query.to_string())
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or("");
    let headers: Vec<&str> = lines.collect();
    let values = cookie_values(headers.iter().copied(), name);
    let pairs: usize = headers.iter().map(|h| h.split(';').count()).sum();
    assert!(values.len() <= pairs);

    let request = Request { query: name, cookies: headers };
    let minimiser = Minimiser::new(&[name.to_string()], &[name.to_string()]);
    for reads in [Reads { minimiser: None }, Reads { minimiser: Some(&minimiser) }] {
        let _ = reads.cookie(&request, name);
        let _ = reads.cookie(&request, "_gcl_aw");
        let _ = reads.query_string(&request);
        let _ = reads.query_param(&request, name);
        let _ = reads.query_param(&request, "gclid");
        let _ = reads.header(&request, "user-agent");
        let _ = reads.header(&request, "referer");
        let _ = reads.body(&request);
        let _ = reads.remote_address(&request);
    }
});
