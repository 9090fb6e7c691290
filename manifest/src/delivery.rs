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
//! * [`Delivery::batched`]`(..).with_fire()`: both; `fire` builds the items (reading cookies,
//!   hashing) and queues them, `deliver` sends them in batches.
//!
//! The [`Batch`] limits are the vendor's (Meta: 1,000 events per request; GA4 Measurement
//! Protocol: 25); an operator can lower them per tag, never raise them.

use serde::{Deserialize, Serialize};

/// Which phases a tag has, and the vendor's batch limits (the `const` form a template author
/// writes; the host reads it back as [`DeliverySpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Whether the host runs `fire` for each event, in the visitor's request.
    pub fire: bool,
    /// Whether the host runs `deliver` for batches of queued items, and within which limits.
    pub batch: Option<Batch>,
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
    pub const IN_REQUEST: Delivery = Delivery { fire: true, batch: None };

    /// `deliver` only: the host queues every event the tag may see (its grant must cover
    /// `event_data = ["*"]`) and calls `deliver` with batches of them.
    pub const fn batched(batch: Batch) -> Delivery {
        Delivery { fire: false, batch: Some(batch) }
    }

    /// Also run `fire` per event (to read the request or set cookies); then the host queues
    /// only what `fire` puts in the outbox.
    pub const fn with_fire(self) -> Delivery {
        Delivery { fire: true, ..self }
    }
}

/// [`Delivery`] as a template's manifest JSON carries it. A manifest without it (templates
/// built before batching existed) means [`Delivery::IN_REQUEST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySpec {
    /// See [`Delivery::fire`].
    pub fire: bool,
    /// See [`Delivery::batch`].
    #[serde(default)]
    pub batch: Option<Batch>,
}

impl Default for DeliverySpec {
    fn default() -> Self {
        DeliverySpec::from(Delivery::IN_REQUEST)
    }
}

impl From<Delivery> for DeliverySpec {
    fn from(d: Delivery) -> Self {
        DeliverySpec { fire: d.fire, batch: d.batch }
    }
}

impl DeliverySpec {
    /// A tag with neither phase could never send anything.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !self.fire && self.batch.is_none() {
            return Err("a tag needs fire, deliver or both: declare Delivery::IN_REQUEST or Delivery::batched(..)");
        }
        if let Some(b) = self.batch
            && (b.max_items == 0 || b.max_bytes == 0 || b.max_age_secs == 0)
        {
            return Err("batch limits max_items, max_bytes and max_age_secs must be positive");
        }
        Ok(())
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
        assert!(DeliverySpec { fire: false, batch: None }.validate().is_err());
        let zero = Batch { max_items: 0, max_bytes: 1, max_wait_ms: 0, max_age_secs: 1 };
        assert!(DeliverySpec::from(Delivery::batched(zero)).validate().is_err());
        assert!(DeliverySpec::default().validate().is_ok());
    }
}
