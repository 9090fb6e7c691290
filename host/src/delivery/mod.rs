//! Delivery: a durable outbox per tag, and the workers that empty it into the vendors.
//!
//! Sending from inside the visitor's request (sGTM's way, and a tag's `fire`) loses the event
//! when the vendor hiccups and costs the request a vendor round trip. A tag that declares a
//! batch (`sluice_manifest::Delivery`) instead has its items written to an on-disk queue
//! ([`store`], a segment log) before the event counts as accepted, and a worker per tag
//! ([`worker`]) hands them to the tag's `deliver` export in batches within the vendor's limits,
//! retries with backoff, honours `Retry-After`, splits a batch the vendor rejected whole, and
//! dead-letters what the vendor refuses for good or what outlives the vendor's time window.
//! Plain requests a template queued with `send-later` go through the same queue and are sent by
//! the host itself. What happens after each attempt is `sluice_policy::delivery`'s, shared with
//! the mock host.
//!
//! Each tag's queue, worker and counters are its own: one vendor down fills that tag's queue
//! (up to its quota) and never slows the request path or another tag.

pub(crate) mod store;
pub(crate) mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_manifest::Batch;

use self::store::{Item, Store, StoreConfig, StoreError};

/// `[outbox]`: where the queues live and how they commit and retry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// The directory holding one queue per tag. Unset: `<config file name>.outbox/` beside the
    /// container config.
    pub dir: Option<PathBuf>,
    /// Group commit window in milliseconds: items are written to their queue files together
    /// at most this often. After `SIGKILL` at most this window of accepted items is lost.
    pub commit_ms: u64,
    /// How often what was written is fsynced, in milliseconds: after a power cut (or a kernel
    /// crash) at most this window, plus `commit_ms`, of accepted items is lost. One fsync per
    /// queue per commit cost more CPU than anything else in a commit.
    pub sync_ms: u64,
    /// Answer the browser only after its events' items are written and fsynced (costs up to
    /// `commit_ms` per request; nothing accepted is lost).
    pub answer_after_commit: bool,
    /// Most disk space one tag's queue may take, in MiB; past it new items are refused (the
    /// newest are dropped, counted and traced) until the vendor takes some.
    pub quota_mb: u64,
    /// Size of one queue file, in MiB: files are deleted whole once every item in them is done.
    pub segment_mb: u64,
    /// First retry's wait in milliseconds (doubling, with jitter, per attempt).
    pub retry_base_ms: u64,
    /// Longest wait between retries, in milliseconds.
    pub retry_max_ms: u64,
    /// How long a plain `send-later` request may stay undelivered before it is dead-lettered,
    /// in seconds.
    pub send_later_max_age_secs: u32,
    /// On `SIGTERM`, how long the workers keep delivering the backlog before the host exits,
    /// in milliseconds. What is left stays on disk for the next start.
    pub drain_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: None,
            commit_ms: 5,
            sync_ms: 100,
            answer_after_commit: false,
            quota_mb: 256,
            segment_mb: 8,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            send_later_max_age_secs: 3 * 86_400,
            drain_ms: 5_000,
        }
    }
}

impl OutboxConfig {
    /// Load-time validation of this section.
    pub fn validate(&self) -> Result<(), String> {
        if self.commit_ms == 0 || self.commit_ms > 1_000 {
            return Err("commit_ms must be between 1 and 1000 (it is how much a SIGKILL can lose)".into());
        }
        if self.sync_ms < self.commit_ms || self.sync_ms > 60_000 {
            return Err(format!(
                "sync_ms must be between commit_ms ({}) and 60000 (it is how much a power cut can lose)",
                self.commit_ms
            ));
        }
        if self.segment_mb == 0 || self.quota_mb < self.segment_mb {
            return Err("quota_mb must be at least segment_mb, and segment_mb at least 1".into());
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err("retry_base_ms must be positive and at most retry_max_ms".into());
        }
        Ok(())
    }

    /// The queues' directory for a container config at `config_path`, relative to the
    /// config's directory unless absolute: `dir`, or `<config file name>.outbox`.
    pub fn dir_for(&self, config_path: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            let name = config_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "sluice".into());
            PathBuf::from(format!("{name}.outbox"))
        })
    }

    pub(crate) fn backoff(&self) -> sluice_policy::delivery::Backoff {
        sluice_policy::delivery::Backoff { base: Duration::from_millis(self.retry_base_ms), max: Duration::from_millis(self.retry_max_ms) }
    }
}

/// `[[tag]] delivery = { ... }`: an operator's narrowing of a tag's declared batch limits, and
/// how many batches it may have in flight.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TagDeliveryConfig {
    /// At most the template's `max_items`.
    pub max_items: Option<u32>,
    /// At most the template's `max_bytes`.
    pub max_bytes: Option<u32>,
    /// Any wait (0 sends as soon as an item is committed).
    pub max_wait_ms: Option<u32>,
    /// At most the template's `max_age_secs` (the vendor's window).
    pub max_age_secs: Option<u32>,
    /// Batches in flight at once for this tag (default 2).
    pub concurrency: Option<u32>,
}

impl TagDeliveryConfig {
    /// The limits that apply: the template's, narrowed by the operator's. Raising one past the
    /// vendor's limit would only make the vendor refuse the batch, so it is an error.
    pub fn apply(&self, declared: Batch) -> Result<Batch, String> {
        let narrow = |name: &str, asked: Option<u32>, most: u32| match asked {
            Some(0) => Err(format!("delivery.{name} must be positive")),
            Some(n) if n > most => Err(format!("delivery.{name} = {n} is above the template's {most} (the vendor's limit): use at most {most}")),
            Some(n) => Ok(n),
            None => Ok(most),
        };
        if self.concurrency == Some(0) {
            return Err("delivery.concurrency must be positive".into());
        }
        Ok(Batch {
            max_items: narrow("max_items", self.max_items, declared.max_items)?,
            max_bytes: narrow("max_bytes", self.max_bytes, declared.max_bytes)?,
            max_wait_ms: self.max_wait_ms.unwrap_or(declared.max_wait_ms),
            max_age_secs: narrow("max_age_secs", self.max_age_secs, declared.max_age_secs)?,
        })
    }
}

/// What an item in a queue is, stored as [`Item::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKind {
    /// For the tag's `deliver`: what `fire` queued, or the event itself ([`TagItem`]).
    Tag,
    /// A plain HTTP request the host sends ([`PlainRequest`]).
    Plain,
}

impl ItemKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            ItemKind::Tag => 0,
            ItemKind::Plain => 1,
        }
    }

    pub(crate) fn of(item: &Item) -> Option<ItemKind> {
        match item.kind {
            0 => Some(ItemKind::Tag),
            1 => Some(ItemKind::Plain),
            _ => None,
        }
    }
}

/// A tag's queued item as stored: its JSON and, for an event the host queued for a tag without
/// `fire`, the request cookies the tag's grant names
/// ([`sluice_policy::request::Reads::granted_cookies`]). Without cookies it is stored as the
/// JSON alone (as every item was before cookies were queued, so older queues read unchanged);
/// with them as `0x00` (never the first byte of JSON), the cookies' JSON length (u32, little
/// endian), the cookies as JSON, then the item's JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TagItem {
    pub(crate) data: Vec<u8>,
    pub(crate) cookies: Vec<(String, String)>,
}

impl TagItem {
    const WITH_COOKIES: u8 = 0;

    pub(crate) fn encode(data: &[u8], cookies: &[(String, String)]) -> Vec<u8> {
        if cookies.is_empty() {
            return data.to_vec();
        }
        let cookies = serde_json::to_vec(cookies).unwrap_or_default();
        let mut out = Vec::with_capacity(5 + cookies.len() + data.len());
        out.push(Self::WITH_COOKIES);
        out.extend_from_slice(&u32::try_from(cookies.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&cookies);
        out.extend_from_slice(data);
        out
    }

    /// The stored bytes read back. A cookie section that does not parse (the queue's checksums
    /// catch damage on disk, so only a bug could write one) leaves the bytes as they are: not
    /// JSON, so `deliver` fails on the item and it is dead-lettered, not dropped.
    pub(crate) fn decode(mut bytes: Vec<u8>) -> TagItem {
        let cookie_section = match bytes.as_slice() {
            [Self::WITH_COOKIES, a, b, c, d, rest @ ..] => {
                let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
                rest.get(..len).and_then(|json| serde_json::from_slice::<Vec<(String, String)>>(json).ok()).map(|c| (c, 5 + len))
            }
            _ => None,
        };
        match cookie_section {
            Some((cookies, end)) => TagItem { data: bytes.split_off(end), cookies },
            None => TagItem { data: bytes, cookies: Vec::new() },
        }
    }
}

/// A request queued with `send-later`, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PlainRequest {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout_ms: Option<u32>,
}

/// Counters per tag, for `sluice outbox`, logs and (later) metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) queued: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    /// Items waiting for their retry time now (a gauge the worker keeps).
    pub(crate) retrying: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One tag's queue and how it is delivered.
pub(crate) struct TagOutbox {
    pub(crate) tag: String,
    pub(crate) store: Arc<Store>,
    /// The effective batch limits; `None` for a tag without `deliver` (plain requests only).
    pub(crate) batch: Option<Batch>,
    pub(crate) concurrency: usize,
    /// Shared with the same tag's outbox in the container a reload swaps in.
    pub(crate) counters: Arc<Counters>,
}

impl std::fmt::Debug for TagOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagOutbox").field("tag", &self.tag).field("batch", &self.batch).field("concurrency", &self.concurrency).finish()
    }
}

/// Why an item was not queued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("item of {size} bytes is larger than this tag's batch max_bytes ({max}): the vendor could never take it")]
    TooLarge { size: usize, max: u32 },
}

impl TagOutbox {
    /// Queues one item; it is on disk within one commit window.
    pub(crate) fn push(&self, kind: ItemKind, id: String, data: Vec<u8>) -> Result<(), QueueError> {
        if kind == ItemKind::Tag
            && let Some(batch) = self.batch
            && data.len() > batch.max_bytes as usize
        {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(QueueError::TooLarge { size: data.len(), max: batch.max_bytes });
        }
        let item = Item { id, kind: kind.code(), created_ms: now_ms(), attempts: 0, data };
        match self.store.append(item) {
            Ok(_commit) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }
}

/// Every tag's outbox, by tag name.
#[derive(Debug, Default)]
pub(crate) struct Outboxes {
    pub(crate) by_tag: HashMap<String, Arc<TagOutbox>>,
}

impl Outboxes {
    /// Waits until everything queued so far is fsynced (`answer_after_commit`, shutdown).
    pub(crate) async fn flush(&self) {
        for outbox in self.by_tag.values() {
            if let Err(e) = outbox.store.flush().await {
                tracing::error!(tag = %outbox.tag, "outbox commit failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_item_keeps_its_cookies_and_an_item_queued_before_cookies_reads_unchanged() {
        let event = br#"{"event_name":"purchase"}"#;
        let cookies = vec![("_ttp".to_string(), "a;b=\"c\"".to_string()), ("ttclid".into(), "✓".into())];
        let stored = TagItem::encode(event, &cookies);
        assert_eq!(TagItem::decode(stored), TagItem { data: event.to_vec(), cookies });
        assert_eq!(TagItem::encode(event, &[]), event.to_vec(), "no cookies: the JSON alone, as before");
        assert_eq!(TagItem::decode(event.to_vec()), TagItem { data: event.to_vec(), cookies: Vec::new() });
        // A damaged section (a bug: the disk's damage is caught by checksums) keeps every byte,
        // so the item fails in `deliver` and is dead-lettered rather than silently lost.
        let mut cut = TagItem::encode(event, &[("a".into(), "b".into())]);
        cut[1] = 200;
        assert_eq!(TagItem::decode(cut.clone()), TagItem { data: cut, cookies: Vec::new() });
        assert_eq!(TagItem::decode(vec![0, 1]).data, [0, 1]);
    }

    #[test]
    fn every_tag_name_gets_a_directory_of_its_own_inside_the_outbox() {
        assert_eq!(dir_name("meta-capi.v2"), "meta-capi.v2");
        assert_eq!(dir_name("../etc"), "_2e._2fetc", "never `..`, never a separator");
        assert_eq!(dir_name("a_b"), "a_5fb");
        assert_ne!(dir_name("a b"), dir_name("a_20b"));
    }

    #[test]
    fn the_fsync_window_is_at_least_the_commit_window_and_says_what_it_bounds() {
        assert_eq!(OutboxConfig::default().validate(), Ok(()));
        let msg = OutboxConfig { commit_ms: 50, sync_ms: 10, ..Default::default() }.validate().unwrap_err();
        assert!(msg.contains("sync_ms must be between commit_ms (50) and 60000") && msg.contains("power cut"), "{msg}");
        assert!(OutboxConfig { sync_ms: 60_001, ..Default::default() }.validate().is_err());
        assert_eq!(OutboxConfig { commit_ms: 20, sync_ms: 20, ..Default::default() }.validate(), Ok(()));
    }

    #[test]
    fn an_operator_may_narrow_the_vendors_limits_but_not_raise_them() {
        let meta = Batch { max_items: 1000, max_bytes: 4 << 20, max_wait_ms: 500, max_age_secs: 604_800 };
        let narrowed = TagDeliveryConfig { max_items: Some(100), max_wait_ms: Some(2000), ..Default::default() }.apply(meta).unwrap();
        assert_eq!((narrowed.max_items, narrowed.max_wait_ms, narrowed.max_bytes), (100, 2000, 4 << 20));
        let msg = TagDeliveryConfig { max_items: Some(5000), ..Default::default() }.apply(meta).unwrap_err();
        assert!(msg.contains("above the template's 1000"), "{msg}");
    }
}

/// One queue's state, as `sluice outbox status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxStatus {
    /// The template it belongs to.
    pub template: String,
    /// Items waiting for delivery (retrying ones included).
    pub pending: usize,
    /// Disk space of its files.
    pub bytes_on_disk: u64,
    /// How long the oldest pending item has waited, in seconds.
    pub oldest_age_secs: Option<u64>,
    /// Dead letters kept.
    pub dead: usize,
    /// Items refused because the queue was full (since this process opened it).
    pub overflowed: u64,
    /// Records found damaged on disk after their commit, so never delivered (since this
    /// process opened it; each is also logged).
    pub damaged: u64,
    /// Items waiting for a retry now: known only to the running server (`None` offline).
    pub retrying: Option<u64>,
    /// What opening it found damaged and skipped (offline inspection only).
    pub problems: Vec<String>,
}

/// A dead letter as an operator sees it: its data with personal data removed and secrets
/// masked, as every line Sluice writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterView {
    /// The event id it was queued with.
    pub id: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was queued, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it was given up on.
    pub dead_ms: u64,
    /// Why.
    pub reason: String,
    /// What was queued (the vendor's item, or a plain request), personal data removed.
    pub data: String,
}

/// Why `sluice outbox` could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// No template of this name has a queue.
    #[error("no outbox for {0:?}: `sluice outbox status` lists the templates that have one")]
    Unknown(String),
    /// The queue could not be read or changed.
    #[error("outbox of {template:?}: {message}")]
    Store {
        /// The template.
        template: String,
        /// What went wrong and how to fix it.
        message: String,
    },
}

/// Offline access to a container's queues for `sluice outbox`: reading works beside a running
/// server; `replay` and `purge` need the queue's lock, so they refuse while a server holds it.
#[derive(Debug)]
pub struct OutboxDir {
    dir: PathBuf,
    templates: Vec<String>,
    minimiser: sluice_policy::personal_data::Minimiser,
    cfg: OutboxConfig,
}

impl OutboxDir {
    /// The queues under `dir` of these templates (those that have a directory), their
    /// secrets registered with the output masker. [`crate::ContainerConfig::outboxes`] calls it.
    pub(crate) fn new<'a>(
        dir: &Path,
        cfg: &OutboxConfig,
        consent: &sluice_policy::consent::ConsentConfig,
        templates: impl Iterator<Item = (&'a str, &'a [String])>,
    ) -> Self {
        let mut names = Vec::new();
        for (name, secrets) in templates {
            crate::output::register_secrets(secrets);
            if dir.join(dir_name(name)).is_dir() {
                names.push(name.to_string());
            }
        }
        let minimiser = sluice_policy::consent::ConsentPolicy::new(consent.clone()).minimiser().clone();
        OutboxDir { dir: dir.to_path_buf(), templates: names, minimiser, cfg: cfg.clone() }
    }

    fn path(&self, template: &str) -> Result<PathBuf, OutboxError> {
        if !self.templates.iter().any(|t| t == template) {
            return Err(OutboxError::Unknown(template.into()));
        }
        Ok(self.dir.join(dir_name(template)))
    }

    fn failed(template: &str) -> impl Fn(StoreError) -> OutboxError + '_ {
        move |e| OutboxError::Store { template: template.into(), message: crate::output::mask(&e.to_string()) }
    }

    /// Every queue's depth, age, dead letters and damage.
    pub fn status(&self) -> Result<Vec<OutboxStatus>, OutboxError> {
        self.templates
            .iter()
            .map(|t| {
                let (store, recovery) = Store::inspect(&self.path(t)?).map_err(Self::failed(t))?;
                Ok(status(t, &store, None, recovery.problems))
            })
            .collect()
    }

    /// One queue's dead letters, masked.
    pub fn dead_letters(&self, template: &str) -> Result<Vec<DeadLetterView>, OutboxError> {
        let (store, _) = Store::inspect(&self.path(template)?).map_err(Self::failed(template))?;
        Ok(store.dead_letters().map_err(Self::failed(template))?.iter().map(|d| view(d, &self.minimiser)).collect())
    }

    /// Puts one queue's dead letters back for delivery (attempts reset); how many.
    pub fn replay(&self, template: &str) -> Result<usize, OutboxError> {
        let store = open_store(&self.dir, template, &self.cfg).map_err(Self::failed(template))?;
        store.replay_dead().map_err(Self::failed(template))
    }

    /// Deletes one queue's dead letters; how many.
    pub fn purge(&self, template: &str) -> Result<usize, OutboxError> {
        let store = open_store(&self.dir, template, &self.cfg).map_err(Self::failed(template))?;
        store.purge_dead().map_err(Self::failed(template))
    }
}

pub(crate) fn status(template: &str, store: &Store, retrying: Option<u64>, problems: Vec<String>) -> OutboxStatus {
    let stats = store.stats();
    OutboxStatus {
        template: template.into(),
        pending: stats.pending,
        bytes_on_disk: stats.bytes_on_disk,
        oldest_age_secs: stats.oldest_created_ms.map(|t| now_ms().saturating_sub(t) / 1000),
        dead: stats.dead,
        overflowed: stats.overflowed,
        damaged: stats.damaged,
        retrying,
        problems,
    }
}

pub(crate) fn view(d: &store::DeadLetter, minimiser: &sluice_policy::personal_data::Minimiser) -> DeadLetterView {
    // Cookies queued with an event are identifiers: the view names them, without values.
    let item = TagItem::decode(d.item.data.clone());
    let mut data = match serde_json::from_slice::<serde_json::Value>(&item.data) {
        Ok(value) => crate::json_text(&minimiser.event(&value).value),
        Err(_) => "(not JSON)".into(),
    };
    if !item.cookies.is_empty() {
        let names: Vec<&str> = item.cookies.iter().map(|(n, _)| n.as_str()).collect();
        data.push_str(&format!(" (with cookies {})", names.join(", ")));
    }
    DeadLetterView {
        id: crate::output::mask(&d.item.id),
        attempts: d.item.attempts,
        created_ms: d.item.created_ms,
        dead_ms: d.dead_ms,
        reason: crate::output::mask(&d.reason),
        data: crate::output::mask(&data),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A tag's directory name: its name where that is a safe file name (letters, digits, `-`,
/// `.` not first), each other byte as `_xx` (hex), so any name maps to one directory of its own.
pub(crate) fn dir_name(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    for (i, b) in tag.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Opens one tag's queue under `dir`, reporting what recovery found.
/// The directory of `tag`'s queue under the outbox directory.
pub(crate) fn queue_dir(dir: &Path, tag: &str) -> PathBuf {
    dir.join(dir_name(tag))
}

pub(crate) fn open_store(dir: &Path, tag: &str, cfg: &OutboxConfig) -> Result<Arc<Store>, StoreError> {
    let (store, recovery) = Store::open(StoreConfig {
        dir: queue_dir(dir, tag),
        segment_bytes: cfg.segment_mb << 20,
        quota_bytes: cfg.quota_mb << 20,
        commit_interval: Duration::from_millis(cfg.commit_ms),
        sync_interval: Duration::from_millis(cfg.sync_ms),
    })?;
    for problem in &recovery.problems {
        tracing::error!(tag, "outbox recovery: {problem}");
    }
    if recovery.pending > 0 {
        tracing::info!(tag, pending = recovery.pending, "outbox: items from the previous run will be delivered");
    }
    Ok(store)
}
