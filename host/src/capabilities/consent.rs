//! `sluice:template/consent`: the consent state the host resolved for this event.

use sluice_manifest::Purpose as P;

use crate::bindings::consent::Host;
use crate::bindings::types::{ConsentStatus, Error, Purpose};
use crate::state::Invocation;

/// The WIT enum to the shared one. Exhaustive both ways: a purpose added to the WIT and not to
/// `sluice-manifest` (or the reverse) does not compile.
fn purpose(p: Purpose) -> P {
    match p {
        Purpose::AdStorage => P::AdStorage,
        Purpose::AnalyticsStorage => P::AnalyticsStorage,
        Purpose::AdUserData => P::AdUserData,
        Purpose::AdPersonalization => P::AdPersonalization,
        Purpose::FunctionalityStorage => P::FunctionalityStorage,
        Purpose::PersonalizationStorage => P::PersonalizationStorage,
        Purpose::SecurityStorage => P::SecurityStorage,
    }
}

fn status(s: sluice_manifest::ConsentStatus) -> ConsentStatus {
    match s {
        sluice_manifest::ConsentStatus::Granted => ConsentStatus::Granted,
        sluice_manifest::ConsentStatus::Denied => ConsentStatus::Denied,
        sluice_manifest::ConsentStatus::Unset => ConsentStatus::Unset,
    }
}

impl Host for Invocation {
    async fn status(&mut self, p: Purpose) -> Result<ConsentStatus, Error> {
        self.in_request("consent")?;
        self.allow(|g| g.check_consent())?;
        Ok(status(self.consent.status(purpose(p))))
    }
}
