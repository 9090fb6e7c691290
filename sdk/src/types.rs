//! Plain data types of the template API.

use serde::Serialize;

use crate::Error;

/// What a client decided about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Not this client's request; the host offers it to the next client.
    Pass,
    /// This client's request; the events (JSON objects) go to the tags.
    Claimed(Vec<serde_json::Value>),
    /// This client's request, its events already written as JSON objects, one per string: what
    /// [`Claim::Claimed`] becomes on the way to the host, for a client that writes its events
    /// straight to text rather than building them as values first (the GA4 client does, for
    /// speed). The host checks them as it checks any: text that is not a JSON object is dropped
    /// and reported ([`crate::mock::MockHost::dropped_events`] in tests).
    ClaimedJson(Vec<String>),
}

pub use sluice_manifest::{ConsentStatus, Purpose};

/// `SameSite` cookie attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// A cookie to set in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value (sent as given).
    pub value: String,
    /// `Domain` attribute.
    pub domain: Option<String>,
    /// `Path` attribute.
    pub path: Option<String>,
    /// `Max-Age` in seconds; `None` is a session cookie.
    pub max_age: Option<i64>,
    /// `Secure` attribute.
    pub secure: bool,
    /// `HttpOnly` attribute.
    pub http_only: bool,
    /// `SameSite` attribute.
    pub same_site: Option<SameSite>,
}

impl Cookie {
    /// A first-party cookie with `Path=/`, `Secure` and `SameSite=Lax`, the usual shape for
    /// server-set identifiers.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Cookie {
            name: name.into(),
            value: value.into(),
            domain: None,
            path: Some("/".into()),
            max_age: None,
            secure: true,
            http_only: false,
            same_site: Some(SameSite::Lax),
        }
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// An outbound HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Per-request timeout (the host caps it).
    pub timeout_ms: Option<u32>,
}

impl HttpRequest {
    /// A request with this method and URL, no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        HttpRequest { method: method.into(), url: url.into(), headers: Vec::new(), body: Vec::new(), timeout_ms: None }
    }

    /// A `GET`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        // Serialising a `Value` or a derived struct cannot fail; fall back to `null` rather
        // than panic if a hand-written `Serialize` does.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        self.header("content-type", "application/json").body(body)
    }

    /// Sets a body that is JSON text already (for example [`crate::Event::all_json`]) and
    /// `content-type: application/json`, without parsing it.
    pub fn json_text(self, json: impl Into<String>) -> Self {
        self.header("content-type", "application/json").body(json.into())
    }

    /// Sets the timeout (the host caps it; to the millisecond, at most ~49 days).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout_ms = Some(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        self
    }
}

/// A vendor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with this status and body and no headers (handy for mock stubs).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse { status, headers: Vec::new(), body: body.into() }
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Ok(self)` for 2xx, otherwise [`Error::Failed`] with the status and the start of the body.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            let text = self.text();
            let snippet: String = text.chars().take(200).collect();
            Err(Error::Failed(format!("HTTP {}: {snippet}", self.status)))
        }
    }
}

/// A queued item, as a tag's [`crate::Tag::deliver`] receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The event id it was queued with (send it: the vendor deduplicates on it).
    pub id: String,
    /// Earlier delivery attempts (0 the first time).
    pub attempt: u32,
    /// When it was queued, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The JSON `fire` queued, or the event itself for a tag without `fire`.
    pub data: String,
    /// For an event the host queued (a tag without `fire`, or after it): the cookies the tag's
    /// grant names as the browser holds them after this response (the request's, with those
    /// the response set in their place), read as `fire` would read them. Empty for what `fire`
    /// queued.
    pub cookies: Vec<(String, String)>,
}

impl Item {
    /// The first value of the cookie `name` queued with the event ([`Item::cookies`]).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// [`Item::data`] parsed.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.data).map_err(|e| self.unreadable(e))
    }

    /// [`Item::data`]'s top-level `keys`, parsed; the rest is skipped, not built
    /// ([`crate::data::select_json`]). For a `deliver` that reads a few keys of each event, this
    /// is several times cheaper than [`Item::json`] into a map. A unit test can check that the
    /// list is complete: the payload built from [`crate::data::select`]`(full, KEYS)` must equal
    /// the one built from `full`.
    pub fn json_keys(&self, keys: &[&str]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        crate::data::select_json(&self.data, keys).map_err(|e| self.unreadable(e))
    }

    /// [`Item::data`] as [`crate::fields::Fields`], borrowing its text: for a `deliver` that
    /// reads every key of each event (re-encoding it whole), cheaper than [`Item::json`] into a
    /// map, which allocates every key and string and sorts the keys (the GA4 tag's delivery CPU
    /// per event fell by a seventh; BENCHMARKS.md).
    pub fn fields(&self) -> Result<crate::fields::Fields<'_>, Error> {
        serde_json::from_str(&self.data).map_err(|e| self.unreadable(e))
    }

    /// Why [`Item::data`] did not read as asked, naming the item.
    fn unreadable(&self, e: serde_json::Error) -> Error {
        Error::Invalid(format!("item {}: {e}", self.id))
    }
}

pub use sluice_manifest::{BatchFailure, ItemResult};

/// A batch prepared item by item for a vendor that takes many events in one request: an item
/// that cannot be sent (no event name, too old by now) is rejected alone, with why, and the
/// rest go together. The usual shape of a batched tag's [`crate::Tag::deliver`]:
///
/// ```
/// # use sluice_sdk::{BatchFailure, DeliverHost, Error, Item, ItemResult, Prepared};
/// # fn send(host: &DeliverHost, events: &[&String]) -> Result<(), BatchFailure> { Ok(()) }
/// fn deliver(host: &DeliverHost, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
///     let prepared = Prepared::new(batch, |item| item.json::<sluice_sdk::Value>().map(|e| e.to_string()));
///     if !prepared.is_empty() {
///         send(host, &prepared.ready())?; // a whole-batch failure: retry or split, for all of them
///     }
///     Ok(prepared.results()) // the sent ones delivered, the others rejected with why
/// }
/// ```
#[derive(Debug)]
pub struct Prepared<T> {
    items: Vec<Result<T, String>>,
}

impl<T> Prepared<T> {
    /// Prepares each item of `batch` with `prepare`, in order.
    pub fn new(batch: &[Item], mut prepare: impl FnMut(&Item) -> Result<T, Error>) -> Self {
        Prepared { items: batch.iter().map(|item| prepare(item).map_err(|e| e.to_string())).collect() }
    }

    /// What was prepared, in batch order: what goes to the vendor.
    pub fn ready(&self) -> Vec<&T> {
        self.items.iter().filter_map(|p| p.as_ref().ok()).collect()
    }

    /// Whether no item could be prepared (then there is nothing to send).
    pub fn is_empty(&self) -> bool {
        self.items.iter().all(Result::is_err)
    }

    /// One result per item once the vendor took [`Prepared::ready`]: delivered for those,
    /// rejected (with why) for the items that could not be prepared.
    pub fn results(self) -> Vec<ItemResult> {
        self.items.into_iter().map(|p| p.map_or_else(ItemResult::Rejected, |_| ItemResult::Delivered)).collect()
    }
}


impl HttpResponse {
    /// The `Retry-After` header in milliseconds, if it is a number of seconds (vendors send
    /// seconds; the host also honours dates in plain requests).
    pub fn retry_after_ms(&self) -> Option<u32> {
        let (_, value) = self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))?;
        let secs: u32 = value.trim().parse().ok()?;
        Some(secs.saturating_mul(1000))
    }

    /// The usual whole-batch answer for a status: `None` for 2xx; retry for `408`, `429`
    /// (with `Retry-After`) and `5xx`; reject for any other status, saying so with the start
    /// of the vendor's answer (the host masks secrets in it, as in every line it writes).
    pub fn batch_failure(&self, vendor: &str) -> Option<BatchFailure> {
        match self.status {
            200..=299 => None,
            408 | 429 | 500..=599 => Some(BatchFailure::Retry(self.retry_after_ms())),
            status => {
                let body = String::from_utf8_lossy(&self.body);
                let excerpt: String = body.chars().take(200).collect();
                Some(BatchFailure::Reject(format!("{vendor} answered HTTP {status}: {excerpt}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Item, ItemResult, Prepared};
    use crate::Error;

    fn item(data: &str) -> Item {
        Item { id: data.into(), attempt: 0, created_ms: 0, data: data.into(), cookies: Vec::new() }
    }

    #[test]
    fn an_item_that_cannot_be_prepared_is_rejected_alone_and_the_rest_keep_their_places() {
        let batch = [item("1"), item("x"), item("3")];
        let prepared = Prepared::new(&batch, |i| i.data.parse::<u32>().map_err(|e| Error::invalid(format!("{}: {e}", i.id))));
        assert!(!prepared.is_empty());
        assert_eq!(prepared.ready(), [&1, &3], "what goes to the vendor, in batch order");
        let results = prepared.results();
        assert_eq!(results[0], ItemResult::Delivered);
        assert!(matches!(&results[1], ItemResult::Rejected(why) if why.contains("x: invalid digit")), "{results:?}");
        assert_eq!(results[2], ItemResult::Delivered);

        let none = Prepared::new(&batch[1..2], |_| Err::<(), _>(Error::invalid("no event name")));
        assert!(none.is_empty(), "nothing to send");
        assert!(matches!(&none.results()[..], [ItemResult::Rejected(why)] if why.contains("no event name")));
    }
}
