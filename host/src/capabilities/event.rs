//! `sluice:template/event`: the event a tag runs for. The event is shared by all its tags
//! ([`SharedEvent`]): `get` serialises only the requested part, so a tag reading three keys does
//! not pay for the whole event, and `all` and `fingerprint` are computed once per event, not once
//! per tag.

use crate::bindings::event::Host;
use crate::bindings::types::Error;
use crate::state::{Invocation, SharedEvent};

fn no_event() -> Error {
    Error::Invalid("there is no event in this invocation".into())
}

impl Invocation {
    fn event(&self) -> Result<&SharedEvent, Error> {
        self.in_request("the event")?;
        self.event.as_deref().ok_or_else(no_event)
    }
}

impl Host for Invocation {
    async fn get(&mut self, path: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_event_key(&path))?;
        Ok(sluice_manifest::event_value(self.event()?.value(), &path).map(crate::json_text))
    }

    async fn all(&mut self) -> Result<String, Error> {
        self.allow(|g| g.check_all_event_data())?;
        Ok(self.event()?.json().to_string())
    }

    async fn fingerprint(&mut self) -> Result<String, Error> {
        self.allow(|g| g.check_all_event_data())?;
        Ok(self.event()?.fingerprint().to_string())
    }
}
