//! Per-template key-value storage (sGTM's `templateDataStorage`): process-local, shared by all
//! invocations of one template instance, invisible to every other template.
//!
//! Bounded so a template cannot exhaust the host: at most [`MAX_ENTRIES`] keys and
//! [`MAX_TOTAL_BYTES`] (keys and values) per template, [`MAX_KEY_BYTES`] per key and
//! [`MAX_VALUE_BYTES`] per value; expired entries are dropped on access and when full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys per template.
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes per key.
pub const MAX_KEY_BYTES: usize = 1024;
/// Bytes per value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Bytes of keys and values per template: without it, full keys and values would allow
/// 10,000 × 65 KiB ≈ 650 MB per template.
pub const MAX_TOTAL_BYTES: usize = 16 << 20;

/// Why a write was refused: which bound, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key of {0} bytes exceeds the {MAX_KEY_BYTES}-byte limit")]
    KeyTooLong(usize),
    /// The value is longer than [`MAX_VALUE_BYTES`].
    #[error("value of {0} bytes exceeds the {MAX_VALUE_BYTES}-byte limit")]
    ValueTooLong(usize),
    /// [`MAX_ENTRIES`] or [`MAX_TOTAL_BYTES`] reached.
    #[error("storage is full ({MAX_ENTRIES} keys or {} MiB per template): delete keys or set a ttl", MAX_TOTAL_BYTES >> 20)]
    Full,
}

/// A value and when it expires.
type Entry = (Vec<u8>, Option<Instant>);

/// One template's storage.
#[derive(Debug, Default)]
pub struct TemplateStorage {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Bytes of keys and values held.
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some((value, _)) = self.entries.remove(key) {
            self.bytes -= key.len() + value.len();
        }
    }

    fn drop_expired(&mut self) {
        let now = Instant::now();
        self.entries.retain(|_, (_, expiry)| expiry.is_none_or(|e| e > now));
        self.bytes = self.entries.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
    }
}

impl TemplateStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (every operation is a
        // single insert/remove with its byte count), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a live value.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some((_, Some(expiry))) if *expiry <= Instant::now() => {
                inner.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    /// Writes a value; the error says which bound was hit.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StorageError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StorageError::KeyTooLong(key.len()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(StorageError::ValueTooLong(value.len()));
        }
        let mut inner = self.lock();
        let fits = |i: &Inner| {
            let replaced = i.entries.get(key).map(|(old, _)| key.len() + old.len());
            (i.entries.len() < MAX_ENTRIES || replaced.is_some())
                && i.bytes - replaced.unwrap_or(0) + key.len() + value.len() <= MAX_TOTAL_BYTES
        };
        if !fits(&inner) {
            inner.drop_expired();
            if !fits(&inner) {
                return Err(StorageError::Full);
            }
        }
        inner.remove(key);
        inner.bytes += key.len() + value.len();
        inner.entries.insert(key.to_string(), (value.to_vec(), ttl.map(|t| Instant::now() + t)));
        Ok(())
    }

    /// Removes a value.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_expire() {
        let s = TemplateStorage::default();
        s.set("a", b"1", None).unwrap();
        s.set("a", b"22", None).unwrap();
        assert_eq!(s.get("a").as_deref(), Some(&b"22"[..]), "a set replaces");
        s.set("t", b"x", Some(Duration::ZERO)).unwrap();
        assert_eq!(s.get("t"), None, "expired");
        s.delete("a");
        assert_eq!(s.get("a"), None);
        assert_eq!(s.lock().bytes, 0, "every byte accounted for");
    }

    #[test]
    fn a_template_cannot_grow_its_storage_without_bound() {
        let s = TemplateStorage::default();
        assert!(s.set(&"k".repeat(MAX_KEY_BYTES + 1), b"", None).unwrap_err().to_string().contains("key of"));
        assert!(s.set("k", &vec![0; MAX_VALUE_BYTES + 1], None).unwrap_err().to_string().contains("value of"));
        // Full-size values fill the byte budget before the key count.
        let value = vec![7u8; MAX_VALUE_BYTES];
        let fit = MAX_TOTAL_BYTES / (MAX_VALUE_BYTES + 8);
        for i in 0..fit {
            s.set(&format!("key{i:05}"), &value, None).unwrap();
        }
        let err = s.set("one-more", &value, None).unwrap_err().to_string();
        assert!(err.contains("storage is full") && err.contains("MiB"), "{err}");
        s.set("key00000", b"small", None).expect("replacing a value frees its bytes");
        s.set("one-more", b"now fits", None).unwrap();
        // Expired entries are reclaimed when full.
        let s = TemplateStorage::default();
        for i in 0..MAX_ENTRIES {
            s.set(&i.to_string(), b"", Some(Duration::ZERO)).unwrap();
        }
        s.set("after", b"v", None).expect("expired keys make room");
    }
}
