//! `sluice_policy::secrets::Masker`: the first line lists secrets (separated by `\t`), the rest
//! is text to mask. Masking is never a panic, its output is valid UTF-8 (by type), and no
//! registered secret — nor any `PIECE`-byte window of one — is left in the output outside the
//! mask text (each piece of output between two `[secret]` masks is checked).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::secrets::{MASK, Masker, PIECE};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (secrets, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let secrets: Vec<&str> = secrets.split('\t').filter(|s| !s.is_empty()).collect();
    let masker = Masker::new(secrets.iter().copied());
    let masked = masker.mask(rest);
    let masked_bytes = masker.mask_bytes(rest.as_bytes());
    let _ = masker.mask_bytes(data);
    let _ = masker.finds(rest);
    for output in [masked.as_bytes(), &masked_bytes[..]] {
        let text = String::from_utf8_lossy(output);
        for piece in text.split(MASK) {
            for secret in &secrets {
                assert!(!contains(piece.as_bytes(), secret.as_bytes()), "secret {secret:?} left in {:?} (input {rest:?})", masked);
                if secret.len() > PIECE {
                    for window in secret.as_bytes().windows(PIECE) {
                        assert!(!contains(piece.as_bytes(), window), "piece {:?} of {secret:?} left in {:?} (input {rest:?})", String::from_utf8_lossy(window), masked);
                    }
                }
            }
        }
    }
});
