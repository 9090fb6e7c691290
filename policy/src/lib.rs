//! The rules the Sluice host and the SDK's mock host both enforce.
//!
//! A template author unit-tests against `sluice-sdk`'s mock host and trusts it to behave like
//! production. That holds only if both sides run the same rules, so every rule that does not
//! need the sandbox or the network lives here, once:
//!
//! * [`consent`]: purposes, consent resolution from the request's and the event's signals, the
//!   gate (which tag runs, and why not) and the audit record;
//! * [`personal_data`]: personal data recognised by key and by value, and removed from events
//!   and from every request accessor when `ad_user_data` is not granted;
//! * [`secrets`]: the masker every line of output passes through;
//! * [`egress`]: https only, no private addresses (the checks that need no network);
//! * [`id_cookies`]: which of a tag's declared first-party id cookies the host sets for an event;
//! * [`request`]: every request accessor's answer (joining, parsing, minimising), over either
//!   host's request;
//! * [`delivery`]: what happens to queued items after a delivery attempt (split, retry,
//!   backoff, dead letter);
//! * [`claim`]: which of a claiming client's events reach the tags (count, size, shape);
//! * [`response`]: which response headers and cookies a template may set, and how many;
//! * [`storage`]: per-template storage and its bounds;
//! * [`params`]: parameter checks (declared, required, secrets given as secrets).
//!
//! Permission grants (declared ∩ granted) live in `sluice-manifest`, which this crate builds on
//! and re-exports as [`grant`].

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod claim;
pub mod consent;
pub mod delivery;
pub mod egress;
pub mod id_cookies;
pub mod params;
pub mod personal_data;
pub mod request;
pub mod response;
pub mod secrets;
pub mod storage;

/// Declarations, grants and the permission checks (`sluice-manifest`).
pub use sluice_manifest as grant;
pub use sluice_manifest::{ConsentStatus, Purpose};
