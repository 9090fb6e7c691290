//! The incoming HTTP request as the host read it, and the response being built for it: plain
//! data every stage reads (the pipeline, the invocation state, the trace, the preview), so it
//! depends on nothing else in the crate.

use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderMap;

/// The incoming HTTP request, as the host read it.
#[derive(Debug)]
pub struct RequestData {
    /// Request id used in logs and traces.
    pub id: String,
    /// Method, upper case.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Visitor IP.
    pub remote_addr: Option<IpAddr>,
}

impl sluice_policy::request::RequestSource for RequestData {
    fn query(&self) -> &str {
        &self.query
    }

    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }

    fn body(&self) -> &[u8] {
        &self.body
    }

    fn remote_address(&self) -> Option<String> {
        self.remote_addr.map(|ip| ip.to_string())
    }
}

/// The response being built by the claiming client (and tags' cookies and headers).
#[derive(Debug, Clone)]
pub struct ResponseDraft {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names, one value each).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// `Set-Cookie` values.
    pub cookies: Vec<String>,
    /// Already sent to the browser (respond-before-tags): later writes fail.
    pub sent: bool,
}

impl Default for ResponseDraft {
    fn default() -> Self {
        ResponseDraft { status: 200, headers: Vec::new(), body: Vec::new(), cookies: Vec::new(), sent: false }
    }
}
