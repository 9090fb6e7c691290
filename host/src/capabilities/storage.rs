//! `sluice:template/storage`: per-template key-value storage
//! ([`sluice_policy::storage`], bounded the same way in the mock host).

use std::time::Duration;

use crate::bindings::storage::Host;
use crate::bindings::types::Error;
use crate::state::Invocation;

impl Host for Invocation {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.allow(|g| g.check_storage())?;
        Ok(self.template.storage.get(&key))
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), Error> {
        self.allow(|g| g.check_storage())?;
        self.template.storage.set(&key, &value, ttl_ms.map(Duration::from_millis)).map_err(|e| Error::Invalid(e.to_string()))
    }

    async fn delete(&mut self, key: String) -> Result<(), Error> {
        self.allow(|g| g.check_storage())?;
        self.template.storage.delete(&key);
        Ok(())
    }
}
