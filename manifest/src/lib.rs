//! What a Sluice template declares, what an operator grants, and the one set of rules that
//! compares them.
//!
//! Both sides of the sandbox need the same rules: the host enforces them on every host call, and
//! `sluice-sdk`'s mock host enforces them in template authors' unit tests. Keeping the rules in
//! this small, dependency-light crate means a test that passes against the mock host fails the
//! same way the real host would.
//!
//! * [`Manifest`] is the `const` form a template author writes in Rust; the SDK embeds its JSON
//!   encoding in the `.wasm` as the [`MANIFEST_SECTION`] custom section, so the host (and
//!   `sluice inspect`) can read it without running the template.
//! * [`Declaration`] is that JSON read back; [`PermissionSet`] is the permission part, and is
//!   also the shape of an operator's grant in the container config.
//! * [`EffectiveGrant`] is declared ∩ granted; its `check_*` methods answer every host call with
//!   `Ok` or a [`Denial`] that says what was refused and how to fix it.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod declaration;
mod delivery;
mod grant;
mod id_cookie;
mod manifest;
mod purpose;
mod url_pattern;

pub use delivery::{Batch, BatchFailure, Delivery, DeliverySpec, ItemResult, event_id, fingerprint};
pub use declaration::{Declaration, DeclarationError, ParameterSpec, PermissionSet};
pub use id_cookie::{IdCookie, IdCookieSpec};
pub use grant::{CREDENTIAL_HEADERS, Denial, DenialCause, EffectiveGrant, KeyPattern, MAX_NAME_SHOWN, Scope, shorten};
pub use manifest::{JsonBuf, Kind, MANIFEST_SECTION, Manifest, ParamDefault, Parameter, Permissions};
pub use purpose::{ConsentStatus, Purpose};
pub use url_pattern::{UrlPattern, UrlPatternError};
pub use url::Url;

/// The percent-decoded value of the first query parameter `name` in `url`; `None` when absent
/// or empty. The fragment is ignored. Templates read it (`sluice_sdk::data::url_param`), and the
/// host reads click ids for declared id cookies with it.
pub fn url_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).filter(|v| !v.is_empty())
}

/// The value at a dotted key path in an event (`items.0.item_id`): parts are object keys or,
/// on arrays, indices. This is sGTM's `getEventData` path rule, shared by host and mock host.
pub fn event_value<'a>(event: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.is_empty() {
        return None;
    }
    path.split('.').try_fold(event, |value, part| match value {
        serde_json::Value::Object(map) => map.get(part),
        serde_json::Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}
