//! The outbox: a durable queue per tag, on disk, so an event a vendor cannot take yet survives a
//! restart, and a slow or failing vendor costs disk (up to a quota), not memory.
//!
//! # Format
//! One directory per tag (the caller picks it):
//! * `seg-{seq:016}.log`, the segments: the magic `SLQSEG01`, then records
//!   `[len u32 LE][crc32 of payload u32 LE][payload]`. A new segment is started once the current
//!   one reaches `segment_bytes`; sequence numbers only grow (the next is the highest found + 1).
//! * `seg-{seq:016}.ack`: the 0-based indices (u32 LE) of the segment's finished records
//!   (delivered or dead-lettered), appended.
//! * `dead.log`: dead letters, magic `SLQDEAD1`, the same framing; payload = the item, the reason
//!   (UTF-8), `[reason_len u16 LE][dead_ms u64 LE]`. The fixed-size fields come last because an
//!   item's data runs to its end: the tail is read from the back, the item is what is left.
//! * `LOCK`, held (`File::try_lock`) by the one process that writes the queue.
//!
//! An item is `[version u8 = 1][kind u8][created_ms u64][attempts u32][id_len u16][id][data]`.
//!
//! # Why a home-made log
//! Measured against redb, fjall and SQLite (`research/outbox-stores/README.md`): 3–4× faster on
//! both sides, 8 bytes of overhead per item, and space comes back by deleting whole files.
//! Retry state stays in the caller's memory, so nothing is ever rewritten in place.
//!
//! # Group commit, and what a crash loses
//! [`Store::append`] only buffers in memory. One thread per store (`sluice-outbox-commit`) wakes
//! every `commit_interval` while there is work, writes everything buffered with one write, then
//! publishes: items become readable, [`Commit`]s resolve, [`Store::subscribe`] bumps. A
//! `SIGKILL` loses what was not committed yet: at most the last `commit_interval` of appends
//! (plus the batch being written at that instant), and of acks (those items are delivered
//! again: at least once, never lost) — what was written is in the page cache, which outlives
//! the process. A power cut (or a kernel crash) also loses what was written but not `fsync`ed
//! yet: the segment is `fsync`ed once its oldest unsynced write is `sync_interval` old (as
//! Redis's `appendfsync everysec` does), at once when someone waits on the commit (a flush,
//! `answer_after_commit`) or dead letters depend on it, and on close; a created or deleted
//! file's directory is `fsync`ed by the commit that did it. An `fsync` per queue per commit
//! was the largest cost of a commit (one per tag every 5 ms). Orders that matter: a dead
//! letter is durable before the ack that retires its item, and a replay writes the items back
//! before `dead.log` is emptied; a crash between can duplicate, never lose. A commit that fails
//! (disk full) is undone and retried, its items kept in memory (still counted against the
//! quota, so appends get [`StoreError::Full`] rather than memory growing); their [`Commit`]s
//! resolve only once it succeeds.
//!
//! # Corruption never blocks start-up
//! [`Store::open`] reads every file, checks every record's CRC and encoding, and reports each
//! thing it skipped as one line of [`Recovery::problems`] (file, byte offset, what was done):
//! * a record cut off at the end (an interrupted write) is skipped and the file cut back to its
//!   last good record;
//! * a checksum mismatch or an impossible length skips the rest of that segment (its framing can
//!   no longer be trusted); the records before it are delivered as usual;
//! * a record with a good CRC that does not decode is skipped alone;
//! * a file with a bad magic or a name that is not ours is left alone, never deleted;
//! * an `.ack` file's torn last entry is dropped; indices the segment does not have are ignored;
//! * a damaged `dead.log` is copied aside (`dead.log.damaged-{ms}`) and cut back to what reads.
//!
//! Appends never go to a segment found at open: each run starts a new one.
//!
//! While running, [`Store::read_next`] keeps the same promise: a record that changed on disk
//! since its commit is logged, counted ([`Stats::damaged`]) and finished, not left pending
//! forever; a file that cannot be read just now loses nothing (its items are read again).
//!
//! # When files are deleted
//! A segment (`.log`, then `.ack`) is deleted by the commit after its last record is finished,
//! once it is not the one being written, and at open; that commit also closes it if the reader
//! kept it open, so its space comes back. A drained queue holds at most the current
//! segment. Memory per pending record is one index entry (position, offset, length) and a created
//! time; payloads are read from the file when handed out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::mem::take;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

const SEGMENT_MAGIC: &[u8; 8] = b"SLQSEG01";
const DEAD_MAGIC: &[u8; 8] = b"SLQDEAD1";
const DEAD_FILE: &str = "dead.log";
const ITEM_VERSION: u8 = 1;
/// What recovery says of damage it found but, opened read-only, did not repair.
const READ_ONLY: &str = "read-only inspection: left as is";
/// While commits fail (disk full...), they are retried no faster than this.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Where one tag's outbox lives and how it is written.
#[derive(Clone, Debug)]
pub(crate) struct StoreConfig {
    /// The tag's directory (created if missing).
    pub dir: PathBuf,
    /// A new segment is started once the current one reaches this many bytes.
    pub segment_bytes: u64,
    /// Most bytes the `.log` files plus not-yet-written appends may take.
    pub quota_bytes: u64,
    /// How long appends are gathered into one write (group commit): what a `SIGKILL` can lose.
    pub commit_interval: Duration,
    /// How often what was written is `fsync`ed: what a power cut can lose. A commit someone
    /// waits on ([`Store::flush`], [`Commit`]), one writing dead letters, and the last one
    /// `fsync` at once.
    pub sync_interval: Duration,
}

/// One queued event for a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    /// The event's id (deduplication key at the vendor).
    pub id: String,
    /// What the data is (the caller's code).
    pub kind: u8,
    /// When the event was received, ms since the Unix epoch.
    pub created_ms: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The request to send, as the caller encoded it.
    pub data: Vec<u8>,
}

/// Where a committed record is: its segment and its index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Position {
    /// The segment's sequence number.
    pub segment: u64,
    /// The record's 0-based index in the segment.
    pub index: u32,
}

/// An item given up on, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// The item as it was last tried.
    pub item: Item,
    /// When it was given up on, ms since the Unix epoch.
    pub dead_ms: u64,
    /// Why (e.g. the vendor's answer).
    pub reason: String,
}

/// What opening found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Items waiting for delivery.
    pub pending: usize,
    /// One line per damaged file or skipped record: the file, the byte offset, what was done.
    pub problems: Vec<String>,
}

/// The queue's state, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Items not finished (committed or buffered, handed out or not).
    pub pending: usize,
    /// Bytes of the live `.log` files (segments and `dead.log`).
    pub bytes_on_disk: u64,
    /// The oldest pending item's `created_ms`.
    pub oldest_created_ms: Option<u64>,
    /// Dead letters.
    pub dead: usize,
    /// Appends refused because the quota was full, since open.
    pub overflowed: u64,
    /// Queue-file `fsync`s since open.
    pub syncs: u64,
    /// Records found damaged on disk after their commit, since open: they cannot be delivered,
    /// so they were finished unread (see [`Store::read_next`]).
    pub damaged: u64,
}

/// Why the outbox could not do something. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Reading or writing a file failed.
    #[error("outbox file {}: {source} (check that the directory exists, is writable, and its disk is not full)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process holds the directory's `LOCK`.
    #[error("outbox {} is in use by another sluice process (it holds LOCK); stop it first", dir.display())]
    Locked {
        /// The outbox directory.
        dir: PathBuf,
    },
    /// The quota would be exceeded.
    #[error("outbox quota of {quota_bytes} bytes is full: the vendor has been failing or is slower than traffic; raise [outbox] quota_mb or fix the destination")]
    Full {
        /// The configured quota.
        quota_bytes: u64,
    },
    /// The store is closed, or was opened read-only with [`Store::inspect`].
    #[error("the outbox is closed or open read-only; to change it, stop the server and open it for writing")]
    Closed,
    /// A record does not read back (at open this becomes a [`Recovery`] problem instead).
    #[error("outbox file {}: the record at byte {offset} is damaged ({what}): its item cannot be delivered and is counted as damaged; check the disk", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// An item cannot be encoded (an id over 65,535 bytes or a record over 4 GiB).
    #[error("the item cannot be queued: {what}; shorten it")]
    TooLarge {
        /// What is too large.
        what: String,
    },
}

// ---- Encoding ----------------------------------------------------------------------------------

/// A record: `[len][crc][payload]`, the payload written by `build`.
fn framed(build: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![0; 8];
    build(&mut out)?;
    let payload = out.get(8..).unwrap_or_default();
    let len = u32::try_from(payload.len())
        .map_err(|_| StoreError::TooLarge { what: format!("a record of {} bytes (at most 4 GiB)", payload.len()) })?;
    let head = [len.to_le_bytes(), crc32fast::hash(payload).to_le_bytes()].concat();
    out.splice(..8, head);
    Ok(out)
}

fn encode_item(item: &Item, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let id_len = u16::try_from(item.id.len())
        .map_err(|_| StoreError::TooLarge { what: format!("an id of {} bytes (at most 65,535)", item.id.len()) })?;
    out.reserve(16 + item.id.len() + item.data.len());
    out.extend_from_slice(&[ITEM_VERSION, item.kind]);
    out.extend_from_slice(&item.created_ms.to_le_bytes());
    out.extend_from_slice(&item.attempts.to_le_bytes());
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(item.id.as_bytes());
    out.extend_from_slice(&item.data);
    Ok(())
}

fn frame_item(item: &Item) -> Result<Vec<u8>, StoreError> {
    framed(|out| encode_item(item, out))
}

fn frame_dead(dead: &DeadLetter) -> Result<Vec<u8>, StoreError> {
    framed(|out| {
        encode_item(&dead.item, out)?;
        let reason = dead.reason.get(..dead.reason.floor_char_boundary(usize::from(u16::MAX))).unwrap_or("");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(&u16::try_from(reason.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&dead.dead_ms.to_le_bytes());
        Ok(())
    })
}

/// Reads a payload front to back; every length is checked against what is left.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(|| format!("{n} bytes expected, {} left", self.0.len()))?;
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| "short read".to_string())
    }
}

/// An item as it sits in a payload, borrowed.
struct ItemRef<'a> {
    kind: u8,
    created_ms: u64,
    attempts: u32,
    id: &'a str,
    data: &'a [u8],
}

impl ItemRef<'_> {
    fn to_item(&self) -> Item {
        Item { id: self.id.to_string(), kind: self.kind, created_ms: self.created_ms, attempts: self.attempts, data: self.data.to_vec() }
    }
}

fn parse_item(payload: &[u8]) -> Result<ItemRef<'_>, String> {
    let mut c = Cursor(payload);
    let [version, kind] = c.array()?;
    if version != ITEM_VERSION {
        return Err(format!("unknown item version {version}"));
    }
    let created_ms = u64::from_le_bytes(c.array()?);
    let attempts = u32::from_le_bytes(c.array()?);
    let id_len = u16::from_le_bytes(c.array()?);
    let id = std::str::from_utf8(c.take(usize::from(id_len))?).map_err(|_| "the id is not UTF-8".to_string())?;
    Ok(ItemRef { kind, created_ms, attempts, id, data: c.0 })
}

fn parse_dead(payload: &[u8]) -> Result<DeadLetter, String> {
    let short = || "too short for a dead letter".to_string();
    let (rest, dead_ms) = payload.split_last_chunk::<8>().ok_or_else(short)?;
    let (rest, reason_len) = rest.split_last_chunk::<2>().ok_or_else(short)?;
    let split = rest.len().checked_sub(usize::from(u16::from_le_bytes(*reason_len))).ok_or_else(short)?;
    let (item, reason) = rest.split_at_checked(split).ok_or_else(short)?;
    let reason = std::str::from_utf8(reason).map_err(|_| "the reason is not UTF-8".to_string())?;
    Ok(DeadLetter { item: parse_item(item)?.to_item(), dead_ms: u64::from_le_bytes(*dead_ms), reason: reason.to_string() })
}

/// How a framed file stops being readable.
#[derive(Debug)]
enum Damage {
    /// Shorter than the magic, and a prefix of it: creation was interrupted.
    NoHeader,
    /// Does not start with the magic.
    BadMagic,
    /// The record at this offset runs past the end (an interrupted write).
    Torn(u64),
    /// The record at this offset fails its checksum or has an impossible length.
    Corrupt(u64, &'static str),
}

impl Damage {
    /// Where the readable part ends and why; `None` for an interrupted creation (nothing lost).
    fn describe(&self) -> Option<(u64, &'static str)> {
        match *self {
            Damage::NoHeader => None,
            Damage::BadMagic => Some((0, "a bad magic number (not an outbox file, or damaged)")),
            Damage::Torn(at) => Some((at, "a record cut off (an interrupted write)")),
            Damage::Corrupt(at, what) => Some((at, what)),
        }
    }
}

/// What [`scan`] read: the good prefix's length, the file's length, and why it stopped early.
struct Scanned {
    good_len: u64,
    file_len: u64,
    damage: Option<Damage>,
}

/// Reads a framed file, calling `each(offset, payload)` for every record whose CRC is good.
/// Memory is one record; no length read from the file is trusted past the file's size.
fn scan(path: &Path, magic: &[u8; 8], mut each: impl FnMut(u64, &[u8])) -> io::Result<Scanned> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let done = |good_len, damage| Ok(Scanned { good_len, file_len, damage });
    if file_len < 8 {
        let mut start = Vec::new();
        r.read_to_end(&mut start)?;
        return done(0, Some(if magic.starts_with(&start) { Damage::NoHeader } else { Damage::BadMagic }));
    }
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    if &head != magic {
        return done(0, Some(Damage::BadMagic));
    }
    let (mut offset, mut payload) = (8u64, Vec::new());
    loop {
        let left = file_len.saturating_sub(offset);
        if left == 0 {
            return done(offset, None);
        }
        if left < 8 || r.read_exact(&mut head).is_err() {
            return done(offset, Some(Damage::Torn(offset)));
        }
        let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
        let (len, crc) = (u32::from_le_bytes([l0, l1, l2, l3]), u32::from_le_bytes([c0, c1, c2, c3]));
        if len == 0 {
            return done(offset, Some(Damage::Corrupt(offset, "a zero-length record")));
        }
        if u64::from(len) > left - 8 {
            return done(offset, Some(Damage::Torn(offset)));
        }
        payload.resize(len as usize, 0);
        if r.read_exact(&mut payload).is_err() {
            return done(offset, Some(Damage::Torn(offset)));
        }
        if crc32fast::hash(&payload) != crc {
            return done(offset, Some(Damage::Corrupt(offset, "a checksum mismatch")));
        }
        each(offset, &payload);
        offset += 8 + u64::from(len);
    }
}

/// Cuts a file back to `len` bytes, durably.
fn cut(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_data()
}

fn read_dead_file(path: &Path) -> Result<Vec<DeadLetter>, StoreError> {
    let mut letters = Vec::new();
    match scan(path, DEAD_MAGIC, |_, payload| letters.extend(parse_dead(payload).ok())) {
        Ok(_) => Ok(letters),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

// ---- Shared state ------------------------------------------------------------------------------

/// A failed I/O step, cloneable so every waiter of a commit gets it.
#[derive(Clone, Debug)]
struct Failure {
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn new(path: &Path, e: &io::Error) -> Self {
        Failure { path: path.to_path_buf(), kind: e.kind(), message: e.to_string() }
    }
    fn into_error(self) -> StoreError {
        StoreError::Io { path: self.path, source: io::Error::new(self.kind, self.message) }
    }
}

type Done = oneshot::Sender<Result<(), Failure>>;

/// A live segment as the store knows it.
#[derive(Default)]
struct Segment {
    /// Bytes of its `.log` file.
    bytes: u64,
    /// Per record: its `created_ms` while unfinished, `None` once finished (or unreadable).
    records: Vec<Option<u64>>,
    /// Unfinished records.
    open: usize,
}

/// A committed record not yet handed out.
#[derive(Clone, Copy)]
struct Entry {
    pos: Position,
    offset: u64,
    len: u32,
    data_len: usize,
}

impl Entry {
    /// The offset just past this record (its 8-byte header and payload).
    fn end(&self) -> u64 {
        self.offset + 8 + u64::from(self.len)
    }
}

/// An append waiting for the next commit.
struct Buffered {
    frame: Vec<u8>,
    created_ms: u64,
    data_len: usize,
    done: Option<Done>,
}

/// A dead letter waiting for the next commit; `pos` is acked once it is durable.
struct PendingDead {
    letter: DeadLetter,
    frame: Vec<u8>,
    pos: Option<Position>,
}

#[derive(Default)]
struct State {
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to (never one found at open).
    current: Option<u64>,
    unread: VecDeque<Entry>,
    /// Items a stopping worker handed back unfinished (a reload): handed out again first.
    returned: VecDeque<(Position, Item)>,
    /// `created_ms` → how many unfinished items have it.
    oldest: BTreeMap<u64, usize>,
    pending: usize,
    appends: Vec<Buffered>,
    buffered_bytes: u64,
    acks: Vec<Position>,
    dead: Vec<PendingDead>,
    /// `dead.log` is to be emptied (before `dead` is written).
    dead_reset: bool,
    dead_count: usize,
    dead_bytes: u64,
    waiters: Vec<Done>,
    urgent: bool,
    closing: bool,
    /// The committer waits for work with no window open: the change that brings it work wakes
    /// it (and clears this). While traffic flows it keeps a window open and needs no waking.
    sleeping: bool,
    /// The committer has made its last commit (or there is none).
    stopped: bool,
    overflowed: u64,
    damaged: u64,
    committed_appends: u64,
    syncs: u64,
}

impl State {
    fn has_work(&self) -> bool {
        !(self.appends.is_empty() && self.acks.is_empty() && self.dead.is_empty() && self.waiters.is_empty()) || self.dead_reset
    }
    fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum::<u64>() + self.dead_bytes
    }
    fn remember(&mut self, created_ms: u64) {
        self.pending += 1;
        *self.oldest.entry(created_ms).or_default() += 1;
    }
    fn forget(&mut self, created_ms: u64) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(n) = self.oldest.get_mut(&created_ms) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.oldest.remove(&created_ms);
            }
        }
    }
    /// Marks a record finished in memory; false if it was not open.
    fn finish(&mut self, pos: Position) -> bool {
        let Some(seg) = self.segments.get_mut(&pos.segment) else { return false };
        let Some(created_ms) = seg.records.get_mut(pos.index as usize).and_then(Option::take) else { return false };
        seg.open = seg.open.saturating_sub(1);
        self.forget(created_ms);
        true
    }
    fn queue(&mut self, frame: Vec<u8>, item: &Item, done: Option<Done>) {
        self.buffered_bytes += frame.len() as u64;
        self.remember(item.created_ms);
        self.appends.push(Buffered { frame, created_ms: item.created_ms, data_len: item.data.len(), done });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn segment_path(dir: &Path, seq: u64, ext: &str) -> PathBuf {
    dir.join(format!("seg-{seq:016}.{ext}"))
}

fn sync_dir(dir: &Path) -> Result<(), Failure> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Failure::new(dir, &e))?;
    Ok(())
}

struct Shared {
    dir: PathBuf,
    /// `None` for a read-only [`Store::inspect`].
    cfg: Option<StoreConfig>,
    state: Mutex<State>,
    wake: Condvar,
    /// Held while `dead.log` is read or written (taken before `state`).
    dead_io: Mutex<()>,
    committed: watch::Sender<u64>,
    /// The segment [`Store::read_next`] read last, kept open: a worker reads after every
    /// commit, mostly from the segment being written, and opening it each time was two
    /// syscalls per read. The commit that deletes that segment closes it.
    reader: Mutex<Option<(u64, Arc<File>)>>,
}

/// A tag's outbox. `Send + Sync`, shared as `Arc<Store>`.
pub(crate) struct Store {
    shared: Arc<Shared>,
    committer: Mutex<Option<JoinHandle<()>>>,
    _lock: Option<File>,
}

/// Resolves when the append it came from is fsynced (for `[outbox] answer_after_commit`).
pub(crate) struct Commit {
    rx: oneshot::Receiver<Result<(), Failure>>,
}

impl Commit {
    /// Waits for the commit that writes this append. Err if the store closed without writing it.
    #[cfg_attr(not(test), expect(dead_code, reason = "for `sluice outbox` and `answer_after_commit`, not wired yet"))]
    pub(crate) async fn committed(self) -> Result<(), StoreError> {
        self.rx.await.map_err(|_| StoreError::Closed)?.map_err(Failure::into_error)
    }
}

impl Store {
    /// Opens (creating the dir), takes LOCK, recovers, starts the committer thread.
    pub(crate) fn open(cfg: StoreConfig) -> Result<(Arc<Store>, Recovery), StoreError> {
        let dir = cfg.dir.clone();
        let io_err = |path: &Path| { let path = path.to_path_buf(); move |source| StoreError::Io { path, source } };
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { dir }),
            Err(fs::TryLockError::Error(source)) => return Err(StoreError::Io { path: lock_path, source }),
        }
        let (state, next_seq, recovery) = recover(&dir, true)?;
        let shared = Arc::new(Shared::new(dir.clone(), Some(cfg.clone()), state));
        let files =
            Files { dir: dir.clone(), next_seq, current: None, acks: HashMap::new(), dead: None, failing: false, unsynced_since: None, syncs: 0 };
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("sluice-outbox-commit".into())
            .spawn(move || thread_shared.run(cfg, files))
            .map_err(io_err(&dir))?;
        Ok((Arc::new(Store { shared, committer: Mutex::new(Some(handle)), _lock: Some(lock_file) }), recovery))
    }

    /// Opens read-only WITHOUT the lock, without a committer (for `sluice outbox status/list`):
    /// stats(), read_next() and dead_letters() work; append/ack/dead_letter/replay/purge return
    /// Closed. Nothing on disk is changed, damage included.
    pub(crate) fn inspect(dir: &Path) -> Result<(Store, Recovery), StoreError> {
        let (mut state, _, recovery) = recover(dir, false)?;
        state.stopped = true;
        Ok((Store { shared: Arc::new(Shared::new(dir.to_path_buf(), None, state)), committer: Mutex::new(None), _lock: None }, recovery))
    }

    /// The config, or Closed when read-only.
    fn writable(&self) -> Result<&StoreConfig, StoreError> {
        self.shared.cfg.as_ref().ok_or(StoreError::Closed)
    }

    /// Locks the state, or Closed once closing; wakes the committer if it sleeps and this
    /// brings it work.
    fn change<R>(&self, f: impl FnOnce(&mut State) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut st = lock(&self.shared.state);
        if st.closing {
            return Err(StoreError::Closed);
        }
        let r = f(&mut st)?;
        if st.sleeping && st.has_work() {
            st.sleeping = false;
            self.shared.wake.notify_all();
        }
        Ok(r)
    }

    /// Queues an item. Non-blocking: buffered in memory until the next commit. Err(Full) when
    /// bytes on disk + buffered would exceed quota_bytes (the overflow counter is incremented).
    pub(crate) fn append(&self, item: Item) -> Result<Commit, StoreError> {
        let quota_bytes = self.writable()?.quota_bytes;
        let frame = frame_item(&item)?;
        let (tx, rx) = oneshot::channel();
        self.change(|st| {
            if st.disk_bytes() + st.buffered_bytes + frame.len() as u64 > quota_bytes {
                st.overflowed += 1;
                return Err(StoreError::Full { quota_bytes });
            }
            st.queue(frame, &item, Some(tx));
            Ok(Commit { rx })
        })
    }

    /// Next committed items, oldest first: at most `max_items`, and `max_bytes` of data (at least
    /// one if any is available). Each is handed out once per process run; the caller keeps
    /// in-flight and retrying items itself.
    ///
    /// A file that cannot be read now (an I/O error, too many open files) loses nothing: the
    /// items not read go back to the front of the queue for the next call, and the error is
    /// returned when nothing was read. A record that no longer reads back (it changed on disk
    /// since its commit) can never be delivered: it is logged, counted in [`Stats::damaged`] and
    /// finished, so it does not stay pending forever nor keep its segment on disk.
    pub(crate) fn read_next(&self, max_items: usize, max_bytes: usize) -> Result<Vec<(Position, Item)>, StoreError> {
        let mut items = Vec::new();
        let taken = {
            let mut st = lock(&self.shared.state);
            let mut bytes = 0usize;
            while let Some((pos, _)) = st.returned.front() {
                let open = st.segments.get(&pos.segment).and_then(|s| s.records.get(pos.index as usize)).is_some_and(Option::is_some);
                if open && items.len() >= max_items {
                    return Ok(items);
                }
                if let Some((pos, item)) = st.returned.pop_front()
                    && open
                {
                    bytes += item.data.len();
                    items.push((pos, item));
                }
            }
            let mut out = Vec::new();
            while let Some(e) = st.unread.front().copied() {
                let open = st.segments.get(&e.pos.segment).and_then(|s| s.records.get(e.pos.index as usize)).is_some_and(Option::is_some);
                let count = out.len() + items.len();
                if open && (count >= max_items || (count > 0 && bytes.saturating_add(e.data_len) > max_bytes)) {
                    break;
                }
                st.unread.pop_front();
                if open {
                    bytes += e.data_len;
                    out.push(e);
                }
            }
            out
        };
        items.reserve(taken.len());
        // Records queued one after another sit one after another on disk: each such run is one
        // positioned read (a batch of a thousand is a handful of syscalls, not a thousand seeks
        // and reads), from the segment's file kept open between reads.
        let mut rest = taken.as_slice();
        while let Some(first) = rest.first() {
            let run = 1 + rest.windows(2).take_while(|w| w[1].pos.segment == first.pos.segment && w[1].offset == w[0].end()).count();
            let (this, next) = rest.split_at(run);
            let path = segment_path(&self.shared.dir, first.pos.segment, "log");
            match self.segment_reader(first.pos.segment, &path).and_then(|file| read_run(&path, &file, this)) {
                Ok(read) => {
                    for (entry, item) in this.iter().zip(read) {
                        match item {
                            Ok(item) => items.push((entry.pos, item)),
                            Err(err) => self.retire_damaged(entry.pos, &err),
                        }
                    }
                }
                Err(err) => {
                    // This run and the ones after it are read again by the next call.
                    let mut st = lock(&self.shared.state);
                    for entry in rest.iter().rev() {
                        st.unread.push_front(*entry);
                    }
                    if items.is_empty() {
                        return Err(err);
                    }
                    tracing::error!("{err} (its items will be read again)");
                    return Ok(items);
                }
            }
            rest = next;
        }
        Ok(items)
    }

    /// A committed record that no longer reads back: logged, counted, and finished (its item
    /// is lost; keeping it pending would keep it, and its segment, forever). Opened read-only
    /// ([`Store::inspect`]) the store only logs it.
    fn retire_damaged(&self, pos: Position, err: &StoreError) {
        tracing::error!("{err}");
        if self.writable().is_ok() {
            let _ = self.change(|st| {
                st.damaged += 1;
                if st.finish(pos) {
                    st.acks.push(pos);
                }
                Ok(())
            });
        }
    }

    /// The open file of segment `seq` (at `path`), from [`Shared::reader`] or opened now.
    fn segment_reader(&self, seq: u64, path: &Path) -> Result<Arc<File>, StoreError> {
        let mut reader = lock(&self.shared.reader);
        if let Some((open, file)) = reader.as_ref()
            && *open == seq
        {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?);
        *reader = Some((seq, file.clone()));
        Ok(file)
    }

    /// Takes back items handed out by [`Self::read_next`] and not finished, with their
    /// attempts so far: the next `read_next` hands them out again, first. A worker stopping
    /// for a reload gives its items to the next container's worker this way.
    pub(crate) fn hand_back(&self, items: Vec<(Position, Item)>) {
        let mut st = lock(&self.shared.state);
        let mut items = items;
        items.sort_by_key(|(pos, _)| *pos);
        for entry in items.into_iter().rev() {
            st.returned.push_front(entry);
        }
    }

    /// Marks an item finished (delivered). Durable at the next commit; a segment no longer
    /// being written whose records are all finished is deleted (.log and .ack).
    pub(crate) fn ack(&self, pos: Position) -> Result<(), StoreError> {
        self.writable()?;
        self.change(|st| {
            if st.finish(pos) {
                st.acks.push(pos);
            }
            Ok(())
        })
    }

    /// Writes a dead letter (reason, now) durably at the next commit, and then acks pos.
    pub(crate) fn dead_letter(&self, pos: Position, item: &Item, reason: &str) -> Result<(), StoreError> {
        self.writable()?;
        let letter = DeadLetter { item: item.clone(), dead_ms: now_ms(), reason: reason.to_string() };
        let frame = frame_dead(&letter)?;
        self.change(|st| {
            st.dead_count += 1;
            st.dead.push(PendingDead { letter, frame, pos: Some(pos) });
            Ok(())
        })
    }

    /// Waits until everything appended/acked so far is fsynced (SIGTERM drain, tests).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let rx = {
            let mut st = lock(&self.shared.state);
            if st.stopped {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push(tx);
            st.urgent = true;
            rx
        };
        self.shared.wake.notify_all();
        rx.await.map_err(|_| StoreError::Closed)?.map_err(Failure::into_error)
    }

    /// The queue's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Counts for status and metrics.
    pub(crate) fn stats(&self) -> Stats {
        let st = lock(&self.shared.state);
        Stats {
            pending: st.pending,
            bytes_on_disk: st.disk_bytes(),
            oldest_created_ms: st.oldest.keys().next().copied(),
            dead: st.dead_count,
            overflowed: st.overflowed,
            syncs: st.syncs,
            damaged: st.damaged,
        }
    }

    /// A receiver whose value is the count of committed appends; it changes after each commit
    /// that made items readable.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Every dead letter, oldest first (written or waiting for the next commit).
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let _io = lock(&self.shared.dead_io);
        let (reset, waiting): (bool, Vec<DeadLetter>) = {
            let st = lock(&self.shared.state);
            (st.dead_reset, st.dead.iter().map(|d| d.letter.clone()).collect())
        };
        let mut letters = if reset { Vec::new() } else { read_dead_file(&self.shared.dir.join(DEAD_FILE))? };
        letters.extend(waiting);
        Ok(letters)
    }

    /// Empties `dead.log` at the next commit (and drops the letters waiting for it, acking their
    /// items), first queueing every letter's item again if `replay`. One hold of `dead_io`
    /// throughout, so no letter is written between the read and the reset.
    fn take_dead(&self, replay: bool) -> Result<usize, StoreError> {
        self.writable()?;
        let _io = lock(&self.shared.dead_io);
        let reset = lock(&self.shared.state).dead_reset;
        let mut letters = if reset { Vec::new() } else { read_dead_file(&self.shared.dir.join(DEAD_FILE))? };
        self.change(|st| {
            letters.extend(st.dead.iter().map(|d| d.letter.clone()));
            let n = letters.len();
            let again: Vec<(Vec<u8>, Item)> = if replay {
                let items = letters.into_iter().map(|l| Item { attempts: 0, ..l.item });
                items.map(|item| frame_item(&item).map(|frame| (frame, item))).collect::<Result<_, _>>()?
            } else {
                Vec::new()
            };
            for waiting in take(&mut st.dead) {
                if let Some(pos) = waiting.pos
                    && st.finish(pos)
                {
                    st.acks.push(pos);
                }
            }
            for (frame, item) in again {
                st.queue(frame, &item, None);
            }
            st.dead_reset = true;
            st.dead_count = 0;
            Ok(n)
        })
    }

    /// Moves every dead letter back into the queue (attempts reset to 0) and empties dead.log
    /// (the items are written first; the quota is not applied: they are on disk already).
    /// Returns how many.
    pub(crate) fn replay_dead(&self) -> Result<usize, StoreError> {
        self.take_dead(true)
    }

    /// Empties dead.log. Returns how many were removed.
    pub(crate) fn purge_dead(&self) -> Result<usize, StoreError> {
        self.take_dead(false)
    }

    /// Stops the committer after a final commit (also on Drop).
    pub(crate) fn close(&self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        if let Some(handle) = lock(&self.committer).take()
            && handle.join().is_err()
        {
            tracing::error!("outbox {}: the commit thread panicked", self.shared.dir.display());
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.shared.dir).field("writable", &self.shared.cfg.is_some()).finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads a run of records that lie end to end in one segment (`run` in file order), with one
/// read: each record checked against what was written (length, CRC) and decoded on its own.
/// The outer error is the file's (unreadable now: [`Store::read_next`] reads the whole run
/// again later); an inner one is that record's alone.
fn read_run(path: &Path, file: &File, run: &[Entry]) -> Result<Vec<Result<Item, StoreError>>, StoreError> {
    use std::os::unix::fs::FileExt;
    let (Some(first), Some(last)) = (run.first(), run.last()) else { return Ok(Vec::new()) };
    let io_err = |source| StoreError::Io { path: path.to_path_buf(), source };
    let mut buf = vec![0; (last.end() - first.offset) as usize];
    file.read_exact_at(&mut buf, first.offset).map_err(io_err)?;
    Ok(run
        .iter()
        .map(|e| {
            let corrupt = |what: String| StoreError::Corrupt { path: path.to_path_buf(), offset: e.offset, what };
            let at = e.offset.saturating_sub(first.offset) as usize;
            let Some((head, payload)) = buf.get(at..at.saturating_add(8 + e.len as usize)).map(|record| record.split_at(8)) else {
                return Err(corrupt("the record lies outside its run".into()));
            };
            if head != [e.len.to_le_bytes(), crc32fast::hash(payload).to_le_bytes()].concat() {
                return Err(corrupt("the record changed on disk since it was written".into()));
            }
            parse_item(payload).map(|i| i.to_item()).map_err(corrupt)
        })
        .collect())
}

// ---- Recovery ----------------------------------------------------------------------------------

enum Name {
    Segment(u64, bool),
    Ours,
    Other,
}

fn classify(name: &str) -> Name {
    if matches!(name, "LOCK" | DEAD_FILE) {
        return Name::Ours;
    }
    let Some((num, ext)) = name.strip_prefix("seg-").and_then(|rest| rest.split_once('.')) else { return Name::Other };
    match (num.len() == 16 && num.bytes().all(|b| b.is_ascii_digit()), num.parse(), ext) {
        (true, Ok(seq), "log") => Name::Segment(seq, true),
        (true, Ok(seq), "ack") => Name::Segment(seq, false),
        _ => Name::Other,
    }
}

/// Reads the directory into a [`State`]; fixes what it can when `writable`. Returns the state,
/// the next segment number and the report.
fn recover(dir: &Path, writable: bool) -> Result<(State, u64, Recovery), StoreError> {
    let io_err = |path: &Path| { let path = path.to_path_buf(); move |source| StoreError::Io { path, source } };
    let mut problems = Vec::new();
    let (mut logs, mut acks, mut max_seq) = (BTreeSet::new(), BTreeSet::new(), None);
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        match entry.file_name().to_str().map_or(Name::Other, classify) {
            Name::Segment(seq, is_log) => {
                max_seq = max_seq.max(Some(seq));
                if is_log { logs.insert(seq) } else { acks.insert(seq) };
            }
            Name::Ours => {}
            Name::Other => problems.push(format!("{}: not an outbox file (or one set aside); left alone", entry.path().display())),
        }
    }
    let mut st = State::default();
    let mut dir_changed = false;
    for seq in logs {
        let path = segment_path(dir, seq, "log");
        let mut records = Vec::new();
        let mut entries = Vec::new();
        let scanned = scan(&path, SEGMENT_MAGIC, |offset, payload| match parse_item(payload) {
            Ok(item) => {
                entries.push(Entry { pos: Position { segment: seq, index: records.len() as u32 }, offset, len: payload.len() as u32, data_len: item.data.len() });
                records.push(Some(item.created_ms));
            }
            Err(what) => {
                problems.push(format!("{}: record at byte {offset} is not a valid item ({what}); skipped", path.display()));
                records.push(None);
            }
        });
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => {
                acks.remove(&seq);
                problems.push(format!("{}: cannot be read ({e}); left alone", path.display()));
                continue;
            }
        };
        let mut bytes = scanned.file_len;
        if let Some((offset, why)) = scanned.damage.as_ref().and_then(Damage::describe) {
            let n = records.len();
            let done = match scanned.damage {
                Some(Damage::BadMagic) => {
                    acks.remove(&seq);
                    problems.push(format!("{}: {why}; left alone", path.display()));
                    continue;
                }
                Some(Damage::Torn(_)) if !writable => READ_ONLY.to_string(),
                Some(Damage::Torn(_)) => match cut(&path, offset) {
                    Ok(()) => {
                        bytes = offset;
                        format!("the file was cut back to its {n} good records")
                    }
                    Err(e) => format!("the file could not be cut back ({e})"),
                },
                _ => format!("the {n} records before it are delivered, then the file is deleted"),
            };
            problems.push(format!("{}: {why} at byte {offset}: the rest ({} bytes) is skipped; {done}", path.display(), scanned.file_len - offset));
        }
        if acks.remove(&seq) {
            load_acks(&segment_path(dir, seq, "ack"), &mut records, writable, &mut problems);
        }
        let segment = Segment { bytes, open: records.iter().flatten().count(), records };
        if segment.open == 0 && writable {
            for ext in ["log", "ack"] {
                let _ = fs::remove_file(segment_path(dir, seq, ext));
            }
            dir_changed = true;
            continue;
        }
        for created_ms in segment.records.iter().flatten() {
            st.remember(*created_ms);
        }
        st.unread.extend(entries.into_iter().filter(|e| segment.records.get(e.pos.index as usize).is_some_and(Option::is_some)));
        st.segments.insert(seq, segment);
    }
    // Acks whose segment is gone: deletion was interrupted between the two files.
    for seq in acks.into_iter().filter(|_| writable) {
        dir_changed |= fs::remove_file(segment_path(dir, seq, "ack")).is_ok();
    }
    let dead = dir.join(DEAD_FILE);
    let mut count = 0;
    let scanned = scan(&dead, DEAD_MAGIC, |offset, payload| match parse_dead(payload) {
        Ok(_) => count += 1,
        Err(what) => problems.push(format!("{}: dead letter at byte {offset} does not decode ({what}); ignored until the next replay or purge", dead.display())),
    });
    match scanned {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(StoreError::Io { path: dead, source }),
        Ok(scanned) => {
            st.dead_count = count;
            st.dead_bytes = scanned.file_len;
            // An interrupted creation needs nothing: the first write puts the magic back.
            if let Some((offset, why)) = scanned.damage.as_ref().and_then(Damage::describe) {
                let aside = dir.join(format!("{DEAD_FILE}.damaged-{}", now_ms()));
                let done = match writable.then(|| fs::copy(&dead, &aside).and_then(|_| cut(&dead, scanned.good_len))) {
                    None => READ_ONLY.to_string(),
                    Some(Ok(())) => {
                        (st.dead_bytes, dir_changed) = (scanned.good_len, true);
                        format!("copied to {} and cut back to its {count} readable dead letters", aside.display())
                    }
                    Some(Err(e)) => format!("could not be set aside ({e}); left as is"),
                };
                problems.push(format!("{}: {why} at byte {offset}; {done}", dead.display()));
            }
        }
    }
    if dir_changed {
        sync_dir(dir).map_err(Failure::into_error)?;
    }
    let recovery = Recovery { pending: st.pending, problems };
    Ok((st, max_seq.map_or(0, |m: u64| m.saturating_add(1)), recovery))
}

/// Applies a segment's `.ack` file to its records; drops a torn last entry.
fn load_acks(path: &Path, records: &mut [Option<u64>], writable: bool, problems: &mut Vec<String>) {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return problems.push(format!("{}: cannot be read ({e}); the segment's records count as not delivered", path.display())),
    };
    let whole = bytes.len() / 4 * 4;
    if whole != bytes.len() {
        let done = match writable.then(|| cut(path, whole as u64)) {
            None => READ_ONLY.to_string(),
            Some(Ok(())) => "cut off".to_string(),
            Some(Err(e)) => format!("could not be cut off ({e})"),
        };
        problems.push(format!("{}: torn last entry at byte {whole} ({} bytes) ignored; {done}", path.display(), bytes.len() - whole));
    }
    let mut unknown = 0;
    for chunk in bytes.chunks_exact(4) {
        let index = chunk.try_into().map_or(u32::MAX, u32::from_le_bytes);
        match records.get_mut(index as usize) {
            Some(r) => *r = None,
            None => unknown += 1,
        }
    }
    if unknown > 0 {
        problems.push(format!("{}: {unknown} entries name records the segment does not have ({} readable); ignored", path.display(), records.len()));
    }
}

// ---- The committer -----------------------------------------------------------------------------

/// The segment being appended to, owned by the committer.
struct Current {
    seq: u64,
    file: File,
    /// Its length including `buf`.
    len: u64,
    records: u32,
    /// Written at the next commit.
    buf: Vec<u8>,
}

/// The committer's open files.
struct Files {
    dir: PathBuf,
    next_seq: u64,
    current: Option<Current>,
    acks: HashMap<u64, File>,
    dead: Option<File>,
    /// The last commit failed (so recovery is logged once, not every failure).
    failing: bool,
    /// When the oldest write not yet `fsync`ed was made (`None`: everything is on disk).
    unsynced_since: Option<Instant>,
    /// Segment `fsync`s since open.
    syncs: u64,
}

/// Where an append landed.
struct Placed {
    entry: Entry,
    created_ms: u64,
}

/// What a batch of appends did: where each landed, and each touched segment's new length.
type Written = (Vec<Placed>, Vec<(u64, u64)>);

impl Files {
    /// Writes the current segment's buffer, and `fsync`s it if `sync`. Written is enough for a
    /// `SIGKILL` (the page cache outlives the process); `fsync`ed, for a power cut.
    fn write_out(&mut self, sync: bool) -> Result<(), Failure> {
        let Some(c) = self.current.as_mut() else { return Ok(()) };
        if !c.buf.is_empty() {
            c.file.write_all(&c.buf).map_err(|e| Failure::new(&segment_path(&self.dir, c.seq, "log"), &e))?;
            c.buf.clear();
            self.unsynced_since.get_or_insert_with(Instant::now);
        }
        if sync { self.sync() } else { Ok(()) }
    }

    /// `fsync`s the current segment if something written to it is not yet on disk.
    fn sync(&mut self) -> Result<(), Failure> {
        let Some(c) = self.current.as_mut() else { return Ok(()) };
        if self.unsynced_since.is_some() {
            c.file.sync_data().map_err(|e| Failure::new(&segment_path(&self.dir, c.seq, "log"), &e))?;
            self.unsynced_since = None;
            self.syncs += 1;
        }
        Ok(())
    }

    /// How long until what is written but not `fsync`ed is due (`None`: nothing is).
    fn sync_due_in(&self, interval: Duration) -> Option<Duration> {
        self.unsynced_since.map(|since| interval.saturating_sub(since.elapsed()))
    }

    /// Writes a batch of appends, starting segments as needed. On failure the batch is undone:
    /// new segments removed, the old current cut back and never appended to again.
    fn write_appends(&mut self, appends: &[Buffered], segment_bytes: u64, sync: bool) -> Result<Written, Failure> {
        let before = self.current.as_ref().map(|c| (c.seq, c.len - c.buf.len() as u64));
        let mut created = Vec::new();
        let result = self.try_write_appends(appends, segment_bytes, sync, &mut created);
        if result.is_err() {
            // The old segment is cut back and closed; what it held unsynced is left to the
            // kernel's writeback (a failing disk is reported, not waited on in a loop).
            self.current = None;
            self.unsynced_since = None;
            for seq in created {
                let _ = fs::remove_file(segment_path(&self.dir, seq, "log"));
            }
            if let Some((seq, len)) = before {
                let _ = cut(&segment_path(&self.dir, seq, "log"), len);
            }
            let _ = sync_dir(&self.dir);
        }
        result
    }

    fn try_write_appends(&mut self, appends: &[Buffered], segment_bytes: u64, sync: bool, created: &mut Vec<u64>) -> Result<Written, Failure> {
        let (mut placed, mut lens) = (Vec::with_capacity(appends.len()), Vec::new());
        for b in appends {
            if self.current.as_ref().is_none_or(|c| c.records > 0 && (c.len >= segment_bytes || c.records == u32::MAX)) {
                // A segment left behind is on disk whole: only the current one waits for a sync.
                self.write_out(true)?;
                lens.extend(self.current.take().map(|c| (c.seq, c.len)));
                let seq = self.next_seq;
                self.next_seq += 1;
                let path = segment_path(&self.dir, seq, "log");
                let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| Failure::new(&path, &e))?;
                created.push(seq);
                self.current = Some(Current { seq, file, len: 8, records: 0, buf: SEGMENT_MAGIC.to_vec() });
            }
            let Some(c) = self.current.as_mut() else { continue };
            let len = b.frame.len() as u64;
            let entry = Entry { pos: Position { segment: c.seq, index: c.records }, offset: c.len, len: (len - 8) as u32, data_len: b.data_len };
            placed.push(Placed { entry, created_ms: b.created_ms });
            c.buf.extend_from_slice(&b.frame);
            c.len += len;
            c.records += 1;
        }
        self.write_out(sync)?;
        lens.extend(self.current.as_ref().map(|c| (c.seq, c.len)));
        if !created.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok((placed, lens))
    }

    /// Empties `dead.log` if `reset`, then appends `frames`; returns its new length.
    fn write_dead(&mut self, reset: bool, frames: &[u8]) -> Result<u64, Failure> {
        let path = self.dir.join(DEAD_FILE);
        let fail = |e: io::Error| Failure::new(&path, &e);
        if self.dead.is_none() {
            let mut f = OpenOptions::new().create(true).append(true).open(&path).map_err(fail)?;
            if f.metadata().map_err(fail)?.len() < 8 {
                f.set_len(0).and_then(|()| f.write_all(DEAD_MAGIC)).and_then(|()| f.sync_data()).map_err(fail)?;
                sync_dir(&self.dir)?;
            }
            self.dead = Some(f);
        }
        let Some(f) = self.dead.as_mut() else { return Ok(0) };
        if reset {
            f.set_len(8).map_err(fail)?;
        }
        f.write_all(frames).and_then(|()| f.sync_data()).map_err(fail)?;
        f.metadata().map(|m| m.len()).map_err(fail)
    }

    /// Appends to a segment's `.ack` file; true if the file was created.
    fn write_ack(&mut self, seq: u64, bytes: &[u8]) -> Result<bool, Failure> {
        let path = segment_path(&self.dir, seq, "ack");
        let fail = |e: io::Error| Failure::new(&path, &e);
        let mut created = false;
        let f = match self.acks.entry(seq) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                created = !path.exists();
                slot.insert(OpenOptions::new().create(true).append(true).open(&path).map_err(fail)?)
            }
        };
        // Written, not fsynced: an ack lost to a power cut only means the item is delivered
        // again after the restart, with the same event id for the vendor to drop; a SIGKILL
        // loses nothing (the page cache survives the process). Syncing every ack file on every
        // commit doubled the fsyncs for no loss it prevents.
        f.write_all(bytes).map_err(fail)?;
        Ok(created)
    }

    /// Deletes a finished segment: `.log` first (so a crash between leaves only acks behind).
    fn delete_segment(&mut self, seq: u64) -> Result<(), Failure> {
        self.acks.remove(&seq);
        for ext in ["log", "ack"] {
            let path = segment_path(&self.dir, seq, ext);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Failure::new(&path, &e)),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Shared {
    fn new(dir: PathBuf, cfg: Option<StoreConfig>, state: State) -> Self {
        Shared { dir, cfg, state: Mutex::new(state), wake: Condvar::new(), dead_io: Mutex::new(()), committed: watch::Sender::new(0), reader: Mutex::new(None) }
    }

    /// The committer thread: sleeps until there is work (or a write is due its `fsync`),
    /// gathers for `commit_interval` (unless a flush or close hurries it), commits; a last
    /// commit on close.
    ///
    /// After a commit that had work it opens the next window at once instead of sleeping until
    /// an append wakes it: under steady traffic appends then cost no wake-up (a futex call, and
    /// on a busy core two context switches on the request path, per queue per window). A window
    /// that gathered nothing sends it back to sleep.
    fn run(&self, cfg: StoreConfig, mut files: Files) {
        let mut window_open = false;
        loop {
            let last = {
                let mut st = lock(&self.state);
                if !window_open {
                    while !st.closing && !st.has_work() {
                        st.sleeping = true;
                        match files.sync_due_in(cfg.sync_interval) {
                            Some(left) if left.is_zero() => break,
                            Some(left) => st = self.wake.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0,
                            None => st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
                        }
                    }
                    st.sleeping = false;
                }
                if window_open || st.has_work() {
                    let wait = if files.failing { cfg.commit_interval.max(RETRY_AFTER_FAILURE) } else { cfg.commit_interval };
                    st = self.wake.wait_timeout_while(st, wait, |s| !s.closing && !s.urgent).unwrap_or_else(|p| p.into_inner()).0;
                }
                window_open = st.has_work();
                st.closing
            };
            self.commit(&mut files, &cfg, last);
            if last {
                let mut st = lock(&self.state);
                st.stopped = true;
                for waiter in take(&mut st.waiters) {
                    let _ = waiter.send(Ok(()));
                }
                return;
            }
        }
    }

    /// One group commit: appends, dead letters, acks, deletions, in that order (each step's
    /// durability is what the next relies on). Failed steps are put back for the next commit.
    fn commit(&self, files: &mut Files, cfg: &StoreConfig, last: bool) {
        let dead_io = lock(&self.dead_io);
        let (appends, acks, dead, dead_reset, waiters) = {
            let mut st = lock(&self.state);
            st.urgent = false;
            (take(&mut st.appends), take(&mut st.acks), take(&mut st.dead), take(&mut st.dead_reset), take(&mut st.waiters))
        };
        // Every event being committed was audited before it was queued: the audit records
        // reach their file first, so a crash never leaves a delivered event unaudited.
        if !appends.is_empty() {
            crate::output::flush_batched();
        }
        let mut failure: Option<Failure> = None;
        let mut fail = |f: Failure| {
            tracing::error!("{} (kept for the next commit)", f.clone().into_error());
            failure.get_or_insert(f);
        };

        // `fsync` now if someone waits for this commit, if dead letters depend on it (a dead
        // letter is durable before the ack that retires its item; a replay's items before
        // `dead.log` is emptied), on the last commit, or once the oldest unsynced write is due.
        let sync = last
            || !waiters.is_empty()
            || appends.iter().any(|b| b.done.as_ref().is_some_and(|d| !d.is_closed()))
            || dead_reset
            || !dead.is_empty()
            || files.sync_due_in(cfg.sync_interval).is_some_and(|left| left.is_zero());
        let mut appended = appends.is_empty();
        if appends.is_empty() {
            if sync && let Err(f) = files.sync() {
                fail(f);
            }
        } else {
            let result = files.write_appends(&appends, cfg.segment_bytes, sync);
            let mut st = lock(&self.state);
            st.current = files.current.as_ref().map(|c| c.seq);
            match result {
                Ok((placed, lens)) => {
                    appended = true;
                    for (seq, bytes) in lens {
                        st.segments.entry(seq).or_default().bytes = bytes;
                    }
                    for p in &placed {
                        let seg = st.segments.entry(p.entry.pos.segment).or_default();
                        seg.records.push(Some(p.created_ms));
                        seg.open += 1;
                    }
                    st.unread.extend(placed.iter().map(|p| p.entry));
                    st.buffered_bytes = st.buffered_bytes.saturating_sub(appends.iter().map(|b| b.frame.len() as u64).sum());
                    st.committed_appends += placed.len() as u64;
                    // Before the commits resolve: one waited on was fsynced, and says so.
                    st.syncs = files.syncs;
                    self.committed.send_replace(st.committed_appends);
                    drop(st);
                    for done in appends.into_iter().filter_map(|b| b.done) {
                        let _ = done.send(Ok(()));
                    }
                }
                Err(f) if last => {
                    for b in appends {
                        st.forget(b.created_ms);
                        st.buffered_bytes = st.buffered_bytes.saturating_sub(b.frame.len() as u64);
                        if let Some(done) = b.done {
                            let _ = done.send(Err(f.clone()));
                        }
                    }
                    drop(st);
                    fail(f);
                }
                Err(f) => {
                    let later = std::mem::replace(&mut st.appends, appends);
                    st.appends.extend(later);
                    drop(st);
                    fail(f);
                }
            }
        }

        // Dead letters; skipped when appends failed, since a replay's items must be on disk
        // before dead.log is emptied.
        let mut dead_acks = Vec::new();
        if dead_reset || !dead.is_empty() {
            let frames: Vec<u8> = dead.iter().flat_map(|d| d.frame.iter().copied()).collect();
            let result = if appended { files.write_dead(dead_reset, &frames).map(Some) } else { Ok(None) };
            let mut st = lock(&self.state);
            match result {
                Ok(Some(bytes)) => {
                    st.dead_bytes = bytes;
                    dead_acks.extend(dead.iter().filter_map(|d| d.pos).filter(|p| st.finish(*p)));
                }
                Ok(None) | Err(_) => {
                    let later = std::mem::replace(&mut st.dead, dead);
                    st.dead.extend(later);
                    st.dead_reset |= dead_reset;
                }
            }
            drop(st);
            if let Err(f) = result {
                fail(f);
            }
        }
        drop(dead_io);

        // Acks, one write per segment.
        let mut groups: BTreeMap<u64, Vec<Position>> = BTreeMap::new();
        {
            let st = lock(&self.state);
            for pos in acks.into_iter().chain(dead_acks).filter(|p| st.segments.contains_key(&p.segment)) {
                groups.entry(pos.segment).or_default().push(pos);
            }
        }
        let (mut retry, mut new_files) = (Vec::new(), false);
        for (seq, positions) in groups {
            let bytes: Vec<u8> = positions.iter().flat_map(|p| p.index.to_le_bytes()).collect();
            match files.write_ack(seq, &bytes) {
                Ok(created) => new_files |= created,
                Err(f) => {
                    retry.extend(positions);
                    fail(f);
                }
            }
        }

        // Finished segments that are not being written.
        let doomed: Vec<u64> = {
            let st = lock(&self.state);
            st.segments.iter().filter(|(seq, s)| s.open == 0 && st.current != Some(**seq)).map(|(seq, _)| *seq).collect()
        };
        let mut gone = BTreeSet::new();
        for seq in doomed {
            match files.delete_segment(seq) {
                Ok(()) => {
                    gone.insert(seq);
                }
                Err(f) => fail(f),
            }
        }
        // A deleted segment's space comes back once nothing holds it open.
        let mut reader = lock(&self.reader);
        if reader.as_ref().is_some_and(|(seq, _)| gone.contains(seq)) {
            *reader = None;
        }
        drop(reader);
        if (new_files || !gone.is_empty())
            && let Err(f) = sync_dir(&files.dir)
        {
            fail(f);
        }
        {
            let mut st = lock(&self.state);
            st.syncs = files.syncs;
            st.acks.extend(retry);
            st.segments.retain(|seq, _| !gone.contains(seq));
            if !gone.is_empty() {
                st.unread.retain(|e| !gone.contains(&e.pos.segment));
            }
        }
        if failure.is_none() && files.failing {
            tracing::info!("outbox {}: commits succeed again", files.dir.display());
        }
        files.failing = failure.is_some();
        let result = failure.map_or(Ok(()), Err);
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("sluice-store-{}-{n}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }
        fn cfg(&self) -> StoreConfig {
            StoreConfig {
                dir: self.0.clone(),
                segment_bytes: 1 << 20,
                quota_bytes: 1 << 30,
                commit_interval: Duration::from_millis(5),
                sync_interval: Duration::from_millis(5),
            }
        }
        fn seg(&self, seq: u64, ext: &str) -> PathBuf {
            segment_path(&self.0, seq, ext)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<_> = fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        }
        fn count(&self, suffix: &str) -> usize {
            self.names().iter().filter(|n| n.starts_with("seg-") && n.ends_with(suffix)).count()
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn item(n: u64) -> Item {
        Item { id: format!("ev-{n}"), kind: 1, created_ms: 1_000 + n, attempts: 2, data: format!("payload {n}").into_bytes() }
    }

    fn ids(read: &[(Position, Item)]) -> Vec<&str> {
        read.iter().map(|(_, i)| i.id.as_str()).collect()
    }

    /// A store opened with `cfg`, holding items `ev-0`.. `ev-{n-1}`, committed.
    async fn with_items(cfg: StoreConfig, n: u64) -> Arc<Store> {
        let (store, _) = Store::open(cfg).unwrap();
        for n in 0..n {
            store.append(item(n)).unwrap();
        }
        store.flush().await.unwrap();
        store
    }

    fn drain(store: &Store) -> Vec<(Position, Item)> {
        store.read_next(usize::MAX, usize::MAX).unwrap()
    }

    #[tokio::test]
    async fn items_come_back_in_order_once_each_then_the_later_ones() {
        let dir = TestDir::new("order");
        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!((recovery.pending, recovery.problems.len()), (0, 0));
        for n in 0..5 {
            store.append(item(n)).unwrap();
        }
        store.flush().await.unwrap();
        let first = store.read_next(2, usize::MAX).unwrap();
        assert_eq!(first.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(), vec![item(0), item(1)]);
        assert_eq!(ids(&store.read_next(10, 1).unwrap()), ["ev-2"], "at least one even when over max_bytes");
        assert_eq!(ids(&drain(&store)), ["ev-3", "ev-4"]);
        assert!(drain(&store).is_empty(), "each item is handed out once");
        store.append(item(5)).unwrap();
        store.append(item(6)).unwrap();
        store.flush().await.unwrap();
        let later = drain(&store);
        assert_eq!(ids(&later), ["ev-5", "ev-6"]);
        assert!(later[0].0 < later[1].0);
        assert_eq!(store.stats().pending, 7);
        assert_eq!(store.stats().oldest_created_ms, Some(1_000));
    }

    /// Waits until `n` appends have been committed (written, readable).
    async fn committed(store: &Store, n: u64) {
        let mut rx = store.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n)).await.expect("committed in time").expect("store open");
    }

    #[tokio::test]
    async fn commits_write_every_window_but_fsync_only_when_waited_for_or_due() {
        let dir = TestDir::new("sync-policy");
        let (store, _) = Store::open(StoreConfig { sync_interval: Duration::from_secs(3600), ..dir.cfg() }).unwrap();
        store.append(item(0)).unwrap();
        committed(&store, 1).await;
        assert_eq!(ids(&drain(&store)), ["ev-0"], "written and readable at the commit");
        assert_eq!(store.stats().syncs, 0, "not fsynced before its sync interval");
        store.flush().await.unwrap();
        assert_eq!(store.stats().syncs, 1, "a flush waits for the fsync");
        store.flush().await.unwrap();
        assert_eq!(store.stats().syncs, 1, "nothing new written, nothing to fsync");
        store.append(item(1)).unwrap();
        committed(&store, 2).await;
        assert_eq!(store.stats().syncs, 1);
        store.append(item(2)).unwrap().committed().await.unwrap();
        assert_eq!(store.stats().syncs, 2, "an append whose Commit someone awaits is fsynced");

        // A write is fsynced once due, with no more work coming.
        let dir = TestDir::new("sync-due");
        let (store, _) = Store::open(StoreConfig { sync_interval: Duration::from_millis(50), ..dir.cfg() }).unwrap();
        store.append(item(0)).unwrap();
        committed(&store, 1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.stats().syncs, 1, "fsynced once, within its sync interval");
    }

    /// Records, at each write, how long the outbox's first segment was.
    struct SegmentLength(PathBuf, Arc<Mutex<Vec<u64>>>);

    impl Write for SegmentLength {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.1).push(fs::metadata(&self.0).map_or(0, |m| m.len()));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_commit_writes_the_audit_waiting_in_memory_before_the_events_it_vouches_for() {
        let dir = TestDir::new("audit-first");
        let (store, _) = Store::open(dir.cfg()).unwrap();
        let lengths = Arc::new(Mutex::new(Vec::new()));
        let audit = crate::output::Batched::new("consent audit", Box::new(SegmentLength(dir.seg(0, "log"), lengths.clone())));
        // The host audits an event's decisions, then queues it.
        audit.write(b"{\"decision\":\"run\"}\n");
        store.append(item(0)).unwrap();
        store.flush().await.unwrap();
        let written = fs::metadata(dir.seg(0, "log")).unwrap().len();
        let at_audit = lock(&lengths).first().copied().expect("the audit was written out by the commit");
        assert!(at_audit < written, "the audit line went out before the item it vouches for ({at_audit} < {written} bytes)");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_read_now_loses_nothing_its_items_are_read_again() {
        let dir = TestDir::new("unreadable-now");
        let store = with_items(dir.cfg(), 3).await;
        // The segment is gone for a moment (a full file table, a disk that went away, ...).
        let path = dir.seg(0, "log");
        let aside = dir.0.join("aside");
        fs::rename(&path, &aside).unwrap();
        assert!(matches!(store.read_next(10, usize::MAX), Err(StoreError::Io { .. })), "the read failed, and says so");
        assert_eq!(store.stats().pending, 3, "nothing was finished");
        fs::rename(&aside, &path).unwrap();
        assert_eq!(ids(&drain(&store)), ["ev-0", "ev-1", "ev-2"], "the same items, in order, once the file reads");
        assert_eq!(store.stats().damaged, 0);
    }

    #[tokio::test]
    async fn a_record_damaged_on_disk_after_its_commit_is_skipped_and_the_rest_of_its_batch_still_read() {
        let dir = TestDir::new("damaged-after-commit");
        // Small segments: the batch spans several files, read a run per file.
        let store = with_items(StoreConfig { segment_bytes: 100, ..dir.cfg() }, 6).await;
        assert!(dir.count(".log") > 1, "{:?}", dir.names());
        // Flip the last byte of the first segment: its last record's payload.
        let first = dir.seg(0, "log");
        let mut bytes = fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let read = drain(&store);
        let damaged = (0..6).find(|n| !ids(&read).contains(&format!("ev-{n}").as_str()));
        assert_eq!(read.len(), 5, "exactly one item lost to the damage: {:?}", ids(&read));
        let expected: Vec<Item> = (0..6).filter(|n| Some(*n) != damaged).map(item).collect();
        assert_eq!(read.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(), expected, "the others whole, in order");
        // The damaged one is accounted for, not pending forever: counted, and finished, so its
        // segment goes once the others are delivered.
        assert_eq!((store.stats().damaged, store.stats().pending), (1, 5));
        for (pos, _) in read {
            store.ack(pos).unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.stats().pending, 0);
        assert!(!first.exists(), "the damaged segment was deleted: {:?}", dir.names());
    }

    #[tokio::test]
    async fn handed_back_items_come_out_first_with_their_attempts_unless_finished_meanwhile() {
        let dir = TestDir::new("hand-back");
        let store = with_items(dir.cfg(), 5).await;
        let mut taken = store.read_next(3, usize::MAX).unwrap();
        taken[1].1.attempts = 4;
        // ev-0 was delivered; ev-1 and ev-2 go back unfinished (a worker stopping for a reload).
        store.ack(taken[0].0).unwrap();
        store.hand_back(taken);
        let again = store.read_next(2, usize::MAX).unwrap();
        assert_eq!(ids(&again), ["ev-1", "ev-2"], "handed back first, in order, a finished one skipped, max_items held");
        assert_eq!(again[0].1.attempts, 4, "the attempts so far travel with the item");
        assert_eq!(ids(&drain(&store)), ["ev-3", "ev-4"]);
        assert_eq!(store.stats().pending, 4);
    }

    #[tokio::test]
    async fn after_a_restart_only_unacked_items_are_pending() {
        let dir = TestDir::new("reopen");
        let store = with_items(dir.cfg(), 4).await;
        let read = drain(&store);
        store.ack(read[0].0).unwrap();
        store.ack(read[2].0).unwrap();
        store.flush().await.unwrap();
        drop(store);

        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!((recovery.pending, recovery.problems.clone()), (2, vec![]));
        assert_eq!(ids(&drain(&store)), ["ev-1", "ev-3"]);
        assert_eq!(store.stats().pending, 2);
    }

    #[tokio::test]
    async fn a_kill_loses_only_what_was_not_committed_yet() {
        let dir = TestDir::new("kill");
        let copy = TestDir::new("kill-copy");
        let (store, _) = Store::open(StoreConfig { commit_interval: Duration::from_secs(3600), ..dir.cfg() }).unwrap();
        store.append(item(0)).unwrap();
        store.flush().await.unwrap();
        store.append(item(1)).unwrap(); // waits for an hour-long commit window
        // The files as a SIGKILL would leave them now.
        fs::create_dir_all(&copy.0).unwrap();
        for name in dir.names() {
            fs::copy(dir.0.join(&name), copy.0.join(&name)).unwrap();
        }
        let (killed, recovery) = Store::open(copy.cfg()).unwrap();
        assert_eq!((recovery.pending, recovery.problems.clone()), (1, vec![]));
        assert_eq!(ids(&drain(&killed)), ["ev-0"]);
        drop(store); // a clean stop commits what is buffered
        let (reopened, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!(recovery.pending, 2);
        assert_eq!(ids(&drain(&reopened)), ["ev-0", "ev-1"]);
    }

    #[tokio::test]
    async fn a_record_cut_off_at_the_end_is_skipped_reported_and_cut_away() {
        let dir = TestDir::new("torn");
        let (store, _) = Store::open(dir.cfg()).unwrap();
        for n in 0..3 {
            store.append(item(n)).unwrap();
        }
        drop(store);
        let third = 8 + (frame_item(&item(0)).unwrap().len() + frame_item(&item(1)).unwrap().len()) as u64;
        let log = dir.seg(0, "log");
        cut(&log, fs::metadata(&log).unwrap().len() - 3).unwrap();

        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!(recovery.pending, 2);
        assert_eq!(recovery.problems.len(), 1, "{:?}", recovery.problems);
        assert!(recovery.problems[0].contains("seg-0000000000000000.log") && recovery.problems[0].contains(&format!("byte {third}")), "{:?}", recovery.problems);
        assert_eq!(fs::metadata(&log).unwrap().len(), third, "cut back to the last good record");
        assert_eq!(ids(&drain(&store)), ["ev-0", "ev-1"]);
        store.append(item(3)).unwrap();
        store.flush().await.unwrap();
        assert_eq!(dir.count(".log"), 2, "new appends go to a new segment");
        drop(store);

        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!((recovery.pending, recovery.problems.clone()), (3, vec![]));
        assert_eq!(ids(&drain(&store)), ["ev-0", "ev-1", "ev-3"]);
    }

    #[tokio::test]
    async fn damage_is_reported_and_skipped_never_fatal() {
        let dir = TestDir::new("damage");
        for batch in [0..3, 3..5] {
            let (store, _) = Store::open(dir.cfg()).unwrap();
            for n in batch {
                store.append(item(n)).unwrap();
            }
        }
        // A flipped byte in segment 0's second record; a foreign file; one with a bad magic; a
        // garbage .ack for segment 1 (an impossible index and a torn entry).
        let second = 8 + frame_item(&item(0)).unwrap().len();
        let mut bytes = fs::read(dir.seg(0, "log")).unwrap();
        bytes[second + 12] ^= 0xff;
        fs::write(dir.seg(0, "log"), bytes).unwrap();
        fs::write(dir.0.join("seg-banana.log"), b"x").unwrap();
        fs::write(dir.seg(999, "log"), b"NOT A SEGMENT AT ALL").unwrap();
        fs::write(dir.seg(1, "ack"), [0xff; 6]).unwrap();
        // dead.log: one good letter, then one with a flipped byte.
        let letter = DeadLetter { item: item(9), dead_ms: 5, reason: "HTTP 400".into() };
        let (good, mut bad) = (frame_dead(&letter).unwrap(), frame_dead(&letter).unwrap());
        bad[10] ^= 0xff;
        fs::write(dir.0.join(DEAD_FILE), [&DEAD_MAGIC[..], &good, &bad].concat()).unwrap();

        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        let report = recovery.problems.join("\n");
        for expected in [
            format!("seg-0000000000000000.log: a checksum mismatch at byte {second}"),
            "seg-banana.log: not an outbox file".to_string(),
            "seg-0000000000000999.log: a bad magic number".to_string(),
            "seg-0000000000000001.ack: torn last entry".to_string(),
            "seg-0000000000000001.ack: 1 entries name records the segment does not have".to_string(),
            format!("dead.log: a checksum mismatch at byte {}; copied to", 8 + good.len()),
        ] {
            assert!(report.contains(&expected), "{expected:?} not in\n{report}");
        }
        assert_eq!(recovery.problems.len(), 6, "{report}");
        assert_eq!((store.stats().dead, store.dead_letters().unwrap()), (1, vec![letter]));
        assert!(dir.names().iter().any(|n| n.starts_with("dead.log.damaged-")), "{:?}", dir.names());
        assert_eq!(recovery.pending, 3);
        assert_eq!(ids(&drain(&store)), ["ev-0", "ev-3", "ev-4"]);
        store.append(item(5)).unwrap();
        store.flush().await.unwrap();
        assert!(dir.seg(1000, "log").exists(), "numbering continues past every name found");
        assert!(dir.0.join("seg-banana.log").exists() && dir.seg(999, "log").exists(), "foreign files are left alone");
    }

    #[test]
    fn corrupt_payloads_are_errors_not_panics() {
        let mut good = Vec::new();
        encode_item(&item(7), &mut good).unwrap();
        assert_eq!(parse_item(&good).unwrap().to_item(), item(7));
        let mut bad_version = good.clone();
        bad_version[0] = 2;
        let mut bad_utf8 = good.clone();
        bad_utf8[16] = 0xff;
        for bad in [&[][..], &good[..15], &good[..17], &bad_version, &bad_utf8] {
            assert!(parse_item(bad).is_err(), "{bad:?}");
        }
        assert!(parse_dead(&good).is_err() && parse_dead(&[0xff; 10]).is_err());
        let letter = DeadLetter { item: item(1), dead_ms: 9, reason: "HTTP 400".into() };
        assert_eq!(parse_dead(&frame_dead(&letter).unwrap()[8..]).unwrap(), letter);
    }

    #[tokio::test]
    async fn finished_segments_are_deleted_so_a_drained_queue_keeps_at_most_one() {
        let dir = TestDir::new("delete");
        let store = with_items(StoreConfig { segment_bytes: 200, ..dir.cfg() }, 20).await;
        assert!(dir.count(".log") >= 3, "{:?}", dir.names());
        for (pos, _) in drain(&store) {
            store.ack(pos).unwrap();
        }
        store.flush().await.unwrap();
        assert!(dir.count(".log") <= 1 && dir.count(".ack") <= 1, "{:?}", dir.names());
        let stats = store.stats();
        assert!(stats.pending == 0 && stats.bytes_on_disk < 300, "{stats:?}");
        drop(store);
        let (_store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!((recovery.pending, dir.count(".log"), dir.count(".ack")), (0, 0, 0), "{:?}", dir.names());
    }

    #[tokio::test]
    async fn the_reader_lets_go_of_a_segment_once_it_is_deleted() {
        let dir = TestDir::new("reader");
        // One record per segment: the next append starts a new one.
        let (store, _) = Store::open(StoreConfig { segment_bytes: 1, ..dir.cfg() }).unwrap();
        store.append(item(0)).unwrap();
        store.flush().await.unwrap();
        for (pos, _) in drain(&store) {
            store.ack(pos).unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(dir.count(".log"), 1, "finished, but still the segment written to: {:?}", dir.names());
        store.append(item(1)).unwrap();
        store.flush().await.unwrap();
        assert_eq!(dir.count(".log"), 1, "the finished segment is deleted: {:?}", dir.names());
        let held: Vec<PathBuf> = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(&dir.0) && target.to_string_lossy().ends_with("(deleted)"))
            .collect();
        assert!(held.is_empty(), "a deleted segment is still open, holding its space: {held:?}");
        assert_eq!(ids(&drain(&store)), ["ev-1"]);
    }

    #[tokio::test]
    async fn a_full_quota_refuses_appends_until_acks_free_space() {
        let dir = TestDir::new("quota");
        let (store, _) = Store::open(StoreConfig { segment_bytes: 200, quota_bytes: 1000, ..dir.cfg() }).unwrap();
        let mut accepted = 0;
        let refused = loop {
            match store.append(item(accepted)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(refused, StoreError::Full { quota_bytes: 1000 }), "{refused}");
        assert!(refused.to_string().contains("raise [outbox] quota_mb"));
        assert!((20..30).contains(&accepted), "{accepted}");
        assert_eq!(store.stats().overflowed, 1);
        store.flush().await.unwrap();
        for (pos, _) in drain(&store) {
            store.ack(pos).unwrap();
        }
        store.flush().await.unwrap();
        store.append(item(100)).unwrap();
    }

    #[tokio::test]
    async fn dead_letters_are_kept_listed_replayed_and_purged() {
        let dir = TestDir::new("dead");
        let (store, _) = Store::open(dir.cfg()).unwrap();
        store.append(item(0)).unwrap();
        store.append(item(1)).unwrap();
        store.flush().await.unwrap();
        let read = drain(&store);
        store.dead_letter(read[0].0, &read[0].1, "HTTP 400: invalid pixel id").unwrap();
        store.ack(read[1].0).unwrap();
        store.flush().await.unwrap();
        let letters = store.dead_letters().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!((&letters[0].item, letters[0].reason.as_str()), (&item(0), "HTTP 400: invalid pixel id"));
        assert!(letters[0].dead_ms > 0);
        drop(store);

        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!((recovery.pending, store.stats().dead), (0, 1));
        assert_eq!(store.dead_letters().unwrap(), letters);
        assert!(drain(&store).is_empty());
        assert_eq!(store.replay_dead().unwrap(), 1);
        store.flush().await.unwrap();
        assert_eq!((store.stats().pending, store.stats().dead), (1, 0));
        assert!(store.dead_letters().unwrap().is_empty());
        let again = drain(&store);
        assert_eq!(again.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(), vec![Item { attempts: 0, ..item(0) }]);

        store.dead_letter(again[0].0, &again[0].1, "still refused").unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.purge_dead().unwrap(), 1);
        store.flush().await.unwrap();
        drop(store);
        let (store, recovery) = Store::open(dir.cfg()).unwrap();
        assert_eq!((recovery.pending, store.stats().dead, store.dead_letters().unwrap().len()), (0, 0, 0));
    }

    const _: fn() = || {
        fn shared_across_tasks<T: Send + Sync>() {}
        shared_across_tasks::<Store>();
    };

    #[tokio::test]
    async fn a_second_writer_is_refused_an_inspector_is_not() {
        let dir = TestDir::new("lock");
        let (store, _) = Store::open(dir.cfg()).unwrap();
        store.append(item(0)).unwrap();
        store.flush().await.unwrap();
        let second = Store::open(dir.cfg()).unwrap_err();
        assert!(matches!(second, StoreError::Locked { .. }), "{second}");
        assert!(second.to_string().contains("stop it first"));
        let (inspector, _) = Store::inspect(&dir.0).unwrap();
        assert_eq!(inspector.stats().pending, 1);
        assert!(matches!(inspector.append(item(1)), Err(StoreError::Closed)));
        assert!(matches!(inspector.ack(Position { segment: 0, index: 0 }), Err(StoreError::Closed)));
        drop(store);
        Store::open(dir.cfg()).unwrap();
    }

    #[tokio::test]
    async fn a_commit_resolves_once_the_append_is_on_disk() {
        let dir = TestDir::new("commit");
        let (store, _) = Store::open(dir.cfg()).unwrap();
        let mut committed = store.subscribe();
        let commit = store.append(item(0)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), commit.committed()).await.unwrap().unwrap();
        let (inspector, recovery) = Store::inspect(&dir.0).unwrap();
        assert_eq!((recovery.pending, recovery.problems.clone()), (1, vec![]));
        assert_eq!(drain(&inspector).into_iter().map(|(_, i)| i).collect::<Vec<_>>(), vec![item(0)]);
        assert_eq!(*committed.borrow_and_update(), 1);
    }
}
