//! Per-template key-value storage (sGTM's `templateDataStorage`): process-local, shared by all
//! invocations of one template instance, invisible to every other template.
//!
//! Bounded so a template cannot exhaust the host: at most [`MAX_ENTRIES`] keys per template and
//! [`MAX_VALUE_BYTES`] per value; expired entries are dropped on access and when full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys per template.
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes per value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A value and when it expires.
type Entry = (Vec<u8>, Option<Instant>);

/// One template's storage.
#[derive(Debug, Default)]
pub struct TemplateStorage {
    entries: Mutex<HashMap<String, Entry>>,
}

impl TemplateStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every operation is a
        // single insert/remove), so a poisoned lock is safe to keep using.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a live value.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut map = self.lock();
        match map.get(key) {
            Some((_, Some(expiry))) if *expiry <= Instant::now() => {
                map.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    /// Writes a value; the error says which bound was hit.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), String> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit", value.len()));
        }
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            let now = Instant::now();
            map.retain(|_, (_, expiry)| expiry.is_none_or(|e| e > now));
            if map.len() >= MAX_ENTRIES {
                return Err(format!("storage is full ({MAX_ENTRIES} keys): delete keys or set a ttl"));
            }
        }
        map.insert(key.to_string(), (value.to_vec(), ttl.map(|t| Instant::now() + t)));
        Ok(())
    }

    /// Removes a value.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}
