//! Everything the process writes — log lines in both formats, the consent audit, traces, CLI
//! output and error messages — passes through one [`Masker`] that knows every secret value of
//! every loaded container (`${ENV_VAR}` parameters: whole, composed into longer strings, inside
//! tables), whole or in any 8-character piece, plain or in its common encodings
//! ([`sluice_policy::secrets`]).
//!
//! The masker is process-wide because output is: the log writer is installed before any
//! container is loaded, and each [`crate::Container::load`] adds its secrets here.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use sluice_policy::secrets::Masker;

static MASKER: RwLock<Option<Arc<Masker>>> = RwLock::new(None);

/// Adds secret values to the process-wide masker.
pub fn register_secrets<I, S>(secrets: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut slot = MASKER.write().unwrap_or_else(|p| p.into_inner());
    let mut next = slot.as_deref().cloned().unwrap_or_default();
    next.extend(secrets);
    *slot = Some(Arc::new(next));
}

/// The current masker (cheap: an `Arc`).
pub fn masker() -> Arc<Masker> {
    MASKER.read().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
}

/// `text` with every known secret masked.
pub fn mask(text: &str) -> String {
    masker().mask(text).into_owned()
}

/// `text` masked and cut to at most `max` bytes (at a character boundary, `…` marking the
/// cut): for messages a template chose, which are traced and logged and must not grow with
/// what it wrote. Masked over a window a little longer than what is kept, so a secret the cut
/// goes through is masked, not halved.
pub fn bounded(text: &str, max: usize) -> String {
    let window = text.floor_char_boundary(max.saturating_add(64));
    let mut masked = mask(&text[..window]);
    if masked.len() > max || window < text.len() {
        masked.truncate(masked.floor_char_boundary(max));
        masked.push('…');
    }
    masked
}

/// Bytes with every known secret masked.
pub fn mask_bytes(bytes: &[u8]) -> Vec<u8> {
    masker().mask_bytes(bytes).into_owned()
}

/// A writer that masks each buffer before passing it on. `tracing-subscriber` formats an event
/// into one buffer and writes it with one `write_all`, so each write is a whole line.
#[derive(Debug)]
pub struct MaskedWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for MaskedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let masker = masker();
        match masker.mask_bytes(buf) {
            Cow::Borrowed(b) => self.0.write_all(b)?,
            Cow::Owned(b) => self.0.write_all(&b)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Wraps a `tracing-subscriber` writer factory so everything it writes is masked.
#[derive(Debug, Clone)]
pub struct Masked<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for Masked<M> {
    type Writer = MaskedWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        MaskedWriter(self.0.make_writer())
    }
}

/// Output whose lines are gathered in memory and written out together: the consent audit,
/// whose one `write` per event was ~3% of the request path's CPU under load, and the server's
/// log when it goes to a file or a collector rather than a terminal ([`BatchedLines`]).
///
/// What is gathered is written out, in order:
/// * before each outbox commit writes the events it holds, and before a template sends from
///   inside the visitor's request ([`flush_batched`], called by both): the audit records of an
///   event are written no later than the event is committed or sent, so no vendor ever gets an
///   event whose decision a crash kept out of the audit;
/// * at least every [`FLUSH_EVERY`] by a thread of its own (`sluice-output`), for the decisions
///   no outbox commit follows (a blocked event, a tag without an outbox);
/// * when [`WRITE_AT`] bytes are waiting, and when the sink is dropped (a reload, shutdown).
///
/// So a `SIGKILL` loses at most the last [`FLUSH_EVERY`] of audit records, and only of events
/// no vendor gets. Lines go to the writer whole, each `write` a run of whole lines.
pub struct Batched {
    /// What the lines are, for the error when they cannot be written.
    what: &'static str,
    state: Mutex<BatchedState>,
}

struct BatchedState {
    out: Box<dyn Write + Send>,
    waiting: Vec<u8>,
}

/// The longest lines wait before the `sluice-output` thread writes them out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Lines are written out at once when this many bytes wait.
pub const WRITE_AT: usize = 64 << 10;

/// Every live [`Batched`] sink, for [`flush_batched`] and the `sluice-output` thread.
static BATCHED: Mutex<Vec<Weak<Batched>>> = Mutex::new(Vec::new());

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

impl Batched {
    /// A batched sink writing `what` (named in errors) to `out`; starts the `sluice-output`
    /// thread the first time.
    pub fn new(what: &'static str, out: Box<dyn Write + Send>) -> Arc<Batched> {
        static FLUSHER: std::sync::Once = std::sync::Once::new();
        FLUSHER.call_once(|| {
            let spawned = std::thread::Builder::new().name("sluice-output".into()).spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush_batched();
                }
            });
            if let Err(e) = spawned {
                tracing::error!("no thread to write batched output ({e}): it is written at outbox commits and every {} kB", WRITE_AT >> 10);
            }
        });
        let sink = Arc::new(Batched { what, state: Mutex::new(BatchedState { out, waiting: Vec::with_capacity(WRITE_AT) }) });
        let mut all = BATCHED.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(&sink));
        sink
    }

    /// Adds whole lines (each ending in `\n`), already masked.
    pub fn write(&self, lines: &[u8]) {
        let written = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.waiting.extend_from_slice(lines);
            if state.waiting.len() >= WRITE_AT { state.write_out() } else { Ok(()) }
        };
        self.report(written);
    }

    /// Writes out whatever waits.
    pub fn flush(&self) {
        let written = self.state.lock().unwrap_or_else(|p| p.into_inner()).write_out();
        self.report(written);
    }

    /// Logs a failed write, once the lock is released (the log may be batched itself).
    fn report(&self, written: std::io::Result<()>) {
        if let Err(e) = written {
            tracing::error!("{} lines could not be written: {e}", self.what);
        }
    }
}

impl BatchedState {
    /// Writes out what waits; it is dropped either way (a failing disk must not grow memory).
    fn write_out(&mut self) -> std::io::Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let written = self.out.write_all(&self.waiting).and_then(|()| self.out.flush());
        self.waiting.clear();
        written
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        let _ = self.state.get_mut().unwrap_or_else(|p| p.into_inner()).write_out();
    }
}

/// A `tracing-subscriber` writer factory over a [`Batched`] sink: `sluice serve` logs through
/// it when its log is not a terminal. Each event is formatted into one buffer and written with
/// one `write_all` ([`MaskedWriter`]), so each write is a whole, masked line.
#[derive(Debug, Clone)]
pub struct BatchedLines(pub Arc<Batched>);

impl std::io::Write for &Batched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Batched::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedLines {
    type Writer = &'a Batched;
    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

/// Writes out every [`Batched`] sink's waiting lines (the outbox calls it before each commit).
pub fn flush_batched() {
    let sinks: Vec<Arc<Batched>> = BATCHED.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
    for sink in sinks {
        sink.flush();
    }
}

/// [`flush_batched`] for a panic hook: a sink (or the list of them) locked at the moment of the
/// panic is skipped rather than waited for, since its holder may be the thread panicking.
pub fn flush_batched_on_panic() {
    let Ok(all) = BATCHED.try_lock() else { return };
    let sinks: Vec<Arc<Batched>> = all.iter().filter_map(Weak::upgrade).collect();
    drop(all);
    for sink in sinks {
        if let Ok(mut state) = sink.state.try_lock() {
            let _ = state.write_out();
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A log subscriber writing to `writer` in `format`, filtered by `filter` (`SLUICE_LOG`
/// syntax), with every line masked. The binary installs it globally; tests install it
/// per thread over a capture buffer, so they see exactly what operators would.
pub fn subscriber<M>(format: LogFormat, filter: &str, writer: M, ansi: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    M: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(Masked(writer)).with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes a test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn batched_lines_are_written_out_in_order_by_the_thread_a_flush_a_full_buffer_or_the_drop() {
        let out = Shared::default();
        let sink = super::Batched::new("test", Box::new(out.clone()));
        sink.write(b"one\n");
        sink.write(b"two\n");
        super::flush_batched();
        assert_eq!(out.text(), "one\ntwo\n", "written out, in order, by a flush");

        sink.write(b"three\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !out.text().ends_with("three\n") {
            assert!(std::time::Instant::now() < deadline, "the sluice-output thread writes waiting lines out");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }

        let big = vec![b'x'; super::WRITE_AT];
        sink.write(&big);
        assert!(out.text().len() > super::WRITE_AT, "a full buffer goes out at once");

        sink.write(b"last\n");
        drop(sink);
        assert!(out.text().ends_with("last\n"), "dropping the sink writes the rest");
    }

    #[test]
    fn a_bounded_message_is_cut_at_a_character_and_masks_a_secret_the_cut_goes_through() {
        super::register_secrets(["cut-through-secret-0123456789"]);
        let text = format!("{}cut-through-secret-0123456789 and more", "é".repeat(40));
        // 80 bytes of é, then the secret: a cut at 90 bytes lands inside it.
        let cut = super::bounded(&text, 90);
        assert!(cut.len() <= 90 + '…'.len_utf8() && cut.ends_with('…'), "{cut}");
        assert!(!cut.contains("cut-thr"), "no piece of the secret survives the cut: {cut}");
        assert_eq!(super::bounded("short", 90), "short");
        let huge = "x".repeat(10 << 20);
        assert_eq!(super::bounded(&huge, 2048).len(), 2048 + '…'.len_utf8());
    }
}
