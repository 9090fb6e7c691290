//! `sluice:template/consent`: the consent state the host resolved for this event.

use crate::bindings::consent::Host;
use crate::bindings::types::{ConsentStatus, Error, Purpose};
use crate::state::Invocation;

impl Host for Invocation {
    async fn status(&mut self, purpose: Purpose) -> Result<ConsentStatus, Error> {
        self.allow(|g| g.check_consent())?;
        Ok(self.consent.status(purpose))
    }
}
