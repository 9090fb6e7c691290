//! Consent purposes and their states: the one list of names (Google Consent Mode v2's four plus
//! the three older storage types) that manifests, the container config, the host and the SDK
//! use. The WIT `purpose` enum lists the same names; the host's conversion from it is an
//! exhaustive `match`, so adding a purpose to one and not the other does not compile.

use serde::{Deserialize, Serialize};

/// A consent purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Purpose {
    AdStorage,
    AnalyticsStorage,
    AdUserData,
    AdPersonalization,
    FunctionalityStorage,
    PersonalizationStorage,
    SecurityStorage,
}

impl Purpose {
    /// Every purpose, in WIT order.
    pub const ALL: [Purpose; 7] = [
        Purpose::AdStorage,
        Purpose::AnalyticsStorage,
        Purpose::AdUserData,
        Purpose::AdPersonalization,
        Purpose::FunctionalityStorage,
        Purpose::PersonalizationStorage,
        Purpose::SecurityStorage,
    ];

    /// The event-model name (`ad_storage`...), as manifests, configs and audit records write it.
    pub const fn name(self) -> &'static str {
        match self {
            Purpose::AdStorage => "ad_storage",
            Purpose::AnalyticsStorage => "analytics_storage",
            Purpose::AdUserData => "ad_user_data",
            Purpose::AdPersonalization => "ad_personalization",
            Purpose::FunctionalityStorage => "functionality_storage",
            Purpose::PersonalizationStorage => "personalization_storage",
            Purpose::SecurityStorage => "security_storage",
        }
    }

    /// The purpose with this name.
    pub fn named(name: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Position in [`Purpose::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The names, for error messages: `ad_storage, analytics_storage, ...`.
    pub fn all_names() -> String {
        Purpose::ALL.map(Purpose::name).join(", ")
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A purpose's state for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// The visitor agreed.
    Granted,
    /// The visitor refused.
    Denied,
    /// No source said anything.
    Unset,
}

impl ConsentStatus {
    /// `granted`, `denied` or `unset`.
    pub const fn name(self) -> &'static str {
        match self {
            ConsentStatus::Granted => "granted",
            ConsentStatus::Denied => "denied",
            ConsentStatus::Unset => "unset",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_is_the_position() {
        for (i, p) in Purpose::ALL.into_iter().enumerate() {
            assert_eq!(Purpose::named(p.name()), Some(p));
            assert_eq!(p.index(), i);
        }
        assert_eq!(Purpose::named("ad_storag"), None);
    }
}
