//! Everything the process writes — log lines in both formats, the consent audit, traces, CLI
//! output and error messages — passes through one [`Masker`] that knows every secret value of
//! every loaded container (`${ENV_VAR}` parameters: whole, composed into longer strings, inside
//! tables), whole or in any 8-character piece, plain or in its common encodings
//! ([`sluice_policy::secrets`]).
//!
//! The masker is process-wide because output is: the log writer is installed before any
//! container is loaded, and each [`crate::Container::load`] adds its secrets here.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

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
