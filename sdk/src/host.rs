//! The template's view of the host: one small accessor per capability.
//!
//! Every method is a permission-checked host call. On wasm it goes to the Sluice host; natively
//! it goes to the [`crate::mock::MockHost`] running the test.

use serde::de::DeserializeOwned;

use crate::sys;
use crate::{ConsentStatus, Cookie, Error, HttpRequest, HttpResponse, Level, Purpose};

/// What a template can call in every phase: outbound HTTP, its storage, the log, its
/// parameters. Implemented by [`Host`], [`TagHost`] and [`DeliverHost`]; bring it into scope
/// with `use sluice_sdk::prelude::*`.
pub trait Services: sealed::Sealed {
    /// Outbound HTTP.
    fn http(&self) -> Http {
        Http { _private: () }
    }

    /// Per-template storage.
    fn storage(&self) -> Storage {
        Storage { _private: () }
    }

    /// Log lines.
    fn log(&self) -> Log {
        Log { _private: () }
    }

    /// The operator's parameters for this template.
    fn config(&self) -> Config {
        Config { _private: () }
    }
}

/// What a template can call inside the visitor's request (a client's `run`, a tag's `fire`):
/// the request, the response, and the outbox for work to deliver later. Implemented by
/// [`Host`] and [`TagHost`], not by [`DeliverHost`].
pub trait InRequest: Services {
    /// The incoming request.
    fn request(&self) -> Request {
        Request { _private: () }
    }

    /// The response to the browser.
    fn response(&self) -> Response {
        Response { _private: () }
    }

    /// Work for the host to deliver later, durably.
    fn outbox(&self) -> Outbox {
        Outbox { _private: () }
    }
}

mod sealed {
    /// Only the SDK's host types implement the host traits.
    pub trait Sealed {}
    impl Sealed for super::Host {}
    impl Sealed for super::TagHost {}
    impl Sealed for super::DeliverHost {}
}

/// The host as a client template sees it ([`Services`] and [`InRequest`]).
#[derive(Debug)]
pub struct Host {
    _private: (),
}

impl Host {
    // A tag template built for wasm never constructs a `Host`.
    #[cfg_attr(all(target_arch = "wasm32", not(feature = "client")), allow(dead_code))]
    pub(crate) fn new() -> Self {
        Host { _private: () }
    }
}

impl Services for Host {}
impl InRequest for Host {}

/// The host as a tag's `fire` sees it: what a [`Host`] offers ([`Services`], [`InRequest`]),
/// plus the event and consent.
#[derive(Debug)]
pub struct TagHost {
    _private: (),
}

impl Services for TagHost {}
impl InRequest for TagHost {}

/// The host as a tag's `deliver` sees it: outside any request, so no request, response,
/// event or consent — only what sending needs ([`Services`]).
#[derive(Debug)]
pub struct DeliverHost {
    _private: (),
}

impl Services for DeliverHost {}

impl DeliverHost {
    // Only a tag's `deliver` glue (wasm) and the mock host make one.
    #[cfg_attr(all(target_arch = "wasm32", not(feature = "tag")), allow(dead_code))]
    pub(crate) fn new() -> Self {
        DeliverHost { _private: () }
    }
}

/// Work handed to the host to deliver later: on disk before the event counts as accepted,
/// retried with backoff until the vendor takes it or it expires (then dead-lettered).
#[derive(Debug)]
pub struct Outbox {
    _private: (),
}

impl Outbox {
    /// Queues `item` for this tag's [`crate::Tag::deliver`] under `id`, the event id the
    /// vendor deduplicates on ([`crate::identity::event_id`]). Needs a declared batch; at most
    /// the batch's `max_bytes`, and 16 items per invocation. `Failed` when the queue is full.
    pub fn enqueue(&self, id: &str, item: &serde_json::Value) -> Result<(), Error> {
        sys::outbox_enqueue(id, &serde_json::to_string(item)?)
    }

    /// Queues a plain request for the host to send later (any template with an `outbound`
    /// grant): retried on connection failures, `408`, `429` and `5xx`; a `2xx` delivers it,
    /// any other status dead-letters it. The URL is checked against the grant now.
    pub fn send_later(&self, id: &str, request: &HttpRequest) -> Result<(), Error> {
        sys::outbox_send_later(id, request)
    }
}

impl TagHost {
    // A client template built for wasm never constructs a `TagHost`.
    #[cfg_attr(all(target_arch = "wasm32", not(feature = "tag")), allow(dead_code))]
    pub(crate) fn new() -> Self {
        TagHost { _private: () }
    }

    /// The event this tag runs for.
    pub fn event(&self) -> Event {
        Event { _private: () }
    }

    /// The visitor's consent for this event.
    pub fn consent(&self) -> Consent {
        Consent { _private: () }
    }
}

/// The incoming request.
#[derive(Debug)]
pub struct Request {
    _private: (),
}

impl Request {
    /// HTTP method, upper case.
    pub fn method(&self) -> String {
        sys::method()
    }

    /// Path without the query string.
    pub fn path(&self) -> String {
        sys::path()
    }

    /// Raw query string (no leading `?`). Needs `query`.
    pub fn query_string(&self) -> Result<String, Error> {
        sys::query_string()
    }

    /// Decoded value of the first query parameter with this name. Needs `query`.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, Error> {
        sys::query_param(name)
    }

    /// A header by case-insensitive name. Needs the name in `request_headers` (`"*"` covers
    /// every header but `cookie`, `authorization` and `proxy-authorization`, which must be
    /// named).
    pub fn header(&self, name: &str) -> Result<Option<String>, Error> {
        sys::header(name)
    }

    /// All values of a cookie. Needs the name in `cookies`.
    pub fn cookies(&self, name: &str) -> Result<Vec<String>, Error> {
        sys::cookie(name)
    }

    /// The first value of a cookie. Needs the name in `cookies`.
    pub fn cookie(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(sys::cookie(name)?.into_iter().next())
    }

    /// The raw body. Needs `body`.
    pub fn body(&self) -> Result<Vec<u8>, Error> {
        sys::body()
    }

    /// The visitor's IP address (behind trusted proxies, the one they name). Needs
    /// `remote_address`.
    pub fn remote_address(&self) -> Result<Option<std::net::IpAddr>, Error> {
        match sys::remote_address()? {
            Some(text) => text.parse().map(Some).map_err(|_| Error::invalid(format!("the host gave a remote address that is not an IP address: {text:?}"))),
            None => Ok(None),
        }
    }
}

/// The response to the browser.
#[derive(Debug)]
pub struct Response {
    _private: (),
}

impl Response {
    /// Sets the status (claiming client only).
    pub fn set_status(&self, status: u16) -> Result<(), Error> {
        sys::set_status(status)
    }

    /// Sets a header. Needs the name in `response_headers`. A response takes at most 32
    /// template-set headers of 8 KiB each (`sluice_policy::response`); past that, `Invalid`.
    pub fn set_header(&self, name: &str, value: &str) -> Result<(), Error> {
        sys::set_header(name, value)
    }

    /// Sets the body (claiming client only; at most 4 MiB).
    pub fn set_body(&self, body: &[u8]) -> Result<(), Error> {
        sys::set_body(body)
    }

    /// Adds a cookie. Needs the name in `response_cookies`. At most 32 cookies of 4 KiB (name
    /// and encoded value) per response; past that, `Invalid`.
    pub fn set_cookie(&self, cookie: &Cookie) -> Result<(), Error> {
        sys::set_cookie(cookie)
    }
}

/// The current event (tags only).
#[derive(Debug)]
pub struct Event {
    _private: (),
}

/// What [`Event::select_granted`] read: the granted keys' values, and the keys it was refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selected {
    /// The granted keys the event has, by name.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// The keys the grant does not cover, in the order asked.
    pub refused: Vec<String>,
}

impl Event {
    /// The value at a dotted path (`items.0.item_id`). Needs a covering `event_data` pattern.
    pub fn get(&self, path: &str) -> Result<Option<serde_json::Value>, Error> {
        match sys::event_get(path)? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    /// The value at a path as text: strings as they are, numbers and booleans formatted.
    pub fn get_str(&self, path: &str) -> Result<Option<String>, Error> {
        Ok(self.get(path)?.and_then(|v| match v {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }))
    }

    /// The named top-level keys of the event as one object; keys the event lacks are left out.
    /// Cheaper than [`Event::all`] when a tag needs a few keys of a large event: only those
    /// cross into the sandbox and get parsed (the Meta tag reads 14 of a GA4 event's ~45 keys
    /// and its call took ~13% less time, BENCHMARKS.md). Each key needs a covering
    /// `event_data` pattern.
    pub fn select(&self, keys: &[&str]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let mut out = serde_json::Map::new();
        for key in keys {
            if let Some(value) = self.get(key)? {
                out.insert((*key).to_string(), value);
            }
        }
        Ok(out)
    }

    /// As [`Event::select`], but a key the grant does not cover is left out instead of failing
    /// the whole read: for a tag whose keys are each optional, so an operator's narrower
    /// `event_data` grant makes it send less rather than nothing. The refused keys come back
    /// beside the values (and the host records each refusal in the trace, as for any refused
    /// call); any other error still fails the read.
    pub fn select_granted(&self, keys: &[&str]) -> Result<Selected, Error> {
        let mut selected = Selected::default();
        for key in keys {
            match self.get(key) {
                Ok(Some(value)) => {
                    selected.values.insert((*key).to_string(), value);
                }
                Ok(None) => {}
                Err(Error::PermissionDenied(_)) => selected.refused.push((*key).to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(selected)
    }

    /// The whole event. Needs `event_data = ["*"]`.
    pub fn all(&self) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        Ok(serde_json::from_str(&sys::event_all()?)?)
    }

    /// The whole event as the JSON text the host holds, unparsed. For a tag that forwards the
    /// event as it is (a webhook, a warehouse loader): parsing and re-serialising ~2 KB of JSON
    /// inside the sandbox is most of such a tag's time (the webhook tag's call took about half
    /// as long without it, BENCHMARKS.md). Send it with [`crate::HttpRequest::json_text`].
    /// Needs `event_data = ["*"]`.
    pub fn all_json(&self) -> Result<String, Error> {
        sys::event_all()
    }

    /// A stable hash of the whole event (hex SHA-256 of its JSON, keys sorted), computed once
    /// by the host for all tags: feed it to [`crate::identity::event_id`]. Needs
    /// `event_data = ["*"]`.
    pub fn fingerprint(&self) -> Result<String, Error> {
        sys::event_fingerprint()
    }

    /// The id a vendor deduplicates this event on ([`crate::identity::event_id`]) for a tag
    /// that read `values` (say with [`Event::select_granted`]): the site's `event_id` there,
    /// else the host's [`Event::fingerprint`] — or, when the grant does not give the whole
    /// event, a hash of `values`, so a narrowed grant still gets a stable id per event.
    pub fn dedup_id(&self, values: &serde_json::Map<String, serde_json::Value>) -> Result<String, Error> {
        let fingerprint = match self.fingerprint() {
            Ok(f) => f,
            Err(Error::PermissionDenied(_)) => sluice_manifest::fingerprint(&serde_json::Value::Object(values.clone()).to_string()),
            Err(e) => return Err(e),
        };
        Ok(crate::identity::event_id(values, &fingerprint))
    }
}

/// The visitor's consent (tags only).
#[derive(Debug)]
pub struct Consent {
    _private: (),
}

impl Consent {
    /// One purpose's state. Needs `consent`.
    pub fn status(&self, purpose: Purpose) -> Result<ConsentStatus, Error> {
        sys::consent_status(purpose)
    }
}

/// Outbound HTTP.
#[derive(Debug)]
pub struct Http {
    _private: (),
}

impl Http {
    /// Sends a request through the host. The URL must match a granted `outbound` pattern.
    pub fn send(&self, request: &HttpRequest) -> Result<HttpResponse, Error> {
        sys::http_send(request)
    }

    /// Sends up to 64 requests at once through the host and waits for every answer, in order:
    /// a batch the vendor takes one request per event costs one round trip. Each is checked
    /// as [`Http::send`] checks it; the outer error is for more than 64.
    pub fn send_all(&self, requests: &[HttpRequest]) -> Result<Vec<Result<HttpResponse, Error>>, Error> {
        sys::http_send_all(requests)
    }
}

/// Per-template storage.
#[derive(Debug)]
pub struct Storage {
    _private: (),
}

impl Storage {
    /// Reads a value. Needs `storage`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        sys::storage_get(key)
    }

    /// Writes a value, kept for `ttl` if given (to the millisecond). Needs `storage`.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<std::time::Duration>) -> Result<(), Error> {
        sys::storage_set(key, value, ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
    }

    /// Removes a value. Needs `storage`.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        sys::storage_delete(key)
    }
}

/// Log lines. Without the `logging` grant lines are dropped (and the host records the denial).
#[derive(Debug)]
pub struct Log {
    _private: (),
}

impl Log {
    /// Writes a line at `level`.
    pub fn write(&self, level: Level, message: &str) {
        // A refused log line is recorded by the host; there is nothing useful to do here.
        let _ = sys::log(level, message);
    }

    /// Debug line.
    pub fn debug(&self, message: &str) {
        self.write(Level::Debug, message)
    }

    /// Info line.
    pub fn info(&self, message: &str) {
        self.write(Level::Info, message)
    }

    /// Warning line.
    pub fn warn(&self, message: &str) {
        self.write(Level::Warn, message)
    }

    /// Error line.
    pub fn error(&self, message: &str) {
        self.write(Level::Error, message)
    }
}

/// The operator's parameters.
#[derive(Debug)]
pub struct Config {
    _private: (),
}

impl Config {
    /// A parameter deserialised into `T`; `Ok(None)` when not set.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        match sys::config_get(name) {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| Error::Invalid(format!("parameter {name:?}: {e}"))),
            None => Ok(None),
        }
    }

    /// A string parameter; numbers and booleans are formatted.
    pub fn str(&self, name: &str) -> Option<String> {
        match serde_json::from_str(&sys::config_get(name)?).ok()? {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A string parameter that must be set (or has a declared default).
    pub fn require_str(&self, name: &str) -> Result<String, Error> {
        self.str(name).ok_or_else(|| not_set(name))
    }

    /// As [`Config::get`], for a parameter that must be set (or has a declared default).
    pub fn require<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        self.get(name)?.ok_or_else(|| not_set(name))
    }
}

fn not_set(name: &str) -> Error {
    Error::Invalid(format!("parameter {name:?} is not set"))
}
