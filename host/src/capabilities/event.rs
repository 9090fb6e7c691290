//! `sluice:template/event`: the event a tag runs for. The event is shared (`Arc`), and only the
//! requested part is serialised, so a tag reading three keys does not pay for the whole event.

use crate::bindings::event::Host;
use crate::bindings::types::Error;
use crate::state::Invocation;

fn no_event() -> Error {
    Error::Invalid("there is no event in this invocation".into())
}

impl Host for Invocation {
    async fn get(&mut self, path: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_event_key(&path))?;
        let event = self.event.as_ref().ok_or_else(no_event)?;
        Ok(sluice_manifest::event_value(event, &path).map(|v| v.to_string()))
    }

    async fn all(&mut self) -> Result<String, Error> {
        self.allow(|g| g.check_all_event_data())?;
        Ok(self.event.as_ref().ok_or_else(no_event)?.to_string())
    }
}
