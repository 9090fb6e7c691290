//! The outbox's access pattern on three embedded stores (redb, fjall, SQLite through rusqlite)
//! and a home-made segment log:
//! events appended in order by one writer with a durable group commit every `GROUP` items, then
//! drained oldest first in batches of `BATCH` (read, delete, durable commit), as a delivery
//! worker would. Prints per store: append rate, commit latency (median, p99), bytes on disk per
//! event after the appends, drain rate, and bytes left on disk once drained.
//!
//! `cargo run --release --manifest-path research/outbox-stores/Cargo.toml [ITEMS]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Items per durable commit on the write side (a 10 ms window at 50,000 events/s).
const GROUP: usize = 500;
/// Items a delivery batch takes (Meta's and TikTok's limit).
const BATCH: usize = 1000;

/// A ~700-byte event as a tag would queue it (a Meta CAPI event, hashed identifiers), varying
/// per item so compression cannot shortcut it.
fn item(i: u64) -> Vec<u8> {
    let h = |salt: u64| format!("{:064x}", (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt) as u128 * 0x1_0000_0001);
    format!(
        r#"{{"event_name":"Purchase","event_time":{},"event_id":"{}","action_source":"website","event_source_url":"https://shop.example/checkout/thank-you?order={i}","user_data":{{"em":["{}"],"ph":["{}"],"client_ip_address":"203.0.113.{}","client_user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36","fbp":"fb.1.1700000000000.{i}"}},"custom_data":{{"currency":"EUR","value":{}.{:02},"content_ids":["SKU-{}"]}}}}"#,
        1_700_000_000 + i,
        h(1),
        h(2),
        h(3),
        i % 250,
        i % 997,
        i % 100,
        i % 5000
    )
    .into_bytes()
}

trait Store {
    fn name(&self) -> &'static str;
    /// Appends `items` (keys are sequence numbers) and commits durably.
    fn append(&mut self, first: u64, items: &[Vec<u8>]);
    /// Reads up to `n` oldest items, deletes them, commits durably; returns how many.
    fn drain(&mut self, n: usize) -> usize;
}

struct Redb(redb::Database);
const QUEUE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("queue");

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb 4.6"
    }
    fn append(&mut self, first: u64, items: &[Vec<u8>]) {
        let txn = self.0.begin_write().expect("txn");
        {
            let mut t = txn.open_table(QUEUE).expect("table");
            for (k, v) in items.iter().enumerate() {
                t.insert(first + k as u64, v.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    fn drain(&mut self, n: usize) -> usize {
        use redb::ReadableTable;
        let txn = self.0.begin_write().expect("txn");
        let mut taken = 0;
        {
            let mut t = txn.open_table(QUEUE).expect("table");
            let keys: Vec<u64> = t
                .iter()
                .expect("iter")
                .take(n)
                .map(|e| {
                    let (k, v) = e.expect("entry");
                    std::hint::black_box(v.value().len());
                    k.value()
                })
                .collect();
            for k in keys {
                t.remove(k).expect("remove");
                taken += 1;
            }
        }
        txn.commit().expect("commit");
        taken
    }
}

struct Fjall {
    db: fjall::Database,
    queue: fjall::Keyspace,
}

impl Store for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3.1 (LZ4)"
    }
    fn append(&mut self, first: u64, items: &[Vec<u8>]) {
        let mut batch = self.db.batch();
        for (k, v) in items.iter().enumerate() {
            batch.insert(&self.queue, (first + k as u64).to_be_bytes(), v.as_slice());
        }
        batch.commit().expect("commit");
        self.db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    fn drain(&mut self, n: usize) -> usize {
        let mut batch = self.db.batch();
        let mut taken = 0;
        for guard in self.queue.iter().take(n) {
            let (k, v) = guard.into_inner().expect("entry");
            std::hint::black_box(v.len());
            batch.remove(&self.queue, k);
            taken += 1;
        }
        batch.commit().expect("commit");
        self.db.persist(fjall::PersistMode::SyncAll).expect("persist");
        taken
    }
}

struct Sqlite(rusqlite::Connection);

impl Store for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite 3 (rusqlite 0.43, WAL, synchronous=FULL)"
    }
    fn append(&mut self, first: u64, items: &[Vec<u8>]) {
        let txn = self.0.transaction().expect("txn");
        {
            let mut insert = txn.prepare_cached("INSERT INTO queue (seq, item) VALUES (?1, ?2)").expect("prepare");
            for (k, v) in items.iter().enumerate() {
                insert.execute(rusqlite::params![(first + k as u64) as i64, v]).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    fn drain(&mut self, n: usize) -> usize {
        let txn = self.0.transaction().expect("txn");
        let last: Option<i64>;
        let mut taken = 0;
        {
            let mut select = txn.prepare_cached("SELECT seq, item FROM queue ORDER BY seq LIMIT ?1").expect("prepare");
            let mut rows = select.query([n as i64]).expect("query");
            let mut max = None;
            while let Some(row) = rows.next().expect("row") {
                let seq: i64 = row.get(0).expect("seq");
                let item: Vec<u8> = row.get(1).expect("item");
                std::hint::black_box(item.len());
                max = Some(seq);
                taken += 1;
            }
            last = max;
        }
        if let Some(last) = last {
            txn.execute("DELETE FROM queue WHERE seq <= ?1", [last]).expect("delete");
        }
        txn.commit().expect("commit");
        taken
    }
}

/// A home-made segment log: records (`len`, CRC-32, payload) appended to numbered segment files
/// of at most [`SEGMENT_BYTES`], `fdatasync` per commit; the drain reads them in order, records
/// how far it got in an `acked` file (written and synced per batch), and deletes a segment
/// whole once it is past it. What "queue files deleted once delivered" asks for, directly.
struct SegmentLog {
    dir: PathBuf,
    writing: (u64, std::io::BufWriter<std::fs::File>, u64),
    reading: (u64, u64),
    reader: Option<std::io::BufReader<std::fs::File>>,
}

const SEGMENT_BYTES: u64 = 8 << 20;

impl SegmentLog {
    fn open(dir: &Path) -> Self {
        let file = std::fs::File::create(dir.join("0.seg")).expect("segment");
        SegmentLog { dir: dir.to_path_buf(), writing: (0, std::io::BufWriter::with_capacity(1 << 20, file), 0), reading: (0, 0), reader: None }
    }
}

impl Store for SegmentLog {
    fn name(&self) -> &'static str {
        "segment log (own format, CRC-32)"
    }
    fn append(&mut self, _first: u64, items: &[Vec<u8>]) {
        use std::io::Write;
        for v in items {
            if self.writing.2 + v.len() as u64 + 8 > SEGMENT_BYTES {
                self.writing.1.flush().expect("flush");
                self.writing.1.get_ref().sync_data().expect("sync");
                let next = self.writing.0 + 1;
                let file = std::fs::File::create(self.dir.join(format!("{next}.seg"))).expect("segment");
                self.writing = (next, std::io::BufWriter::with_capacity(1 << 20, file), 0);
            }
            let w = &mut self.writing.1;
            w.write_all(&(v.len() as u32).to_le_bytes()).expect("write");
            w.write_all(&crc32fast::hash(v).to_le_bytes()).expect("write");
            w.write_all(v).expect("write");
            self.writing.2 += v.len() as u64 + 8;
        }
        self.writing.1.flush().expect("flush");
        self.writing.1.get_ref().sync_data().expect("sync");
    }
    fn drain(&mut self, n: usize) -> usize {
        use std::io::{Read, Seek};
        let mut taken = 0;
        while taken < n {
            let (segment, offset) = self.reading;
            if self.reader.is_none() {
                let Ok(mut file) = std::fs::File::open(self.dir.join(format!("{segment}.seg"))) else { break };
                file.seek(std::io::SeekFrom::Start(offset)).expect("seek");
                self.reader = Some(std::io::BufReader::with_capacity(1 << 20, file));
            }
            let Some(reader) = self.reader.as_mut() else { break };
            let mut head = [0u8; 8];
            if reader.read_exact(&mut head).is_err() {
                if segment == self.writing.0 {
                    break; // caught up with the writer
                }
                self.reader = None;
                std::fs::remove_file(self.dir.join(format!("{segment}.seg"))).expect("delete");
                self.reading = (segment + 1, 0);
                continue;
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).expect("record");
            assert_eq!(crc32fast::hash(&body), crc, "corrupt record");
            self.reading.1 += 8 + len as u64;
            taken += 1;
        }
        let acked = self.dir.join("acked");
        std::fs::write(&acked, format!("{} {}", self.reading.0, self.reading.1)).expect("ack");
        std::fs::File::open(&acked).and_then(|f| f.sync_data()).expect("sync ack");
        taken
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() { dir_bytes(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

fn run(store: &mut dyn Store, dir: &Path, items: &[Vec<u8>]) {
    let started = Instant::now();
    let mut commits = Vec::new();
    for (g, group) in items.chunks(GROUP).enumerate() {
        let t = Instant::now();
        store.append((g * GROUP) as u64, group);
        commits.push(t.elapsed());
    }
    let append = started.elapsed();
    commits.sort();
    let on_disk = dir_bytes(dir);
    let started = Instant::now();
    let mut drained = 0;
    loop {
        let n = store.drain(BATCH);
        drained += n;
        if n == 0 {
            break;
        }
    }
    let drain = started.elapsed();
    assert_eq!(drained, items.len(), "{}: every item drained", store.name());
    let left = dir_bytes(dir);
    println!(
        "| {} | {:.0} | {:.2} / {:.2} | {:.0} | {:.0} | {:.1} |",
        store.name(),
        items.len() as f64 / append.as_secs_f64(),
        percentile(&commits, 0.5).as_secs_f64() * 1e3,
        percentile(&commits, 0.99).as_secs_f64() * 1e3,
        on_disk as f64 / items.len() as f64,
        drained as f64 / drain.as_secs_f64(),
        left as f64 / 1024.0 / 1024.0,
    );
}

fn fresh(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let items: Vec<Vec<u8>> = (0..n).map(item).collect();
    let mean = items.iter().map(Vec::len).sum::<usize>() / items.len().max(1);
    let root = std::env::var("OUTBOX_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir().join("sluice-outbox-stores"));
    println!("{n} items of ~{mean} bytes; durable commit every {GROUP} appended, drained {BATCH} at a time; in {}", root.display());
    println!("\n| store | appends/s | commit ms (median / p99) | bytes on disk per item | drained items/s | MiB left once drained |");
    println!("|---|---|---|---|---|---|");

    let dir = fresh(&root, "redb");
    let mut redb = Redb(redb::Database::create(dir.join("queue.redb")).expect("redb"));
    run(&mut redb, &dir, &items);
    drop(redb);

    let dir = fresh(&root, "fjall");
    let db = fjall::Database::builder(&dir).open().expect("fjall");
    let queue = db.keyspace("queue", fjall::KeyspaceCreateOptions::default).expect("keyspace");
    let mut fjall = Fjall { db, queue };
    run(&mut fjall, &dir, &items);
    drop(fjall);

    let dir = fresh(&root, "sqlite");
    let conn = rusqlite::Connection::open(dir.join("queue.sqlite")).expect("sqlite");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA auto_vacuum=INCREMENTAL;
         CREATE TABLE queue (seq INTEGER PRIMARY KEY, item BLOB NOT NULL);",
    )
    .expect("schema");
    let mut sqlite = Sqlite(conn);
    run(&mut sqlite, &dir, &items);
    drop(sqlite);

    let dir = fresh(&root, "segments");
    let mut log = SegmentLog::open(&dir);
    run(&mut log, &dir, &items);
}
