//! The `const` manifest a template author writes, and its compile-time JSON encoding.
//!
//! A template's declaration must travel inside its `.wasm` so that the host can read it before
//! running anything. The SDK's export macros place [`Manifest::encode`]'s bytes in a custom
//! section; encoding happens in `const` context, which is why this module hand-writes a tiny JSON
//! writer instead of using serde (serde cannot run at compile time). [`crate::Declaration`]
//! decodes the result with serde, and a round-trip test keeps the two in step.

use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;

/// Name of the custom section that carries a template's manifest (JSON, see [`Manifest`]).
pub const MANIFEST_SECTION: &str = "sluice-manifest";

/// Which role a template plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Claims incoming requests and turns them into events.
    Client,
    /// Delivers events.
    Tag,
}

impl Kind {
    /// `"client"` or `"tag"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Tag => "tag",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A template's self-description, written by its author as a `const`.
///
/// ```
/// use sluice_manifest::{Delivery, Kind, Manifest, Parameter, Permissions};
/// const MANIFEST: Manifest = Manifest {
///     kind: Kind::Tag,
///     name: "webhook",
///     version: "0.1.0",
///     description: "POSTs each event as JSON to a URL.",
///     permissions: Permissions { event_data: &["*"], outbound: &["*"], ..Permissions::NONE },
///     consent: &[],
///     parameters: &[Parameter::required("url", "Where to send events.")],
///     delivery: Delivery::IN_REQUEST,
/// };
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Manifest {
    /// Client or tag.
    pub kind: Kind,
    /// Short machine name, e.g. `ga4-client`.
    pub name: &'static str,
    /// The template's version (usually `env!("CARGO_PKG_VERSION")`).
    pub version: &'static str,
    /// One sentence for operators.
    pub description: &'static str,
    /// Everything the template may ever ask the host for. The operator's grant can only narrow it.
    pub permissions: Permissions,
    /// Consent purposes a tag needs before the host runs it (`"ad_storage"`, `"ad_user_data"`,
    /// `"analytics_storage"`...). The operator can override per tag. Empty: no personal data,
    /// always runs. Ignored for clients.
    pub consent: &'static [&'static str],
    /// The parameters the operator configures.
    pub parameters: &'static [Parameter],
    /// A tag's phases and its vendor's batch limits ([`Delivery::IN_REQUEST`] for a tag that
    /// sends from the visitor's request, and for clients).
    pub delivery: Delivery,
}

/// What a template may ask the host for (the `const` form of [`crate::PermissionSet`]).
///
/// Name lists accept `"*"` for "any". Start from [`Permissions::NONE`] and list only what the
/// template uses: the operator sees this list in `sluice inspect` and `sluice check`.
#[derive(Debug, Clone, Copy)]
pub struct Permissions {
    /// Request headers it reads, by name (case-insensitive). `"*"` covers every header but the
    /// credential ones ([`crate::CREDENTIAL_HEADERS`]: `cookie`, `authorization`,
    /// `proxy-authorization`), which must be named, here and in the operator's grant.
    pub request_headers: &'static [&'static str],
    /// Whether it reads the query string.
    pub query: bool,
    /// Request cookies it reads, by name.
    pub cookies: &'static [&'static str],
    /// Whether it reads the request body.
    pub body: bool,
    /// Whether it reads the visitor's IP address.
    pub remote_address: bool,
    /// Whether it reads the consent state.
    pub consent: bool,
    /// Event-data key patterns it reads (`"user_data"`, `"items.*"`, `"x-ga-*"`, `"*"`).
    pub event_data: &'static [&'static str],
    /// Response headers it sets, by name.
    pub response_headers: &'static [&'static str],
    /// Response cookies it sets, by name.
    pub response_cookies: &'static [&'static str],
    /// Outbound URL patterns, sGTM style: `https://graph.facebook.com/` (prefix),
    /// `https://*.tiktok.com/*` (subdomains, any path), or `*` (anything the operator grants).
    pub outbound: &'static [&'static str],
    /// Whether it uses per-template storage.
    pub storage: bool,
    /// Whether it writes log lines.
    pub logging: bool,
}

impl Permissions {
    /// Nothing at all; the base for `..Permissions::NONE`.
    pub const NONE: Permissions = Permissions {
        request_headers: &[],
        query: false,
        cookies: &[],
        body: false,
        remote_address: false,
        consent: false,
        event_data: &[],
        response_headers: &[],
        response_cookies: &[],
        outbound: &[],
        storage: false,
        logging: false,
    };
}

/// A parameter the operator sets in the container config.
#[derive(Debug, Clone, Copy)]
pub struct Parameter {
    /// Key in the container config's `params` table.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// The host refuses to start when a required parameter is missing.
    pub required: bool,
    /// A credential: the operator must supply it as `${ENV_VAR}` and it is never printed.
    pub secret: bool,
    /// The value when the operator sets none: declared once, here, and what
    /// `Config::str`/`Config::get` return and an outbound `{name}` pattern is filled with.
    pub default: Option<ParamDefault>,
}

/// A parameter's declared default, which also declares its type: the host refuses at load an
/// operator's value of another type, naming the parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamDefault {
    /// A string.
    Text(&'static str),
    /// `true` or `false`.
    Flag(bool),
    /// A whole number.
    Number(i64),
}

impl Parameter {
    /// A parameter the operator must set.
    pub const fn required(name: &'static str, description: &'static str) -> Self {
        Parameter { name, description, required: true, secret: false, default: None }
    }

    /// A parameter the operator may set.
    pub const fn optional(name: &'static str, description: &'static str) -> Self {
        Parameter { name, description, required: false, secret: false, default: None }
    }

    /// Marks the parameter as a credential (access token, API secret).
    pub const fn secret(self) -> Self {
        Parameter { secret: true, ..self }
    }

    /// An optional string parameter's value when the operator sets none.
    pub const fn default(self, value: &'static str) -> Self {
        Parameter { default: Some(ParamDefault::Text(value)), ..self }
    }

    /// An optional `true`/`false` parameter and its value when the operator sets none.
    pub const fn flag(self, value: bool) -> Self {
        Parameter { default: Some(ParamDefault::Flag(value)), ..self }
    }

    /// An optional whole-number parameter and its value when the operator sets none.
    pub const fn number(self, value: i64) -> Self {
        Parameter { default: Some(ParamDefault::Number(value)), ..self }
    }
}

/// A fixed-capacity byte buffer that a `const fn` can write JSON into.
///
/// Writing past the capacity only counts, so `encode::<0>()` measures the length and
/// `encode::<LEN>()` fills an exactly sized array.
#[derive(Debug, Clone, Copy)]
pub struct JsonBuf<const N: usize> {
    /// The encoded bytes (the first `len` are valid when `len <= N`).
    pub bytes: [u8; N],
    /// How many bytes the encoding needs.
    pub len: usize,
}

impl<const N: usize> JsonBuf<N> {
    const fn new() -> Self {
        JsonBuf { bytes: [0; N], len: 0 }
    }

    const fn byte(&mut self, b: u8) {
        if self.len < N {
            self.bytes[self.len] = b;
        }
        self.len += 1;
    }

    const fn raw(&mut self, s: &str) {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            self.byte(b[i]);
            i += 1;
        }
    }

    const fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.byte(b'"');
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'"' || c == b'\\' {
                self.byte(b'\\');
                self.byte(c);
            } else if c < 0x20 {
                self.raw("\\u00");
                self.byte(HEX[(c >> 4) as usize]);
                self.byte(HEX[(c & 0xf) as usize]);
            } else {
                self.byte(c);
            }
            i += 1;
        }
        self.byte(b'"');
    }

    const fn key(&mut self, key: &str, first: bool) {
        if !first {
            self.byte(b',');
        }
        self.string(key);
        self.byte(b':');
    }

    const fn boolean(&mut self, key: &str, value: bool) {
        self.key(key, false);
        self.raw(if value { "true" } else { "false" });
    }

    const fn integer(&mut self, n: i64) {
        if n < 0 {
            self.byte(b'-');
        }
        let mut digits = [0u8; 20];
        let (mut rest, mut len) = (n.unsigned_abs(), 0);
        loop {
            digits[len] = b'0' + (rest % 10) as u8;
            len += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        while len > 0 {
            len -= 1;
            self.byte(digits[len]);
        }
    }

    const fn strings(&mut self, key: &str, list: &[&str]) {
        self.key(key, false);
        self.byte(b'[');
        let mut i = 0;
        while i < list.len() {
            if i > 0 {
                self.byte(b',');
            }
            self.string(list[i]);
            i += 1;
        }
        self.byte(b']');
    }

    const fn number(&mut self, key: &str, n: u32) {
        self.key(key, false);
        self.number_value(n);
    }

    const fn number_value(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        while len > 0 {
            len -= 1;
            self.byte(digits[len]);
        }
    }

    /// The valid bytes (only meaningful when `len <= N`).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..if self.len < N { self.len } else { N }]
    }
}

impl Manifest {
    /// The JSON encoding of this manifest into a buffer of capacity `N`.
    pub const fn encode<const N: usize>(&self) -> JsonBuf<N> {
        let mut w = JsonBuf::<N>::new();
        w.byte(b'{');
        w.key("kind", true);
        w.string(self.kind.as_str());
        w.key("name", false);
        w.string(self.name);
        w.key("version", false);
        w.string(self.version);
        w.key("description", false);
        w.string(self.description);

        let p = &self.permissions;
        w.key("permissions", false);
        w.byte(b'{');
        w.key("query", true);
        w.raw(if p.query { "true" } else { "false" });
        w.strings("request_headers", p.request_headers);
        w.strings("cookies", p.cookies);
        w.boolean("body", p.body);
        w.boolean("remote_address", p.remote_address);
        w.boolean("consent", p.consent);
        w.strings("event_data", p.event_data);
        w.strings("response_headers", p.response_headers);
        w.strings("response_cookies", p.response_cookies);
        w.strings("outbound", p.outbound);
        w.boolean("storage", p.storage);
        w.boolean("logging", p.logging);
        w.byte(b'}');

        w.strings("consent", self.consent);

        w.key("parameters", false);
        w.byte(b'[');
        let mut i = 0;
        while i < self.parameters.len() {
            let param = &self.parameters[i];
            if i > 0 {
                w.byte(b',');
            }
            w.byte(b'{');
            w.key("name", true);
            w.string(param.name);
            w.key("description", false);
            w.string(param.description);
            w.boolean("required", param.required);
            w.boolean("secret", param.secret);
            match param.default {
                Some(ParamDefault::Text(text)) => {
                    w.key("default", false);
                    w.string(text);
                }
                Some(ParamDefault::Flag(flag)) => w.boolean("default", flag),
                Some(ParamDefault::Number(n)) => {
                    w.key("default", false);
                    w.integer(n);
                }
                None => {}
            }
            w.byte(b'}');
            i += 1;
        }
        w.byte(b']');

        w.key("delivery", false);
        w.byte(b'{');
        w.key("fire", true);
        w.raw(if self.delivery.fire { "true" } else { "false" });
        w.key("queue_event", false);
        w.raw(if self.delivery.queue_event { "true" } else { "false" });
        if let Some(b) = self.delivery.batch {
            w.key("batch", false);
            w.byte(b'{');
            w.key("max_items", true);
            w.number_value(b.max_items);
            w.number("max_bytes", b.max_bytes);
            w.number("max_wait_ms", b.max_wait_ms);
            w.number("max_age_secs", b.max_age_secs);
            w.byte(b'}');
        }
        if !self.delivery.id_cookies.is_empty() {
            w.key("id_cookies", false);
            w.byte(b'[');
            let mut i = 0;
            while i < self.delivery.id_cookies.len() {
                let c = &self.delivery.id_cookies[i];
                if i > 0 {
                    w.byte(b',');
                }
                w.byte(b'{');
                w.key("name", true);
                w.string(c.name);
                w.key("value", false);
                w.string(c.value);
                if let Some(param) = c.click_param {
                    w.key("click_param", false);
                    w.string(param);
                }
                w.number("max_age_days", c.max_age_days);
                if let Some(param) = c.enabled_by {
                    w.key("enabled_by", false);
                    w.string(param);
                }
                w.byte(b'}');
                i += 1;
            }
            w.byte(b']');
        }
        w.byte(b'}');
        w.byte(b'}');
        w
    }

    /// How many bytes [`Manifest::encode`] writes.
    pub const fn encoded_len(&self) -> usize {
        self.encode::<0>().len
    }

    /// The JSON encoding as a `Vec` (for native code such as the SDK's mock host).
    ///
    /// Manifests over 64 KiB come back truncated and then fail to decode; they are never
    /// silently accepted.
    pub fn to_json(&self) -> Vec<u8> {
        let buf = Box::new(self.encode::<65536>());
        buf.as_slice().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Declaration;

    const M: Manifest = Manifest {
        kind: Kind::Tag,
        name: "webhook",
        version: "1.2.3",
        description: "Sends \"events\"\n\\ somewhere",
        permissions: Permissions {
            request_headers: &["user-agent"],
            event_data: &["*"],
            cookies: &["_id", "_click"],
            response_cookies: &["_id", "_click"],
            outbound: &["https://example.com/"],
            logging: true,
            ..Permissions::NONE
        },
        consent: &["ad_storage", "ad_user_data"],
        parameters: &[
            Parameter::required("url", "Where"),
            Parameter::optional("token", "Bearer token").secret(),
            Parameter::optional("set_cookies", "Set the ids").flag(true),
        ],
        delivery: Delivery::batched(crate::Batch { max_items: 1000, max_bytes: 2_000_000, max_wait_ms: 250, max_age_secs: 604_800 })
            .with_fire()
            .with_id_cookies(&[
                crate::IdCookie::minted("_id", "id.{now_ms}.{random}", 90),
                crate::IdCookie::click_id("_click", "xclid", "c.{click_id}", 30).enabled_by("set_cookies"),
            ]),
    };

    // The same thing a template's custom section holds.
    const LEN: usize = M.encoded_len();
    static SECTION: [u8; LEN] = M.encode::<LEN>().bytes;

    #[test]
    fn const_encoding_decodes_to_the_same_declaration() {
        let d = Declaration::from_json(&SECTION).expect("decodes");
        assert_eq!(d.kind, Kind::Tag);
        assert_eq!(d.name, "webhook");
        assert_eq!(d.version, "1.2.3");
        assert_eq!(d.description, "Sends \"events\"\n\\ somewhere");
        assert_eq!(d.permissions.request_headers, vec!["user-agent"]);
        assert_eq!(d.permissions.outbound, vec!["https://example.com/"]);
        assert!(d.permissions.logging && !d.permissions.body && !d.permissions.query);
        assert_eq!(d.consent, vec!["ad_storage", "ad_user_data"]);
        assert_eq!(d.parameters.len(), 3);
        assert!(d.parameters[0].required && !d.parameters[0].secret);
        assert!(!d.parameters[1].required && d.parameters[1].secret);
        assert_eq!(d.delivery, crate::DeliverySpec::from(M.delivery));
        assert_eq!(d.delivery.id_cookies[1].click_param.as_deref(), Some("xclid"));
        assert_eq!(d.delivery.id_cookies[1].enabled_by.as_deref(), Some("set_cookies"));
        assert_eq!(M.to_json(), SECTION.to_vec());
    }
}
