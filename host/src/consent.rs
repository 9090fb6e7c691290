//! The visitor's consent, per event, as tags see it through the `consent` interface.
//!
//! This is the typed state and the one source the foundation reads: a structured
//! `consent_state` object in event data (`{"ad_storage": "granted", "analytics_storage": false}`,
//! booleans or `granted`/`denied` strings). Anything else is `unset`. Resolving Consent Mode v2
//! (`gcs`/`gcd`), headers and cookies, and blocking tags before they run, build on this type.

use serde_json::Value;

use crate::bindings::types::{ConsentStatus, Purpose};

/// All purposes, in WIT order.
pub const PURPOSES: [Purpose; 7] = [
    Purpose::AdStorage,
    Purpose::AnalyticsStorage,
    Purpose::AdUserData,
    Purpose::AdPersonalization,
    Purpose::FunctionalityStorage,
    Purpose::PersonalizationStorage,
    Purpose::SecurityStorage,
];

/// The event-model key of a purpose (`ad_storage`...).
pub fn purpose_key(p: Purpose) -> &'static str {
    match p {
        Purpose::AdStorage => "ad_storage",
        Purpose::AnalyticsStorage => "analytics_storage",
        Purpose::AdUserData => "ad_user_data",
        Purpose::AdPersonalization => "ad_personalization",
        Purpose::FunctionalityStorage => "functionality_storage",
        Purpose::PersonalizationStorage => "personalization_storage",
        Purpose::SecurityStorage => "security_storage",
    }
}

/// Consent for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentState {
    states: [ConsentStatus; 7],
}

impl Default for ConsentState {
    fn default() -> Self {
        ConsentState { states: [ConsentStatus::Unset; 7] }
    }
}

impl ConsentState {
    /// Reads `consent_state` from event data.
    pub fn from_event(event: &Value) -> Self {
        let mut state = ConsentState::default();
        if let Some(Value::Object(map)) = event.get("consent_state") {
            for (i, p) in PURPOSES.iter().enumerate() {
                state.states[i] = match map.get(purpose_key(*p)) {
                    Some(Value::Bool(true)) => ConsentStatus::Granted,
                    Some(Value::Bool(false)) => ConsentStatus::Denied,
                    Some(Value::String(s)) if s == "granted" => ConsentStatus::Granted,
                    Some(Value::String(s)) if s == "denied" => ConsentStatus::Denied,
                    _ => ConsentStatus::Unset,
                };
            }
        }
        state
    }

    /// One purpose's state.
    pub fn status(&self, p: Purpose) -> ConsentStatus {
        self.states[PURPOSES.iter().position(|q| *q == p).unwrap_or(0)]
    }
}
