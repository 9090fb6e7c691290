//! `[admin]`: the admin listener's settings and its token — the preview UI, `/metrics` and
//! reload, on an address of its own.
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:8081"          # never the public address (refused at load)
//! token = "${SLUICE_ADMIN_TOKEN}"    # at least 16 characters; masked in every output.
//!                                    # Unset: a random one, printed with the UI's URL at start
//!
//! [admin.preview]                    # see crate::preview
//! buffer = 200                       # requests kept for the UI
//! sample = 0.0                       # share of all requests recorded without a debug session
//! session_minutes = 60
//! ```
//!
//! Off unless the section exists. Every route but `/` (the UI's page, which holds no data)
//! and `/healthz` needs `Authorization: Bearer <token>`; a wrong or missing token is `401`,
//! compared in constant time. The UI reads the token from its URL's fragment
//! (`http://127.0.0.1:8081/#token=…`), which browsers never send to a server or write to a
//! log, and sends it as that header.
//!
//!
//! The listener itself and its routes are [`crate::server::serve_admin`].

use std::net::SocketAddr;

use serde::Deserialize;
use sluice_policy::params::Param;

use crate::preview::PreviewConfig;

/// Shortest admin token accepted.
const MIN_TOKEN: usize = 16;

/// `[admin]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    listen: SocketAddr,
    token: Option<toml::Value>,
    #[serde(default)]
    preview: PreviewConfig,
}

/// `[admin]`, validated.
#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    /// Its own address.
    pub listen: SocketAddr,
    token: String,
    /// No `token` was configured: this one was made at start (and survives reloads).
    generated: bool,
    /// Which requests the preview records, and how many it keeps.
    pub preview: PreviewConfig,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig").field("listen", &self.listen).field("token", &"(masked)").field("preview", &self.preview).finish()
    }
}

impl AdminConfig {
    /// Validates `[admin]` against the public address; `resolve` expands `${ENV_VAR}`.
    pub(crate) fn new(raw: RawAdmin, public: SocketAddr, resolve: &dyn Fn(toml::Value) -> Result<Param, String>) -> Result<Self, String> {
        if raw.listen.port() == public.port() && (raw.listen.ip() == public.ip() || raw.listen.ip().is_unspecified() || public.ip().is_unspecified()) {
            return Err(format!(
                "listen = \"{}\" overlaps the public address {public}: the admin listener must never be reachable there; give it another port (e.g. 127.0.0.1:8081)",
                raw.listen
            ));
        }
        let (text, generated) = match raw.token {
            Some(value) => {
                let token = resolve(value).map_err(|m| format!("token: {m}"))?;
                let Some(text) = token.value.as_str().map(str::to_string) else {
                    return Err("token must be a string: token = \"${SLUICE_ADMIN_TOKEN}\"".into());
                };
                (text, false)
            }
            None => (crate::preview::random_token()?, true),
        };
        if text.chars().count() < MIN_TOKEN {
            return Err(format!(
                "token must be at least {MIN_TOKEN} characters (generate one with `openssl rand -hex 16` and pass it as token = \"${{SLUICE_ADMIN_TOKEN}}\")"
            ));
        }
        crate::output::register_secrets([text.as_str()]);
        raw.preview.validate().map_err(|m| format!("preview: {m}"))?;
        Ok(AdminConfig { listen: raw.listen, token: text, generated, preview: raw.preview })
    }

    /// A reload keeps the token made at start when the config still names none: the UI open
    /// in a browser keeps working.
    pub(crate) fn keep_generated_token(&mut self, running: &AdminConfig) {
        if self.generated && running.generated {
            self.token = running.token.clone();
        }
    }

    /// Whether `header` (an `Authorization` value) carries the token. Constant time in the
    /// token's bytes, so timing does not tell how much of a guess was right.
    pub(crate) fn authorises(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
        let (a, b) = (given.trim().as_bytes(), self.token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Where the token comes from, for `sluice check`.
    pub fn token_source(&self) -> &'static str {
        if self.generated { "made at each start and printed with the UI's address" } else { "from the config" }
    }

    /// The UI's address with the token in its fragment, as the server prints it at start.
    pub fn ui_url(&self, bound: SocketAddr) -> String {
        format!("http://{bound}/#token={}", self.token)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, token: &str) -> Result<AdminConfig, String> {
        let raw = RawAdmin { listen: listen.parse().unwrap(), token: Some(toml::Value::String(token.into())), preview: PreviewConfig::default() };
        AdminConfig::new(raw, "0.0.0.0:8080".parse().unwrap(), &|v| Ok(Param { value: serde_json::to_value(v).unwrap(), secrets: Vec::new() }))
    }

    #[test]
    fn the_admin_listener_never_shares_the_public_address_and_needs_a_real_token() {
        let overlap = config("127.0.0.1:8080", "0123456789abcdef").unwrap_err();
        assert!(overlap.contains("overlaps the public address"), "{overlap}");
        assert!(config("127.0.0.1:8081", "short").unwrap_err().contains("at least 16"));
        let admin = config("127.0.0.1:8081", "0123456789abcdef").unwrap();
        assert!(admin.authorises(Some("Bearer 0123456789abcdef")));
        assert!(!admin.authorises(Some("Bearer 0123456789abcdeX")));
        assert!(!admin.authorises(Some("0123456789abcdef")), "the Bearer scheme is required");
        assert!(!admin.authorises(None));
        assert!(!format!("{admin:?}").contains("0123456789abcdef"), "Debug never shows the token");
    }
}
