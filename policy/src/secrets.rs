//! Secret masking: everything the process writes passes through a [`Masker`] that knows every
//! secret value of the container (API tokens, webhook URLs whose path is the credential) and
//! replaces them, whole or in part, plain or encoded, with [`MASK`].
//!
//! # What is matched
//!
//! For each secret the masker derives a set of *forms* (the ways a program or a vendor may write
//! it), and masks every [`PIECE`]-byte window of each form wherever it appears, or the whole form
//! when the form is shorter than [`PIECE`]. A secret shorter than [`PIECE`] bytes is therefore
//! masked only whole (`abc` masks `abc`, never `ab`). Lengths are in **bytes**: a piece of 8 bytes
//! of `grün…` is fewer than 8 characters; every 8-character piece holds an 8-byte one, so masking
//! by bytes is the stricter rule.
//!
//! The forms of a secret `s`:
//! 1. `s` itself, and `s` with spaces as `+` (a form-encoded value once its `%XX` are decoded);
//! 2. percent-encoded as a URL component (every byte outside `A-Za-z0-9-._~` as `%XX`), and
//!    form-encoded (`application/x-www-form-urlencoded`: bytes outside `A-Za-z0-9*-._` as
//!    `%XX`, space as `+`), each with upper- and lower-case hex;
//! 3. JSON-string-escaped: `"` `\` and control characters escaped (controls as `\n`, `\t`, … or
//!    `\u00XX`), with `/` plain or as `\/`, non-ASCII plain or as `\uXXXX` (UTF-16, surrogate
//!    pairs), hex lower- or upper-case: every combination (serde_json is the plain/lower one,
//!    PHP-style writers escape `/` and non-ASCII); Rust's `{:?}` escaping; and each of these
//!    escaped once more by a JSON writer (a JSON log line quoting a JSON body);
//! 4. base64 of the whole secret, standard (`+/`) and URL-safe (`-_`) alphabets, with and
//!    without `=` padding;
//! 5. base64 of the secret *inside a longer value* (HTTP Basic auth encodes `user:secret`). In
//!    general that cannot be matched: base64 turns 3 bytes into 4 characters, so the characters
//!    depend on where the secret falls in a 3-byte group and, at both edges, on the unknown
//!    neighbouring bytes. The masker covers the three alignments (0, 1 or 2 unknown bytes before
//!    the secret) by knowing, for each, the inner characters that depend on the secret's bytes
//!    only; those strings (when at least [`PIECE`] long) are windowed like any form. The one to
//!    three characters at each edge, which mix the secret's first or last bits with the
//!    neighbours', are not masked.
//!
//! The text is matched twice when it holds a `%XX` escape: as written, and with every `%XX`
//! (either hex case) decoded. The decoded view catches any percent-encoder, whatever bytes it
//! leaves plain (`quote()` keeping `/`, the `url` crate's path set, `encodeURIComponent`) and
//! mixed-case hex; its matches are mapped back to the bytes that were written. Matching is
//! otherwise case-sensitive (the percent forms carry both hex cases).
//!
//! # How a masked region is formed
//!
//! The masked region is the union of the byte ranges of all matching windows (of any form, any
//! secret, either view). Each range is first widened outward to character boundaries: in
//! [`Masker::mask`] to the nearest `char` boundaries (so a window that begins or ends inside a
//! multi-byte character swallows that whole character and the output is always valid UTF-8); in
//! [`Masker::mask_bytes`] over at most three UTF-8 continuation bytes (`0b10xx_xxxx`) at either
//! end, which is the same for valid UTF-8 and bounded for other bytes. Overlapping or touching
//! ranges then merge, and each maximal run becomes one [`MASK`].
//!
//! # What is not covered
//!
//! A piece shorter than [`PIECE`] bytes of a longer secret; any piece of a short secret; the
//! base64 edge characters described above; an 8-byte window of mixed-case percent-encoding or
//! a `\u` escape with mixed-case hex that decodes to fewer than 8 bytes; other encodings (hex,
//! base32, HTML entities, double percent-encoding beyond the forms above, compression, hashes);
//! case changes (a URL parser lowercasing the host of a webhook URL; its path, the credential,
//! is still matched); Unicode normalisation; and a secret split across two calls: mask whole
//! lines, not fragments of them.
//!
//! # Cost
//!
//! With no secret, [`Masker::mask`] returns its input borrowed without looking at it. Otherwise
//! it is one pass (two when the text holds a `%XX`) with a rolling 8-byte key: a bit in a Bloom
//! filter sized to the number of windows, then a hash-set lookup (and, for secrets shorter than
//! [`PIECE`], a 256-bit table of the bytes that end one first). It allocates only when
//! something matched.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

/// Replacement text for a masked run.
pub const MASK: &str = "[secret]";

/// The shortest piece of a secret that is masked wherever it appears (a secret shorter than this
/// is masked only whole). Counted in bytes.
pub const PIECE: usize = 8;

// A window is packed into a u64, one byte each; a short form's length tags the top byte.
const _: () = assert!(PIECE >= 2 && PIECE <= 8);

/// Bloom filter bits per known window (one hash: about 3% false positives).
const BLOOM_BITS_PER_KEY: usize = 32;
/// log2 of the smallest and largest Bloom filter, in bits.
const BLOOM_MIN_LOG2: u32 = 10;
const BLOOM_MAX_LOG2: u32 = 27;

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

type KeySet = HashSet<u64, BuildHasherDefault<MixHasher>>;

/// Knows every secret value of a container and masks them, whole or in part, plain or encoded.
///
/// See the [module documentation](self) for the exact rules. `Debug` prints only how many
/// secrets it knows.
#[derive(Clone, Default)]
pub struct Masker {
    /// The secrets added so far, so that adding one again costs nothing.
    secrets: HashSet<Box<str>>,
    /// Every `PIECE`-byte window of every form, packed.
    windows: KeySet,
    /// Every form shorter than `PIECE`, packed and tagged with its length.
    short: KeySet,
    /// Bit `n` set when some short form is `n` bytes long.
    short_lens: u8,
    /// Bytes that end a short form (a 256-bit table).
    short_ends: [u64; 4],
    /// One-hash Bloom filter over `windows` and `short`, `1 << bloom_log2` bits.
    bloom: Vec<u64>,
    bloom_log2: u32,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker").field("secrets", &self.secrets.len()).finish()
    }
}

impl Masker {
    /// A masker for these secret values (empty strings ignored; duplicates fine).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut masker = Self::default();
        masker.extend(secrets);
        masker
    }

    /// Adds more secrets (another template's); cheap enough to call at load time per template:
    /// the cost is proportional to the new secrets' length (a secret already known costs a
    /// lookup), plus an occasional rebuild of the filter as it doubles.
    pub fn extend<I, S>(&mut self, secrets: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut added = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() || self.secrets.contains(secret) {
                continue;
            }
            self.secrets.insert(secret.into());
            for form in forms(secret) {
                self.add_form(&form, &mut added);
            }
            for fragment in base64_fragments(secret.as_bytes()) {
                if fragment.len() >= PIECE {
                    self.add_form(&fragment, &mut added);
                }
            }
        }
        self.update_bloom(&added);
    }

    /// Whether it knows no secret (then [`mask`](Self::mask) returns its input borrowed, at no
    /// cost).
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.short.is_empty()
    }

    /// `text` with every occurrence of any secret — and of any [`PIECE`]-long piece of one —
    /// replaced by [`MASK`], in each known encoding. Overlapping or adjacent matches merge into
    /// one [`MASK`]; a match is widened to `char` boundaries. Borrowed when nothing matched.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        let runs = self.runs(text.as_bytes(), |start, end| {
            (floor_boundary(text, start), ceil_boundary(text, end))
        });
        if runs.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + runs.len() * MASK.len());
        let mut last = 0;
        for (start, end) in runs {
            // The runs lie on char boundaries; were one not to, masking more is the safe side.
            out.push_str(text.get(last..start).unwrap_or(MASK));
            out.push_str(MASK);
            last = end;
        }
        out.push_str(text.get(last..).unwrap_or(MASK));
        Cow::Owned(out)
    }

    /// The same for bytes (log writers get bytes); non-UTF-8 bytes are matched as bytes. A match
    /// is widened over at most three UTF-8 continuation bytes at either end, so valid UTF-8 stays
    /// valid.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let runs = self.runs(bytes, |mut start, mut end| {
            for _ in 0..3 {
                if start > 0 && bytes.get(start).is_some_and(|&b| is_continuation(b)) {
                    start -= 1;
                }
                if bytes.get(end).is_some_and(|&b| is_continuation(b)) {
                    end += 1;
                }
            }
            (start, end)
        });
        if runs.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + runs.len() * MASK.len());
        let mut last = 0;
        for (start, end) in runs {
            out.extend_from_slice(bytes.get(last..start).unwrap_or(MASK.as_bytes()));
            out.extend_from_slice(MASK.as_bytes());
            last = end;
        }
        out.extend_from_slice(bytes.get(last..).unwrap_or(MASK.as_bytes()));
        Cow::Owned(out)
    }

    /// Whether `text` holds a secret or a piece of one (for tests and assertions).
    pub fn finds(&self, text: &str) -> bool {
        !self.is_empty() && self.matches(text.as_bytes(), &mut |_, _| ControlFlow::Break(())).is_break()
    }

    /// Adds the windows of one form (or the form itself when it is short).
    fn add_form(&mut self, form: &[u8], added: &mut Vec<u64>) {
        if form.len() >= PIECE {
            for window in form.windows(PIECE) {
                let key = pack(window);
                if self.windows.insert(key) {
                    added.push(key);
                }
            }
        } else if let Some(&last) = form.last() {
            let key = short_key(pack(form), form.len());
            if self.short.insert(key) {
                added.push(key);
            }
            self.short_lens |= 1 << form.len();
            set_bit(&mut self.short_ends, last);
        }
    }

    /// Sets the filter bits of new keys, or rebuilds a larger filter when the set outgrew it.
    fn update_bloom(&mut self, added: &[u64]) {
        let entries = self.windows.len() + self.short.len();
        if entries == 0 {
            return;
        }
        let want = entries
            .saturating_mul(BLOOM_BITS_PER_KEY)
            .checked_next_power_of_two()
            .map_or(BLOOM_MAX_LOG2, usize::trailing_zeros)
            .clamp(BLOOM_MIN_LOG2, BLOOM_MAX_LOG2);
        if want > self.bloom_log2 || self.bloom.is_empty() {
            self.bloom_log2 = want;
            self.bloom = vec![0; 1 << (want - 6)];
            let keys: Vec<u64> = self.windows.iter().chain(self.short.iter()).copied().collect();
            for key in keys {
                self.bloom_set(key);
            }
        } else {
            for &key in added {
                self.bloom_set(key);
            }
        }
    }

    fn bloom_index(&self, key: u64) -> usize {
        // Fibonacci hashing: the top bits of the product depend on every bit of the key.
        let spread = (key ^ (key >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The shift leaves at most BLOOM_MAX_LOG2 bits, which fit any usize this builds for.
        (spread >> (64 - self.bloom_log2)) as usize
    }

    fn bloom_set(&mut self, key: u64) {
        let bit = self.bloom_index(key);
        if let Some(word) = self.bloom.get_mut(bit >> 6) {
            *word |= 1 << (bit & 63);
        }
    }

    fn bloom_has(&self, key: u64) -> bool {
        let bit = self.bloom_index(key);
        self.bloom.get(bit >> 6).is_some_and(|word| word & (1 << (bit & 63)) != 0)
    }

    /// Reports every match (start, end in `bytes`) in the written text, then, if it holds a
    /// `%XX`, in the percent-decoded view. Stops when `hit` breaks.
    fn matches(&self, bytes: &[u8], hit: &mut impl FnMut(usize, usize) -> ControlFlow<()>) -> ControlFlow<()> {
        self.scan::<false>(bytes, hit)?;
        if has_escape(bytes) {
            self.scan::<true>(bytes, hit)?;
        }
        ControlFlow::Continue(())
    }

    /// One pass over `bytes` (percent-decoded when `DECODE`), keeping the last `PIECE` bytes in a
    /// rolling key and, when decoding, where in `bytes` each of them came from.
    fn scan<const DECODE: bool>(
        &self,
        bytes: &[u8],
        hit: &mut impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut key = 0u64;
        let mut starts = [0usize; PIECE];
        let mut seen = 0usize;
        let mut i = 0;
        while let Some(&raw) = bytes.get(i) {
            let (byte, next) = match bytes.get(i + 1..i + 3) {
                Some(&[high, low]) if DECODE && raw == b'%' => match (hex_value(high), hex_value(low)) {
                    (Some(high), Some(low)) => (high << 4 | low, i + 3),
                    _ => (raw, i + 1),
                },
                _ => (raw, i + 1),
            };
            key = key << 8 | u64::from(byte);
            if DECODE && let Some(slot) = starts.get_mut(seen % PIECE) {
                *slot = i;
            }
            seen += 1;
            // Where the window of the newest `len` bytes began in `bytes`.
            let start_of = |len: usize| {
                if DECODE { starts.get((seen - len) % PIECE).copied().unwrap_or(0) } else { next - len }
            };
            if seen >= PIECE {
                let window = low_bytes(key, PIECE);
                if self.bloom_has(window) && self.windows.contains(&window) {
                    hit(start_of(PIECE), next)?;
                }
            }
            if self.short_lens != 0 && has_bit(&self.short_ends, byte) {
                for len in 1..PIECE.min(seen + 1) {
                    if self.short_lens & (1 << len) == 0 {
                        continue;
                    }
                    let short = short_key(low_bytes(key, len), len);
                    if self.bloom_has(short) && self.short.contains(&short) {
                        hit(start_of(len), next)?;
                    }
                }
            }
            i = next;
        }
        ControlFlow::Continue(())
    }

    /// The merged, boundary-snapped runs to mask, in order; empty (not allocated) when nothing
    /// matched.
    fn runs(&self, bytes: &[u8], snap: impl Fn(usize, usize) -> (usize, usize)) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        let _ = self.matches(bytes, &mut |start, end| {
            found.push((start, end));
            ControlFlow::Continue(())
        });
        if found.is_empty() {
            return found;
        }
        found.sort_unstable();
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            // Snapping is monotone, so the runs stay sorted by start.
            let (start, end) = snap(start, end);
            match runs.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => runs.push((start, end)),
            }
        }
        runs
    }
}

/// Every form of `secret` (see the module documentation), deduplicated.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let plain = secret.as_bytes();
    let mut forms = vec![plain.to_vec()];
    forms.push(plain.iter().map(|&b| if b == b' ' { b'+' } else { b }).collect());
    for upper in [true, false] {
        forms.push(percent_encode(plain, is_unreserved, false, upper));
        forms.push(percent_encode(plain, is_form_safe, true, upper));
    }
    let mut escaped = Vec::new();
    for slash in [false, true] {
        for ascii in [false, true] {
            for upper in [false, true] {
                escaped.push(json_escape(secret, slash, ascii, upper));
            }
        }
    }
    let debug = format!("{secret:?}");
    if let Some(inner) = debug.strip_prefix('"').and_then(|d| d.strip_suffix('"')) {
        escaped.push(inner.to_owned());
    }
    for once in &escaped {
        forms.push(json_escape(once, false, false, false).into_bytes());
    }
    forms.extend(escaped.into_iter().map(String::into_bytes));
    for alphabet in [STANDARD, URL_SAFE] {
        let bare = base64(plain, alphabet);
        let mut padded = bare.clone();
        while !padded.len().is_multiple_of(4) {
            padded.push(b'=');
        }
        forms.push(bare);
        forms.push(padded);
    }
    forms.sort_unstable();
    forms.dedup();
    forms
}

/// For 0, 1 and 2 unknown bytes before the secret, in both alphabets: the base64 characters that
/// depend on the secret's bytes only.
fn base64_fragments(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut fragments = Vec::new();
    for alphabet in [STANDARD, URL_SAFE] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = base64(&shifted, alphabet);
            // Character j carries bits 6j..6j+6; the secret's bits are 8*offset..8*(offset+len).
            let first = (8 * offset).div_ceil(6);
            let end = 8 * (offset + secret.len()) / 6;
            if let Some(inner) = encoded.get(first..end)
                && !inner.is_empty()
            {
                fragments.push(inner.to_vec());
            }
        }
    }
    fragments.sort_unstable();
    fragments.dedup();
    fragments
}

/// Unpadded base64; a final partial group's missing bits are zero.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |acc, (k, &b)| acc | u32::from(b) << (16 - 8 * k));
        for k in 0..=chunk.len() {
            let index = (group >> (18 - 6 * k)) & 63;
            if let Some(&c) = alphabet.get(index as usize) {
                out.push(c);
            }
        }
    }
    out
}

/// `bytes` with every byte `keep` rejects as `%XX` (and space as `+` when `space_plus`).
fn percent_encode(bytes: &[u8], keep: fn(u8) -> bool, space_plus: bool, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if keep(b) {
            out.push(b);
        } else if space_plus && b == b' ' {
            out.push(b'+');
        } else {
            out.push(b'%');
            out.push(hex_digit(b >> 4, upper));
            out.push(hex_digit(b & 15, upper));
        }
    }
    out
}

/// The characters a URL component leaves plain (RFC 3986 unreserved).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The characters `application/x-www-form-urlencoded` leaves plain.
fn is_form_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_')
}

/// The inside of a JSON string holding `text`: `"`, `\` and controls escaped; `/` as `\/` when
/// `slash`; non-ASCII as `\uXXXX` when `ascii`; hex digits upper-case when `upper`.
fn json_escape(text: &str, slash: bool, ascii: bool, upper: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let unicode = |out: &mut String, unit: u16| {
        out.push_str("\\u");
        for shift in [12u16, 8, 4, 0] {
            // A nibble is below 16, so this is always a byte value.
            out.push(char::from(hex_digit(((unit >> shift) & 15) as u8, upper)));
        }
    };
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if slash => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => unicode(&mut out, u32::from(c) as u16),
            c if ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    unicode(&mut out, unit);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn hex_digit(nibble: u8, upper: bool) -> u8 {
    match (nibble, upper) {
        (0..=9, _) => b'0' + nibble,
        (_, true) => b'A' + (nibble & 15) - 10,
        (_, false) => b'a' + (nibble & 15) - 10,
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `bytes` holds a `%XX` escape (so the decoded view can differ from the written one).
fn has_escape(bytes: &[u8]) -> bool {
    // `memchr` skips the text between `%`s many bytes at a time: this runs over every line the
    // process writes, and most hold no `%` at all.
    memchr::memchr_iter(b'%', bytes).any(|at| {
        matches!(bytes.get(at + 1..at + 3), Some([high, low]) if hex_value(*high).is_some() && hex_value(*low).is_some())
    })
}

/// Up to eight bytes packed big-endian into the low bytes of a `u64` (as the rolling key holds
/// them: the newest byte lowest).
fn pack(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |key, &b| key << 8 | u64::from(b))
}

/// The newest `len` bytes of a rolling key.
fn low_bytes(key: u64, len: usize) -> u64 {
    if len >= 8 { key } else { key & ((1u64 << (8 * len)) - 1) }
}

/// A short form's key: its bytes (fewer than eight) with its length in the top byte.
fn short_key(packed: u64, len: usize) -> u64 {
    packed | (len as u64) << 56
}

fn set_bit(table: &mut [u64; 4], b: u8) {
    if let Some(word) = table.get_mut(usize::from(b >> 6)) {
        *word |= 1 << (b & 63);
    }
}

fn has_bit(table: &[u64; 4], b: u8) -> bool {
    table.get(usize::from(b >> 6)).is_some_and(|word| word & (1 << (b & 63)) != 0)
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The largest char boundary of `text` at or before `index`.
fn floor_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The smallest char boundary of `text` at or after `index`.
fn ceil_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// Hasher for the packed keys: a SplitMix64 finaliser, so that both the low bits (the bucket)
/// and the high bits (the tag) of the hash depend on every byte of the key.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let mut x = self.0 ^ value;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = x ^ (x >> 31);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: &str = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";

    fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
        let mut out = base64(bytes, alphabet);
        while pad && !out.len().is_multiple_of(4) {
            out.push(b'=');
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(b64(b"", STANDARD, true), "");
        assert_eq!(b64(b"f", STANDARD, true), "Zg==");
        assert_eq!(b64(b"fo", STANDARD, true), "Zm8=");
        assert_eq!(b64(b"foo", STANDARD, true), "Zm9v");
        assert_eq!(b64(b"foobar", STANDARD, true), "Zm9vYmFy");
        assert_eq!(b64(b"\xfb\xff", STANDARD, false), "+/8");
        assert_eq!(b64(b"\xfb\xff", URL_SAFE, false), "-_8");
    }

    #[test]
    fn whole_composed_start_end_repeated() {
        let m = Masker::new(["abcd1234efgh"]);
        assert_eq!(m.mask("Authorization: Bearer abcd1234efgh"), "Authorization: Bearer [secret]");
        assert_eq!(m.mask("abcd1234efgh at the start"), "[secret] at the start");
        assert_eq!(m.mask("at the end abcd1234efgh"), "at the end [secret]");
        assert_eq!(m.mask("abcd1234efgh"), "[secret]");
        assert_eq!(m.mask("abcd1234efgh and abcd1234efgh,abcd1234efgh"), "[secret] and [secret],[secret]");
        // Pieces of eight: its head, its tail, glued to other text.
        assert_eq!(m.mask("x=abcd1234 y=1234efgh z=d1234efgX"), "x=[secret] y=[secret] z=[secret]X");
        // Seven bytes of it are not a piece.
        assert_eq!(m.mask("abcd123 bcd1234 234efgh"), "abcd123 bcd1234 234efgh");
    }

    #[test]
    fn slack_webhook_url_path_and_pieces() {
        let m = Masker::new([SLACK]);
        assert_eq!(m.mask(&format!("POST url={SLACK} status=404")), "POST url=[secret] status=404");
        assert_eq!(
            m.mask("POST /services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX status=404"),
            "POST [secret] status=404"
        );
        assert_eq!(
            m.mask("vendor said: no route for '.../B00000000/XXXX'"),
            "vendor said: no route for '...[secret]'"
        );
        // Seven-byte coincidences stay.
        let innocent = "at hooks.sx and /B00000x and T000000-0 here";
        assert_eq!(m.mask(innocent), innocent);
        assert!(matches!(m.mask(innocent), Cow::Borrowed(_)));
        // The percent-encoded whole URL (as a query parameter) and a JSON log line with `\/`.
        let encoded = "https%3A%2F%2Fhooks.slack.com%2Fservices%2FT00000000%2FB00000000%2FXXXXXXXXXXXXXXXXXXXXXXXX";
        assert_eq!(m.mask(&format!("GET /go?to={encoded}&a=1")), "GET /go?to=[secret]&a=1");
        let json = r#"{"hook":"https:\/\/hooks.slack.com\/services\/T00000000\/B00000000\/XXXXXXXXXXXXXXXXXXXXXXXX"}"#;
        assert_eq!(m.mask(json), r#"{"hook":"[secret]"}"#);
    }

    const ODD: &str = "p/q:r s+t=u-secret";

    #[test]
    fn percent_and_form_encoded_echoes() {
        let m = Masker::new([ODD]);
        assert_eq!(m.mask("cb=p%2Fq%3Ar%20s%2Bt%3Du-secret&x=1"), "cb=[secret]&x=1");
        assert_eq!(m.mask("cb=p%2fq%3ar%20s%2bt%3du-secret&x=1"), "cb=[secret]&x=1");
        assert_eq!(m.mask("body: cb=p%2Fq%3Ar+s%2Bt%3Du-secret&x=1"), "body: cb=[secret]&x=1");
        assert_eq!(m.mask("body: cb=p%2fq%3ar+s%2bt%3du-secret&x=1"), "body: cb=[secret]&x=1");
        // Mixed hex case, and a path quoter that keeps `/` and `:` (the decoded view).
        assert_eq!(m.mask("cb=p%2fq%3Ar%20s%2Bt%3du-secret&x=1"), "cb=[secret]&x=1");
        assert_eq!(m.mask("GET /p/q:r%20s+t=u-secret HTTP/1.1"), "GET /[secret] HTTP/1.1");
        // An eight-byte piece of the encoded form alone (decodes to fewer than eight bytes).
        assert_eq!(m.mask("..%3Ar%20s%2B.."), "..[secret]..");
        // Not a piece: seven encoded bytes.
        assert_eq!(m.mask("..%3Ar%20.."), "..%3Ar%20..");
    }

    #[test]
    fn json_escaped_echoes() {
        let m = Masker::new([ODD]);
        assert_eq!(m.mask(r#"{"cb":"p\/q:r s+t=u-secret"}"#), r#"{"cb":"[secret]"}"#);
        let quoted = Masker::new([r#"pa"ss\word-99"#]);
        let serde = serde_json::to_string(r#"pa"ss\word-99"#).unwrap();
        assert_eq!(serde, r#""pa\"ss\\word-99""#);
        assert_eq!(quoted.mask(&format!("{{\"t\":{serde}}}")), r#"{"t":"[secret]"}"#);
        // Quoted again by a JSON log writer.
        let twice = serde_json::to_string(&format!("body={{\"t\":{serde}}}")).unwrap();
        assert_eq!(quoted.mask(&twice), r#""body={\"t\":\"[secret]\"}""#);
        // Rust's {:?}.
        assert_eq!(quoted.mask(&format!("{:?}", r#"pa"ss\word-99"#)), r#""[secret]""#);
        // Non-ASCII as \u escapes, either hex case.
        let u = Masker::new(["grüße-token-1"]);
        assert_eq!(u.mask(r#"{"t":"gr\u00fc\u00dfe-token-1"}"#), r#"{"t":"[secret]"}"#);
        assert_eq!(u.mask(r#"{"t":"gr\u00FC\u00DFe-token-1"}"#), r#"{"t":"[secret]"}"#);
        // A control character.
        let c = Masker::new(["line1\nline2-tail"]);
        assert_eq!(c.mask(r#"{"t":"line1\nline2-tail"}"#), r#"{"t":"[secret]"}"#);
    }

    #[test]
    fn base64_of_the_whole_secret() {
        for secret in ["open-sesame-1234", "open-sesame-12345", "open-sesame-123456", "\u{fb}\u{ff}>?-token~~"] {
            let m = Masker::new([secret]);
            for alphabet in [STANDARD, URL_SAFE] {
                for pad in [true, false] {
                    let encoded = b64(secret.as_bytes(), alphabet, pad);
                    assert_eq!(m.mask(&format!("auth={encoded};")), "auth=[secret];", "{secret} {encoded}");
                }
            }
        }
    }

    #[test]
    fn base64_inside_basic_auth_masks_the_inner_characters() {
        let secret = "s3cr3t-passw0rd-xyz";
        let m = Masker::new([secret]);
        for user in ["alice", "bob", "carol-x"] {
            let header = format!("{user}:{secret}");
            let encoded = b64(header.as_bytes(), STANDARD, true);
            let start_bits = 8 * (user.len() + 1);
            let first = start_bits.div_ceil(6);
            // The secret ends the value; when it also starts a 3-byte group, the whole-secret
            // padded form matches its tail exactly.
            let end = if start_bits % 24 == 0 { encoded.len() } else { (start_bits + 8 * secret.len()) / 6 };
            let expected = format!("Basic {}[secret]{}", &encoded[..first], &encoded[end..]);
            assert_eq!(m.mask(&format!("Basic {encoded}")), expected, "user {user}");
        }
    }

    #[test]
    fn short_secret_masked_whole_only_and_empty_ignored() {
        let m = Masker::new(["abc"]);
        assert_eq!(m.mask("xabcx abc ab bc"), "x[secret]x [secret] ab bc");
        assert!(!m.finds("ab bc"));
        let empty = Masker::new([""]);
        assert!(empty.is_empty());
        assert_eq!(format!("{empty:?}"), "Masker { secrets: 0 }");
        let both = Masker::new(["", "abc", "abc"]);
        assert_eq!(format!("{both:?}"), "Masker { secrets: 1 }");
        assert_eq!(both.mask("abc"), "[secret]");
        // A one-byte secret is still masked, whole.
        assert_eq!(Masker::new(["q"]).mask("a q b"), "a [secret] b");
    }

    #[test]
    fn utf8_around_and_inside() {
        let m = Masker::new(["abcd1234efgh"]);
        let out = m.mask("éabcd1234efghé");
        assert_eq!(out, "é[secret]é");
        let u = Masker::new(["grün-secret-value"]);
        assert_eq!(u.mask("ügrün-secret-valueü"), "ü[secret]ü");
        assert_eq!(u.mask("x ün-secr y"), "x [secret] y");
        // A window that starts inside a character (`Ƽ` is C6 BC, `ü` is C3 BC): the whole
        // character goes, the output stays valid UTF-8.
        assert_eq!(u.mask("aƼn-secret!"), "a[secret]!");
        // Percent-encoded non-ASCII (the url crate's form of a path).
        assert_eq!(u.mask("/gr%C3%BCn-secret-value/"), "/[secret]/");
        // Bytes: the same, and non-UTF-8 bytes are matched as bytes.
        assert_eq!(u.mask_bytes("aƼn-secret!".as_bytes()).as_ref(), b"a[secret]!");
        let raw: &[u8] = b"\xff\xfeabcd1234efgh\xff\x80";
        assert_eq!(m.mask_bytes(raw).as_ref(), b"\xff\xfe[secret]\xff\x80");
        assert!(matches!(m.mask_bytes(b"\xff nothing"), Cow::Borrowed(_)));
    }

    #[test]
    fn finds_is_empty_borrow_and_debug() {
        let none = Masker::default();
        assert!(none.is_empty());
        assert!(!none.finds("anything"));
        assert!(matches!(none.mask("anything"), Cow::Borrowed("anything")));
        assert!(matches!(none.mask_bytes(b"anything"), Cow::Borrowed(b"anything")));

        let m = Masker::new([SLACK, "abcd1234efgh"]);
        assert!(!m.is_empty());
        assert!(m.finds("see B00000000/XXXX"));
        assert!(m.finds("x%2FB00000000%2Fy"));
        assert!(m.finds("see B0000000"));
        assert!(!m.finds("see B000000x"));
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed("nothing here")));
        assert!(matches!(m.mask("100%25 nothing"), Cow::Borrowed(_)));
        let debug = format!("{m:?}");
        assert_eq!(debug, "Masker { secrets: 2 }");
        assert!(!debug.contains("abcd") && !debug.contains("hooks"));
    }

    #[test]
    fn overlapping_and_adjacent_matches_merge() {
        let m = Masker::new(["alpha-bravo-charlie", "charlie-delta-echo"]);
        assert_eq!(m.mask("x alpha-bravo-charlie-delta-echo y"), "x [secret] y");
        let n = Masker::new(["aaaa1111bbbb", "cccc2222dddd"]);
        assert_eq!(n.mask("<aaaa1111bbbbcccc2222dddd>"), "<[secret]>");
        assert_eq!(n.mask("<aaaa1111bbbb cccc2222dddd>"), "<[secret] [secret]>");
        // A plain match overlapping an encoded one merges too.
        assert_eq!(n.mask("aaaa1111bbbb%63%63%63%632222dddd"), "[secret]");
    }

    #[test]
    fn extend_adds_secrets() {
        let mut m = Masker::new(["abcd1234efgh"]);
        m.extend(["ijkl5678mnop", ""]);
        m.extend(["abcd1234efgh"]);
        assert_eq!(format!("{m:?}"), "Masker { secrets: 2 }");
        assert_eq!(m.mask("abcd1234efgh ijkl5678mnop"), "[secret] [secret]");
    }

    /// A deterministic pseudo-random token (xorshift), alphanumeric with a few URL characters.
    fn token(seed: u64, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/:_-";
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(CHARS[(x % CHARS.len() as u64) as usize])
            })
            .collect()
    }

    #[test]
    fn many_windows_still_mask_exactly() {
        let secrets: Vec<String> = (1..=4).map(|seed| token(seed * 7919, 1500)).collect();
        let m = Masker::new(&secrets);
        assert!(m.windows.len() >= 10_000, "{} windows", m.windows.len());
        let filler = "The quick brown fox jumps over the lazy dog; status=200 took=12ms route=/collect";
        let mut text = String::new();
        let mut expected = String::new();
        for (k, secret) in secrets.iter().enumerate() {
            let piece = &secret[100 * k + 17..100 * k + 17 + PIECE + k];
            text.push_str(&format!("{filler} [{piece}] "));
            expected.push_str(&format!("{filler} [[secret]] "));
        }
        let encoded = b64(secrets[3].as_bytes(), URL_SAFE, false);
        text.push_str(&format!("{filler} b64={encoded}"));
        expected.push_str(&format!("{filler} b64=[secret]"));
        assert_eq!(m.mask(&text), expected);
        assert_eq!(m.mask(filler), filler);
        assert!(!m.finds(filler));
    }

    #[test]
    fn random_splices_leave_no_piece() {
        let alphabet: Vec<char> = "ab1/ %+é\u{fc}€𝄞\"\\:=~-".chars().collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..300 {
            let secrets: Vec<String> =
                (0..2).map(|_| (0..8 + next(20)).map(|_| alphabet[next(alphabet.len())]).collect()).collect();
            let m = Masker::new(&secrets);
            let mut text = String::new();
            for _ in 0..6 {
                let chars: Vec<char> = secrets[next(2)].chars().collect();
                let from = next(chars.len());
                let to = from + next(chars.len() - from + 1);
                text.extend(&chars[from..to]);
                text.extend((0..next(4)).map(|_| alphabet[next(alphabet.len())]));
            }
            let out = m.mask(&text);
            assert_eq!(m.mask_bytes(text.as_bytes()).as_ref(), out.as_bytes(), "{text:?}");
            for secret in &secrets {
                for piece in secret.as_bytes().windows(PIECE) {
                    assert!(!out.as_bytes().windows(PIECE).any(|w| w == piece), "{secret:?} in {out:?} from {text:?}");
                }
            }
        }
    }
}
