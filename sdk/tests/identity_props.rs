//! Property tests for `sluice_sdk::identity`: nothing a visitor can send may panic, and the
//! documented properties hold on arbitrary Unicode (issue "Nothing a visitor can send may
//! panic"). Case counts are proptest's default (256), so `cargo test --workspace` stays quick;
//! `PROPTEST_CASES=100000 cargo test -p sluice-sdk --test identity_props` searches harder.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sluice_sdk::identity::{
    EVENT_MODEL_PATHS, Field, Vendor, event_id, from_event, hash, hash_phone, is_sha256_hex, normalize, normalize_phone, prepare,
    sha256_hex,
};

const VENDORS: [Vendor; 3] = [Vendor::Meta, Vendor::TikTok, Vendor::Google];
const FIELDS: [Field; 12] = [
    Field::Email,
    Field::Phone,
    Field::FirstName,
    Field::LastName,
    Field::Street,
    Field::City,
    Field::State,
    Field::Zip,
    Field::Country,
    Field::DateOfBirth,
    Field::Gender,
    Field::ExternalId,
];

/// Multi-byte characters that byte-indexed code trips over: 2-byte (`é`, `ß`, Arabic-Indic
/// digit one), 3-byte (`€`, `정`), 4-byte (`𝟘` MATHEMATICAL DOUBLE-STRUCK DIGIT ZERO, emoji),
/// a combining accent (NFC changes lengths), case-mapping oddities (`İ` lower-cases to two
/// chars, `Σ` has a final form, `ﬀ`), and a zero-width joiner sequence.
const TRICKY: &[&str] = &[
    "é", "e\u{301}", "ß", "١", "٣", "𝟘", "𝟗", "€", "정", "😀", "👩\u{200d}💻", "İ", "Σ", "ﬀ", "Ⅻ", "\u{0}", "\u{feff}", "\u{a0}", "\u{2028}",
];

/// Characters that steer the normalisers into their branches: digits, separators, `+`/`00`,
/// `@`, ZIP dashes, gmail dots.
const STRUCTURE: &[&str] = &["0", "1", "2", "9", "00", "+", "-", "/", ".", " ", "@", "gmail.com", "(", ")", "\t", "\n", "f", "M", "us", "DEU"];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(STRUCTURE).prop_map(str::to_string),
        3 => prop::sample::select(TRICKY).prop_map(str::to_string),
        2 => "[a-zA-Z0-9]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ]
}

/// A mix of digits, ASCII, separators and multi-byte characters.
fn mixed() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..16).prop_map(|p| p.concat())
}

/// Date-of-birth shaped: eight "digits" (some multi-byte), or three parts with a separator.
fn date_like() -> impl Strategy<Value = String> {
    let digit = prop_oneof![4 => "[0-9]", 1 => prop::sample::select(TRICKY).prop_map(str::to_string)];
    let digits = |n| prop::collection::vec(digit.clone(), n).prop_map(|d| d.concat());
    prop_oneof![
        digits(1..=8),
        (digits(1..=4), prop::sample::select(&["-", "/", ".", " "][..]), digits(1..=4), digits(1..=4))
            .prop_map(|(a, sep, b, c)| format!("{a}{sep}{b}{sep}{c}")),
    ]
}

/// Any text a visitor could send, weighted towards the shapes the normalisers care about.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC*",
        any::<String>(),
        mixed(),
        date_like(),
        (mixed(), mixed()).prop_map(|(l, d)| format!("{l}@{d}")),
        "[0-9a-fA-F]{64}",
        (" *", "[0-9a-fA-F]{64}", "[ \t]*").prop_map(|(a, h, b)| format!("{a}{h}{b}")),
    ]
}

fn is_lower_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Arbitrary JSON, nested a few levels, with visitor text in keys and strings.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value for one event-model slot: mostly visitor text, sometimes a digest, sometimes another
/// JSON type entirely.
fn slot() -> impl Strategy<Value = Value> {
    prop_oneof![4 => text().prop_map(Value::String), 1 => "[0-9a-fA-F]{64}".prop_map(Value::String), 1 => json()]
}

/// An event shaped like sGTM's event model (`user_data.*`, `user_data.address.*`, `user_id`),
/// with arbitrary values in the slots and arbitrary extra keys.
fn event() -> impl Strategy<Value = Map<String, Value>> {
    let paths: Vec<&'static str> = EVENT_MODEL_PATHS.iter().flat_map(|(_, plain, hashed)| [*plain, *hashed]).collect();
    let n = paths.len();
    (prop::collection::vec(prop::option::of(slot()), n), prop::collection::vec((text(), json()), 0..3), any::<bool>()).prop_map(
        move |(values, extra, address_is_not_an_object)| {
            let mut root = Value::Object(Map::new());
            for (path, value) in paths.iter().zip(values) {
                if let Some(value) = value {
                    insert_path(&mut root, path, value);
                }
            }
            if address_is_not_an_object && let Some(user_data) = root.get_mut("user_data").and_then(Value::as_object_mut) {
                user_data.insert("address".into(), Value::String("not an object".into()));
            }
            let Value::Object(mut map) = root else { unreachable!("built as an object") };
            for (k, v) in extra {
                map.entry(k).or_insert(v);
            }
            map
        },
    )
}

fn insert_path(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

proptest! {
    #[test]
    fn sha256_hex_is_always_a_lowercase_digest(s in text()) {
        let digest = sha256_hex(&s);
        prop_assert!(is_lower_hex_digest(&digest), "{digest:?}");
        prop_assert!(is_sha256_hex(&digest));
        prop_assert_eq!(digest, sha256_hex(&s), "deterministic");
    }

    #[test]
    fn is_sha256_hex_means_64_hex_bytes(s in text()) {
        prop_assert_eq!(is_sha256_hex(&s), s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    /// `normalize`, `hash` and `prepare`, for every vendor and field: no panic; nothing empty
    /// is ever returned (the hash of "" must never reach a vendor); `hash` is a lowercase
    /// digest, the digest of `normalize`'s output or the input digest passed through;
    /// `prepare` is `hash` where the vendor hashes the field and `normalize` where it does not.
    #[test]
    fn normalize_hash_prepare_never_panic_and_agree(s in text()) {
        let trimmed = s.trim();
        for vendor in VENDORS {
            for field in FIELDS {
                let normal = normalize(vendor, field, &s);
                prop_assert!(normal.as_deref() != Some(""), "{vendor:?} {field:?} {s:?}: empty normal form");
                let hashed = hash(vendor, field, &s);
                if is_sha256_hex(trimmed) {
                    prop_assert_eq!(hashed.clone(), Some(trimmed.to_ascii_lowercase()));
                } else {
                    prop_assert_eq!(hashed.clone(), normal.as_deref().map(sha256_hex), "{:?} {:?} {:?}", vendor, field, s);
                }
                if let Some(h) = &hashed {
                    prop_assert!(is_lower_hex_digest(h), "{vendor:?} {field:?} {s:?}: {h:?}");
                    prop_assert!(*h != sha256_hex("") || trimmed == sha256_hex(""), "{vendor:?} {field:?} {s:?}: the digest of \"\"");
                }
                let prepared = prepare(vendor, field, &s);
                prop_assert_eq!(prepared, if vendor.hashes(field) { hashed } else { normal }, "{:?} {:?} {:?}", vendor, field, s);
            }
        }
    }

    /// The normal forms that are ASCII by construction are fixed points for every input:
    /// normalising an already-normalised value changes nothing (so a tag that normalises twice,
    /// or a site that normalised before sending, gets the same digest).
    #[test]
    fn ascii_normal_forms_are_idempotent(s in text()) {
        for vendor in VENDORS {
            for field in [Field::Phone, Field::Country, Field::DateOfBirth, Field::Gender] {
                if let Some(n) = normalize(vendor, field, &s) {
                    prop_assert!(n.is_ascii(), "{vendor:?} {field:?} {s:?}: {n:?}");
                    prop_assert_eq!(normalize(vendor, field, &n), Some(n.clone()), "{:?} {:?} {:?}", vendor, field, s);
                }
            }
            // TikTok's external id is only trimmed and NFC-composed.
            if let Some(n) = normalize(Vendor::TikTok, Field::ExternalId, &s) {
                prop_assert_eq!(normalize(Vendor::TikTok, Field::ExternalId, &n), Some(n.clone()));
            }
        }
    }

    /// Every field is idempotent on realistic text: ASCII, digits, separators and common
    /// multi-byte letters and digits (`é`, `ß`, `١`, `𝟘`, `정`, emoji...).
    #[test]
    fn normal_forms_are_idempotent_on_realistic_text(s in prop_oneof![mixed(), date_like(), "[ -~]*"]) {
        for vendor in VENDORS {
            for field in FIELDS {
                if let Some(n) = normalize(vendor, field, &s) {
                    prop_assert_eq!(normalize(vendor, field, &n), Some(n.clone()), "{:?} {:?} {:?}", vendor, field, s);
                }
            }
        }
    }

    /// Dates of birth are `YYYYMMDD` in ASCII digits within the documented ranges, or dropped.
    #[test]
    fn dates_of_birth_are_eight_ascii_digits_or_nothing(s in prop_oneof![date_like(), text()]) {
        for vendor in VENDORS {
            if let Some(d) = normalize(vendor, Field::DateOfBirth, &s) {
                prop_assert!(d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()), "{s:?}: {d:?}");
                let (y, m, day): (u32, u32, u32) = (d[..4].parse().unwrap_or(0), d[4..6].parse().unwrap_or(0), d[6..].parse().unwrap_or(0));
                prop_assert!((1900..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&day), "{s:?}: {d:?}");
            }
        }
    }

    /// Phones, with and without a default calling code: no panic; digits only (after the `+`
    /// Google and TikTok want); `hash_phone` is the digest of `normalize_phone` or the input
    /// digest passed through; without a code `normalize_phone` is `normalize(.., Phone, ..)`.
    #[test]
    fn phones_never_panic_and_are_digits(s in text(), code in prop::option::of(prop_oneof![text(), "[0-9]{1,3}", "\\+?[0-9]{1,3}"])) {
        let trimmed = s.trim();
        for vendor in VENDORS {
            let normal = normalize_phone(vendor, &s, code.as_deref());
            if let Some(p) = &normal {
                let digits = match vendor {
                    Vendor::Meta => p.as_str(),
                    Vendor::Google | Vendor::TikTok => {
                        prop_assert!(p.starts_with('+'), "{vendor:?} {s:?}: {p:?}");
                        &p[1..]
                    }
                };
                prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "{vendor:?} {s:?} {code:?}: {p:?}");
            }
            let hashed = hash_phone(vendor, &s, code.as_deref());
            if is_sha256_hex(trimmed) {
                prop_assert_eq!(hashed, Some(trimmed.to_ascii_lowercase()));
            } else {
                prop_assert_eq!(hashed, normal.as_deref().map(sha256_hex));
            }
            prop_assert_eq!(normalize_phone(vendor, &s, None), normalize(vendor, Field::Phone, &s));
        }
    }

    /// The site's own `event_id` wins when it is a non-empty string or a number; otherwise the
    /// id is the fingerprint's first 32 characters (cut by character, never mid-character).
    #[test]
    fn event_id_never_panics(id in prop::option::of(json()), extra in prop::collection::vec((text(), json()), 0..3), fingerprint in text()) {
        let mut event: Map<String, Value> = extra.into_iter().collect();
        event.remove("event_id");
        if let Some(id) = &id {
            event.insert("event_id".into(), id.clone());
        }
        let got = event_id(&event, &fingerprint);
        match id {
            Some(Value::String(s)) if !s.is_empty() => prop_assert_eq!(got, s),
            Some(Value::Number(n)) => prop_assert_eq!(got, n.to_string()),
            _ => {
                prop_assert!(fingerprint.starts_with(&got));
                prop_assert_eq!(got.chars().count(), fingerprint.chars().count().min(32));
            }
        }
    }

    /// `from_event` over events with arbitrary values in the event-model slots: no panic; each
    /// field at most once, in `EVENT_MODEL_PATHS` order; a field the vendor hashes comes out as
    /// a lowercase digest, one it takes in the clear as non-empty text.
    #[test]
    fn from_event_never_panics(event in event(), code in prop::option::of(prop_oneof![text(), "[0-9]{1,3}"])) {
        for vendor in VENDORS {
            let got = from_event(vendor, &event, code.as_deref());
            let order: Vec<usize> = got
                .iter()
                .map(|(f, _)| EVENT_MODEL_PATHS.iter().position(|(p, _, _)| p == f).unwrap_or(usize::MAX))
                .collect();
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{vendor:?}: fields out of order or repeated: {got:?}");
            for (field, value) in &got {
                if vendor.hashes(*field) {
                    prop_assert!(is_lower_hex_digest(value), "{vendor:?} {field:?}: {value:?}");
                } else {
                    prop_assert!(!value.is_empty());
                }
            }
        }
    }

    /// Arbitrary JSON objects, not shaped like the event model at all.
    #[test]
    fn from_event_on_arbitrary_json_never_panics(value in json(), code in prop::option::of(text())) {
        let event = match value {
            Value::Object(map) => map,
            other => [("user_data".to_string(), other)].into_iter().collect(),
        };
        for vendor in VENDORS {
            let _ = from_event(vendor, &event, code.as_deref());
            let _ = event_id(&event, "");
        }
    }
}

/// The inputs that panicked before the fix (byte-indexed slicing of an eight-byte date).
#[test]
fn eight_byte_dates_with_multibyte_characters_do_not_panic() {
    for input in ["199é216", "19970é1", "19𝟘21", "𝟘𝟘", "1997ß16", "٢٠٠٠0101"] {
        for vendor in VENDORS {
            assert_eq!(normalize(vendor, Field::DateOfBirth, input), None, "{input:?}");
            assert_eq!(prepare(vendor, Field::DateOfBirth, input), None, "{input:?}");
        }
    }
    assert_eq!(normalize(Vendor::Meta, Field::DateOfBirth, "19970216").as_deref(), Some("19970216"));
}
