//! How a tag's events reach its vendor: the part of the template contract the durable outbox
//! builds on.
//!
//! A tag's work has two phases. `fire` runs per event inside the visitor's request, in a fresh
//! sandbox: it is where the request can be read and cookies set. `deliver` runs later, outside
//! any request, once per *batch* of queued items: it turns them into vendor requests and maps
//! the vendor's answer to a result per item. The host keeps the queue on disk between the two,
//! so a vendor outage or a restart delays an event instead of losing it.
//!
//! A tag declares which phases it has in its [`crate::Manifest`]'s [`Delivery`]:
//! * [`Delivery::IN_REQUEST`]: `fire` only; whatever it sends, it sends from the request (or
//!   hands the host as a plain request to send later);
//! * [`Delivery::batched`]: `deliver` only; the host queues each event the tag may see, as it is,
//!   with the request cookies the tag's grant names;
//! * [`Delivery::batched`]`(..).after_fire()`: both; `fire` does what only the visitor's request
//!   can (setting cookies), then the host queues the event as for a tag without `fire`, with the
//!   cookies as this response leaves them;
//! * [`Delivery::batched`]`(..).with_fire()`: both; `fire` builds the items (reading the request,
//!   hashing) and queues them itself, `deliver` sends them in batches.
//!
//! A tag may also declare first-party id cookies ([`Delivery::with_id_cookies`], see
//! [`crate::IdCookie`]): the host sets them in the visitor's request itself, so a tag whose
//! `fire` would only set cookies needs no `fire`, and no sandbox per event.
//!
//! The [`Batch`] limits are the vendor's (Meta: 1,000 events per request; GA4 Measurement
//! Protocol: 25); an operator can lower them per tag, never raise them.

use serde::{Deserialize, Serialize};

use crate::{IdCookie, IdCookieSpec};

/// Which phases a tag has, and the vendor's batch limits (the `const` form a template author
/// writes; the host reads it back as [`DeliverySpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Whether the host runs `fire` for each event, in the visitor's request.
    pub fire: bool,
    /// Whether the host runs `deliver` for batches of queued items, and within which limits.
    pub batch: Option<Batch>,
    /// Whether the host queues each event the tag may see (after `fire`, if it has one)
    /// rather than what `fire` enqueues.
    pub queue_event: bool,
    /// First-party id cookies the host sets for the tag in the visitor's request, before its
    /// `fire` (if any) and before it queues the event.
    pub id_cookies: &'static [IdCookie],
}

/// The most a vendor takes in one request, and how long items may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Most items per `deliver` call (the vendor's per-request event limit).
    pub max_items: u32,
    /// Most bytes of item data per call (the vendor's body limit, less the envelope).
    pub max_bytes: u32,
    /// Longest an item waits for a batch to fill, in milliseconds.
    pub max_wait_ms: u32,
    /// After this many seconds undelivered an item is dead-lettered: the vendor's own window
    /// (Meta rejects events older than 7 days, GA4 backdates at most 72 hours).
    pub max_age_secs: u32,
}

impl Delivery {
    /// `fire` per event, nothing batched: the tag sends from the visitor's request.
    pub const IN_REQUEST: Delivery = Delivery { fire: true, batch: None, queue_event: false, id_cookies: &[] };

    /// `deliver` only: the host queues every event the tag may see (the top-level keys its
    /// `event_data` grant covers), with the request cookies its grant names, and calls
    /// `deliver` with batches of them.
    pub const fn batched(batch: Batch) -> Delivery {
        Delivery { fire: false, batch: Some(batch), queue_event: true, id_cookies: &[] }
    }

    /// Also run `fire` per event, in the visitor's request, for what only it can do (set
    /// cookies, skip an event); when it returns `done`, the host queues the event as
    /// [`Delivery::batched`] does, with the cookies as the response leaves them (those `fire`
    /// set included). `fire` stays small: the item is built in `deliver`, once per batch.
    pub const fn after_fire(self) -> Delivery {
        Delivery { fire: true, queue_event: true, ..self }
    }

    /// Also run `fire` per event (to read the request or set cookies); then the host queues
    /// only what `fire` puts in the outbox.
    pub const fn with_fire(self) -> Delivery {
        Delivery { fire: true, queue_event: false, ..self }
    }

    /// The host sets these first-party id cookies for the tag in the visitor's request (for
    /// every event the tag runs for, within its grant), then runs `fire` or queues the event
    /// with them. For a tag whose `fire` would only set such cookies, this replaces `fire`.
    pub const fn with_id_cookies(self, id_cookies: &'static [IdCookie]) -> Delivery {
        Delivery { id_cookies, ..self }
    }
}

/// [`Delivery`] as a template's manifest JSON carries it. A manifest without it (templates
/// built before batching existed) means [`Delivery::IN_REQUEST`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySpec {
    /// See [`Delivery::fire`].
    pub fire: bool,
    /// See [`Delivery::batch`].
    #[serde(default)]
    pub batch: Option<Batch>,
    /// See [`Delivery::queue_event`]; absent in manifests from before [`Delivery::after_fire`],
    /// where it follows from `fire` ([`DeliverySpec::host_queues_event`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_event: Option<bool>,
    /// See [`Delivery::id_cookies`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_cookies: Vec<IdCookieSpec>,
}

impl Default for DeliverySpec {
    fn default() -> Self {
        DeliverySpec::from(Delivery::IN_REQUEST)
    }
}

impl From<Delivery> for DeliverySpec {
    fn from(d: Delivery) -> Self {
        DeliverySpec { fire: d.fire, batch: d.batch, queue_event: Some(d.queue_event), id_cookies: d.id_cookies.iter().map(IdCookieSpec::from).collect() }
    }
}

impl DeliverySpec {
    /// Whether the host queues each event the tag may see (after `fire`, for a tag with both).
    pub fn host_queues_event(&self) -> bool {
        self.batch.is_some() && self.queue_event.unwrap_or(!self.fire)
    }

    /// A tag with neither phase could never send anything.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !self.fire && self.batch.is_none() {
            return Err("a tag needs fire, deliver or both: declare Delivery::IN_REQUEST or Delivery::batched(..)");
        }
        if self.queue_event == Some(true) && self.batch.is_none() {
            return Err("the host queues events only for a tag with a batch: declare Delivery::batched(..).after_fire()");
        }
        if let Some(b) = self.batch
            && (b.max_items == 0 || b.max_bytes == 0 || b.max_age_secs == 0)
        {
            return Err("batch limits max_items, max_bytes and max_age_secs must be positive");
        }
        Ok(())
    }
}

/// How `sluice inspect` describes a tag's phases.
impl std::fmt::Display for DeliverySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.id_cookies.is_empty() {
            let names: Vec<&str> = self.id_cookies.iter().map(|c| c.name.as_str()).collect();
            write!(f, "the host sets id cookies {} in the visitor's request; ", names.join(", "))?;
        }
        let Some(b) = self.batch else { return f.write_str("fire per event, in the visitor's request") };
        let queued = match (self.fire, self.host_queues_event()) {
            (false, _) => "the host queues each event (with its granted cookies)",
            (true, true) => "fire per event in the visitor's request, then the host queues the event (with its cookies as fire left them)",
            (true, false) => "fire per event in the visitor's request queues the items",
        };
        write!(
            f,
            "{queued}; deliver takes up to {} items / {} bytes per batch, waits up to {} ms to fill one, dead-letters after {} s",
            b.max_items, b.max_bytes, b.max_wait_ms, b.max_age_secs
        )
    }
}

/// What became of one item in a tag's `deliver` (the WIT `item-result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// The vendor took it.
    Delivered,
    /// Try again later, after at least this many milliseconds if given.
    Retry(Option<u32>),
    /// The vendor refused it for good (why): the host dead-letters it.
    Rejected(String),
}

/// A vendor's answer for a whole batch (the WIT `batch-failure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFailure {
    /// Nothing was taken: retry the whole batch, after at least this many milliseconds if given
    /// (a `429`'s `Retry-After`; the host then pauses the tag).
    Retry(Option<u32>),
    /// The vendor refused the batch for a bad item it does not name: the host splits the batch
    /// until the bad item stands alone, and dead-letters it.
    Reject(String),
}

/// The host's fingerprint of an event: hex SHA-256 of its JSON as serde_json writes a
/// `Value` (keys sorted, no whitespace), so the same content has the same fingerprint whatever
/// order its keys arrived in. The host (`event.fingerprint`, queued items' ids) and the SDK's
/// mock host compute it here, so a test under the mock sees the id the host would queue.
pub fn fingerprint(json: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(json.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

/// The id a vendor deduplicates an event on: its own `event_id` when the site set one (so the
/// browser pixel and the server event deduplicate at the vendor), else one derived from the
/// event's content — the host's fingerprint of it (hex SHA-256 of its canonical JSON) — so a
/// retried hit never creates a second conversion. Every queued item carries it, unchanged
/// across retries and restarts; the host and the SDK use this one function.
pub fn event_id(event: &serde_json::Map<String, serde_json::Value>, fingerprint: &str) -> String {
    match event.get("event_id") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => fingerprint.chars().take(32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fingerprint_is_the_hex_sha256_of_the_json() {
        // SHA-256 test vector (FIPS 180-2, "abc").
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(fingerprint("{}").len(), 64);
    }

    #[test]
    fn the_sites_id_wins_else_the_fingerprint_decides() {
        let fingerprint = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let with = json!({"event_name": "purchase", "event_id": "T-1"});
        assert_eq!(event_id(with.as_object().unwrap(), fingerprint), "T-1");
        let numeric = json!({"event_name": "purchase", "event_id": 42});
        assert_eq!(event_id(numeric.as_object().unwrap(), fingerprint), "42");
        let without = json!({"event_name": "purchase", "event_id": ""});
        assert_eq!(event_id(without.as_object().unwrap(), fingerprint), &fingerprint[..32]);
    }

    #[test]
    fn a_tag_without_any_phase_or_with_empty_batches_is_refused() {
        assert!(DeliverySpec { fire: false, batch: None, queue_event: None, id_cookies: Vec::new() }.validate().is_err());
        assert!(DeliverySpec::from(Delivery::IN_REQUEST.after_fire()).validate().is_err(), "queueing events needs a batch");
        let zero = Batch { max_items: 0, max_bytes: 1, max_wait_ms: 0, max_age_secs: 1 };
        assert!(DeliverySpec::from(Delivery::batched(zero)).validate().is_err());
        assert!(DeliverySpec::default().validate().is_ok());
    }

    #[test]
    fn who_queues_follows_the_declaration_and_older_manifests_keep_their_meaning() {
        let batch = Batch { max_items: 10, max_bytes: 1000, max_wait_ms: 0, max_age_secs: 60 };
        let spec = |d: Delivery| DeliverySpec::from(d);
        assert!(spec(Delivery::batched(batch)).host_queues_event());
        assert!(spec(Delivery::batched(batch).after_fire()).host_queues_event());
        assert!(!spec(Delivery::batched(batch).with_fire()).host_queues_event());
        assert!(!spec(Delivery::IN_REQUEST).host_queues_event());
        let json = serde_json::to_string(&spec(Delivery::batched(batch).after_fire())).unwrap();
        assert_eq!(serde_json::from_str::<DeliverySpec>(&json).unwrap(), spec(Delivery::batched(batch).after_fire()));
        let older = |fire: bool| json!({"fire": fire, "batch": batch});
        assert!(serde_json::from_value::<DeliverySpec>(older(false)).unwrap().host_queues_event());
        assert!(!serde_json::from_value::<DeliverySpec>(older(true)).unwrap().host_queues_event());
    }
}
