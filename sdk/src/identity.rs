//! Identity signals for ad platforms: normalise, then SHA-256 (lowercase hex), by each vendor's
//! documented rules. Any template can use it; the bundled vendor tags do.
//!
//! * [`prepare`] is what a tag usually wants: the value as the vendor expects it — hashed where
//!   the vendor wants a hash, normalised plain text where it does not (Google's city, region,
//!   postal code and country) — or `None` when nothing is left to send.
//! * Values that already are a SHA-256 hex digest pass through, lower-cased.
//! * Input is Unicode NFC-normalised first (Meta's `Valéry` example hashes the NFC form).
//! * An input that normalises to nothing is dropped, never hashed: the hash of `""` must never
//!   reach a vendor.
//!
//! Rules follow the vendors' documentation (`shared/reference/domain.md` §7.3 Meta, §8.1
//! TikTok, §8.2 Google), not their SDKs or GTM templates where those disagree (Meta's template
//! turns `+1 (650) 555-1212` into `1650 5551212`; the documentation says `16505551212`).

use unicode_normalization::UnicodeNormalization;

/// A customer-information field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Field {
    Email,
    Phone,
    FirstName,
    LastName,
    Street,
    City,
    State,
    Zip,
    Country,
    DateOfBirth,
    Gender,
    ExternalId,
}

/// Whose rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Meta Conversions API (`user_data`).
    Meta,
    /// TikTok Events API (`user`).
    TikTok,
    /// Google Ads enhanced conversions / GA4 user-provided data.
    Google,
}

impl Vendor {
    /// Whether the vendor wants this field hashed. Google takes city, state, postal code and
    /// country in the clear; Meta and TikTok want everything hashed.
    pub fn hashes(self, field: Field) -> bool {
        !(self == Vendor::Google && matches!(field, Field::City | Field::State | Field::Zip | Field::Country))
    }
}

/// SHA-256 of `input` as lowercase hex (the digest the host fingerprints events with,
/// [`sluice_manifest::fingerprint`]).
pub fn sha256_hex(input: &str) -> String {
    sluice_manifest::fingerprint(input)
}

/// Whether `s` is already a SHA-256 hex digest.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The value as the vendor expects it: hashed, or (for fields the vendor takes in the clear)
/// normalised; `None` when the input normalises to nothing.
pub fn prepare(vendor: Vendor, field: Field, raw: &str) -> Option<String> {
    if vendor.hashes(field) { hash(vendor, field, raw) } else { normalize(vendor, field, raw) }
}

/// Normalises and hashes; an existing digest passes through lower-cased.
pub fn hash(vendor: Vendor, field: Field, raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    if is_sha256_hex(trimmed) {
        return Some(trimmed.to_ascii_lowercase());
    }
    normalize(vendor, field, raw).map(|n| sha256_hex(&n))
}

/// The normalised form, before hashing; `None` when nothing is left.
pub fn normalize(vendor: Vendor, field: Field, raw: &str) -> Option<String> {
    let text: String = raw.trim().nfc().collect();
    let out = match field {
        Field::Email => email(vendor, &text)?,
        Field::Phone => phone(vendor, &text, None)?,
        Field::FirstName | Field::LastName => {
            text.to_lowercase().chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect::<String>().trim().to_string()
        }
        Field::Street => text.to_lowercase(),
        Field::City => letters_only(&text),
        Field::State => letters_only(&text),
        Field::Zip => zip(&text),
        Field::Country => country(&text)?,
        Field::DateOfBirth => date_of_birth(&text)?,
        Field::Gender => match text.to_lowercase().chars().next()? {
            c @ ('f' | 'm') => c.to_string(),
            _ => return None,
        },
        Field::ExternalId => match vendor {
            // TikTok's own template trims only: ids can be case-sensitive.
            Vendor::TikTok => text,
            _ => text.to_lowercase(),
        },
    };
    (!out.is_empty()).then_some(out)
}

/// A phone number with a default country calling code for numbers given without one
/// (`(650)555-1212` with `"1"` → `16505551212`). Numbers starting with `+` or `00` keep theirs.
pub fn normalize_phone(vendor: Vendor, raw: &str, calling_code: Option<&str>) -> Option<String> {
    let text: String = raw.trim().nfc().collect();
    phone(vendor, &text, calling_code).filter(|p| !p.is_empty())
}

/// Normalised and hashed phone (see [`normalize_phone`]).
pub fn hash_phone(vendor: Vendor, raw: &str, calling_code: Option<&str>) -> Option<String> {
    let trimmed = raw.trim();
    if is_sha256_hex(trimmed) {
        return Some(trimmed.to_ascii_lowercase());
    }
    normalize_phone(vendor, raw, calling_code).map(|p| sha256_hex(&p))
}

fn email(vendor: Vendor, text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let (local, domain) = lower.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || lower.contains(char::is_whitespace) {
        return None;
    }
    // Google: gmail addresses ignore dots in the local part.
    if vendor == Vendor::Google && (domain == "gmail.com" || domain == "googlemail.com") {
        return Some(format!("{}@{domain}", local.replace('.', "")));
    }
    Some(lower)
}

fn phone(vendor: Vendor, text: &str, calling_code: Option<&str>) -> Option<String> {
    let international = text.starts_with('+') || text.starts_with("00");
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let mut digits = digits.trim_start_matches('0').to_string();
    if digits.is_empty() {
        return None;
    }
    if !international && let Some(code) = calling_code {
        let code: String = code.chars().filter(char::is_ascii_digit).collect();
        digits = format!("{code}{digits}");
    }
    if digits.is_empty() {
        return None;
    }
    Some(match vendor {
        // Google and TikTok want E.164, with the `+`.
        Vendor::Google | Vendor::TikTok => format!("+{digits}"),
        Vendor::Meta => digits,
    })
}

fn letters_only(text: &str) -> String {
    text.to_lowercase().chars().filter(|c| c.is_alphabetic()).collect()
}

fn zip(text: &str) -> String {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase();
    // US ZIP+4 (`94035-1234`) keeps the first five digits; no dashes anywhere.
    compact.split('-').next().unwrap_or_default().to_string()
}

fn country(text: &str) -> Option<String> {
    use std::str::FromStr;
    let t = text.trim();
    if t.len() == 2 && t.chars().all(|c| c.is_ascii_alphabetic()) {
        return Some(t.to_ascii_lowercase());
    }
    let found = celes::Country::from_str(t)
        .or_else(|_| celes::Country::from_str(&t.replace(' ', "")))
        .or_else(|_| celes::Country::from_alpha3(t.to_ascii_uppercase()))
        .ok()?;
    Some(found.alpha2.to_ascii_lowercase())
}

/// `YYYYMMDD` from `YYYY-MM-DD`, `YYYYMMDD`, `M/D/YYYY` (US) or `D.M.YYYY`.
///
/// Visitor text: never sliced by byte index without `get` (`"199é216"` is eight bytes too, and
/// `[..4]` would cut `é` in half and panic).
fn date_of_birth(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split(['-', '/', '.', ' ']).filter(|p| !p.is_empty()).collect();
    let (y, m, d) = match parts.as_slice() {
        [one] if one.len() == 8 => (one.get(..4)?, one.get(4..6)?, one.get(6..)?),
        [y, m, d] if y.len() == 4 => (*y, *m, *d),
        [m, d, y] if y.len() == 4 && text.contains('/') => (*y, *m, *d),
        [d, m, y] if y.len() == 4 => (*y, *m, *d),
        _ => return None,
    };
    let (y, m, d): (u32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    ((1900..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)).then(|| format!("{y:04}{m:02}{d:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Field::*;
    use Vendor::*;

    /// Meta's documented examples: input → normalised → SHA-256 (domain.md §7.3).
    #[test]
    fn meta_documented_examples() {
        let cases: &[(Field, &str, &str, &str)] = &[
            (Email, "John_Smith@gmail.com", "john_smith@gmail.com", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"),
            (FirstName, "Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
            (FirstName, "정", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"),
            (LastName, "Valéry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
            // The same name typed in decomposed form (NFD) must hash the same.
            (LastName, "Vale\u{301}ry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
            (DateOfBirth, "2/16/1997", "19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"),
            (Country, "United States", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
            (Gender, "f", "f", "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"),
            (Gender, "Male", "m", "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
            (Zip, "94035-1234", "94035", "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"),
            (State, "CA", "ca", "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"),
            (City, "Menlo Park", "menlopark", "0007a3d64c01e23d5075203c5977c14e4f7e01a3fc570686fcc50b5e1dd42685"),
        ];
        for (field, input, normalised, digest) in cases {
            assert_eq!(normalize(Meta, *field, input).as_deref(), Some(*normalised), "{field:?} {input}");
            assert_eq!(hash(Meta, *field, input).as_deref(), Some(*digest), "{field:?} {input}");
        }
    }

    #[test]
    fn meta_phone_follows_the_documentation_not_the_gtm_template() {
        let digest = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176";
        assert_eq!(normalize_phone(Meta, "(650)555-1212", Some("1")).as_deref(), Some("16505551212"));
        assert_eq!(hash_phone(Meta, "(650)555-1212", Some("1")).as_deref(), Some(digest));
        assert_eq!(hash(Meta, Phone, "+1 (650) 555-1212").as_deref(), Some(digest), "not `1650 5551212`");
        assert_eq!(hash(Meta, Phone, "+1 (650) 555-1212").as_deref(), hash_phone(Meta, "+1 650 555 1212", Some("44")).as_deref(), "+ keeps its own code");
        // The numbers in Meta's own request example (capi_01).
        assert!(hash(Meta, Phone, "12345678901").is_some_and(|h| h.starts_with("254aa248") && h.ends_with("74c4")));
        assert!(hash(Meta, Phone, "14251234567").is_some_and(|h| h.starts_with("6f4fcb9d") && h.ends_with("9ad6")));
        assert_eq!(normalize(Meta, Phone, "0044 7700 900123").as_deref(), Some("447700900123"), "leading zeros go");
    }

    #[test]
    fn empty_after_normalisation_is_dropped_never_hashed() {
        assert_eq!(hash_phone(Meta, "n/a", Some("1")), None, "a calling code alone is not a number");
        for (field, input) in [(Phone, "test"), (Email, "   "), (FirstName, "!!!"), (City, "123"), (Gender, "x"), (Country, "Atlantis"), (DateOfBirth, "13/45/1997"), (Email, "not-an-email")] {
            assert_eq!(hash(Meta, field, input), None, "{field:?} {input:?}");
        }
        assert_ne!(hash(Meta, Email, "a@b.c").as_deref(), Some(sha256_hex("").as_str()));
    }

    #[test]
    fn existing_digests_pass_through_lower_cased() {
        let upper = "62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F";
        assert_eq!(hash(Meta, Email, upper).as_deref(), Some(upper.to_ascii_lowercase().as_str()));
        assert_eq!(hash(TikTok, Phone, &format!(" {upper} ")).as_deref(), Some(upper.to_ascii_lowercase().as_str()));
    }

    #[test]
    fn tiktok_and_google_rules() {
        assert_eq!(normalize(TikTok, Phone, "+1 (650) 555-1212").as_deref(), Some("+16505551212"));
        assert_eq!(normalize(TikTok, ExternalId, " User-42 ").as_deref(), Some("User-42"), "TikTok keeps the id's case");
        assert_eq!(normalize(Meta, ExternalId, " User-42 ").as_deref(), Some("user-42"));
        assert_eq!(normalize(Google, Email, "John.Smith@Gmail.com").as_deref(), Some("johnsmith@gmail.com"));
        assert_eq!(normalize(Google, Email, "john.smith@example.com").as_deref(), Some("john.smith@example.com"));
        assert_eq!(normalize(Google, Phone, "+44 7700 900123").as_deref(), Some("+447700900123"));
        assert_eq!(prepare(Google, City, "Menlo Park").as_deref(), Some("menlopark"), "Google takes the city in the clear");
        assert_eq!(prepare(Google, Country, "Germany").as_deref(), Some("de"));
        assert_eq!(prepare(Google, FirstName, "Mary").as_deref(), Some("6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"));
    }

    #[test]
    fn countries_and_dates_in_common_forms() {
        for (input, code) in [("United States", "us"), ("US", "us"), ("usa", "us"), ("United Kingdom", "gb"), ("Deutschland", "de"), ("DEU", "de"), ("france", "fr")] {
            let got = normalize(Meta, Country, input);
            if input == "Deutschland" {
                // Native-language names are not in the table; dropping is the safe outcome.
                assert!(got.is_none() || got.as_deref() == Some(code), "{input}: {got:?}");
            } else {
                assert_eq!(got.as_deref(), Some(code), "{input}");
            }
        }
        for (input, out) in [("1997-02-16", "19970216"), ("19970216", "19970216"), ("16.02.1997", "19970216")] {
            assert_eq!(normalize(Meta, DateOfBirth, input).as_deref(), Some(out), "{input}");
        }
    }

    /// Visitor text is never cut inside a character: eight bytes that are not eight ASCII digits
    /// (`é` across byte 4, `𝟘` across bytes 4 and 6) are dropped, not a panic.
    #[test]
    fn multibyte_dates_of_birth_are_dropped_not_a_panic() {
        for input in ["199é216", "19970é1", "19𝟘21", "١٩٩٧0216", "𝟘𝟘"] {
            assert_eq!(normalize(Meta, DateOfBirth, input), None, "{input:?}");
            assert_eq!(hash(TikTok, DateOfBirth, input), None, "{input:?}");
        }
    }
}

pub use sluice_manifest::event_id;

#[cfg(test)]
mod event_id_tests {
    use serde_json::json;

    #[test]
    fn the_mock_fingerprint_depends_on_content_not_key_order() {
        use crate::prelude::*;
        use crate::{Error, Kind, Manifest, Permissions, Tag, TagHost, mock::MockHost};
        /// Logs the event's fingerprint.
        struct Fingerprint;
        impl Tag for Fingerprint {
            const MANIFEST: Manifest = Manifest {
                kind: Kind::Tag,
                name: "fingerprint",
                version: "0",
                description: "",
                permissions: Permissions { event_data: &["*"], logging: true, ..Permissions::NONE },
                consent: &[],
                parameters: &[],
                delivery: crate::Delivery::IN_REQUEST,
            };
            fn fire(host: &TagHost) -> Result<(), Error> {
                host.log().info(&host.event().fingerprint()?);
                Ok(())
            }
        }
        let fingerprint = |event: serde_json::Value| {
            let mut mock = MockHost::new().event(event);
            mock.run_tag::<Fingerprint>().expect("granted");
            mock.logs()[0].1.clone()
        };
        let a = fingerprint(json!({"event_name": "purchase", "value": 1, "client_id": "1.2"}));
        let b = fingerprint(json!({"client_id": "1.2", "value": 1, "event_name": "purchase"}));
        let c = fingerprint(json!({"event_name": "purchase", "value": 2, "client_id": "1.2"}));
        assert_eq!(a, b, "same content, same fingerprint, whatever the key order");
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
    }
}

/// Where sGTM's common event model keeps each customer-information field: the plain value and
/// the already-hashed variant (`user_data.sha256_*`).
pub const EVENT_MODEL_PATHS: &[(Field, &str, &str)] = &[
    (Field::Email, "user_data.email_address", "user_data.sha256_email_address"),
    (Field::Phone, "user_data.phone_number", "user_data.sha256_phone_number"),
    (Field::FirstName, "user_data.address.first_name", "user_data.address.sha256_first_name"),
    (Field::LastName, "user_data.address.last_name", "user_data.address.sha256_last_name"),
    (Field::Street, "user_data.address.street", "user_data.address.sha256_street"),
    (Field::City, "user_data.address.city", "user_data.address.sha256_city"),
    (Field::State, "user_data.address.region", "user_data.address.sha256_region"),
    (Field::Zip, "user_data.address.postal_code", "user_data.address.sha256_postal_code"),
    (Field::Country, "user_data.address.country", "user_data.address.sha256_country"),
    (Field::ExternalId, "user_id", "user_data.sha256_external_id"),
];

/// Every customer-information field present in an event, prepared for `vendor` ([`prepare`]);
/// a pre-hashed value wins over the plain one. `calling_code` completes phone numbers given
/// without a country code.
pub fn from_event(
    vendor: Vendor,
    event: &serde_json::Map<String, serde_json::Value>,
    calling_code: Option<&str>,
) -> Vec<(Field, String)> {
    let text = |path: &str| crate::data::str_at(event, path);
    EVENT_MODEL_PATHS
        .iter()
        .filter_map(|(field, plain, prehashed)| {
            let value = text(prehashed).filter(|h| is_sha256_hex(h.trim())).map(|h| h.trim().to_ascii_lowercase()).or_else(|| {
                let raw = text(plain)?;
                match field {
                    Field::Phone if vendor.hashes(*field) => hash_phone(vendor, raw, calling_code),
                    Field::Phone => normalize_phone(vendor, raw, calling_code),
                    _ => prepare(vendor, *field, raw),
                }
            })?;
            Some((*field, value))
        })
        .collect()
}
