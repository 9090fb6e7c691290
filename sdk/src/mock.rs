//! A native mock host for template authors' unit tests.
//!
//! [`MockHost`] runs a template's Rust code directly (no wasm), answering its host calls from
//! the request, event, consent, parameters and outbound stubs the test set up, and recording what
//! the template did: the response, the outbound requests, log lines and permission denials.
//!
//! Permissions are checked with `sluice-manifest`'s [`EffectiveGrant`], the same code the real
//! host uses, against the template's own [`crate::Manifest`] and the grant the test gives (by
//! default: everything the template declares, as an operator granting the full request would).
//!
//! ```
//! use sluice_sdk::mock::MockHost;
//! # use sluice_sdk::*;
//! # struct Hello;
//! # impl Tag for Hello {
//! #     const MANIFEST: Manifest = Manifest { kind: Kind::Tag, name: "hello", version: "0",
//! #         description: "", permissions: Permissions { outbound: &["https://example.com/"], ..Permissions::NONE },
//! #         consent: &[], parameters: &[] };
//! #     fn fire(host: &TagHost) -> Result<(), Error> {
//! #         host.http().send(&HttpRequest::post("https://example.com/hit"))?.error_for_status()?; Ok(())
//! #     }
//! # }
//! let mut mock = MockHost::new().stub("https://example.com/", HttpResponse::new(204, ""));
//! mock.run_tag::<Hello>().expect("fires");
//! assert_eq!(mock.sent()[0].url, "https://example.com/hit");
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use sluice_manifest::{Declaration, Denial, EffectiveGrant, Kind, Manifest, PermissionSet, Url};

use crate::{Claim, Client, ConsentStatus, Cookie, Error, HttpRequest, HttpResponse, Level, Purpose, Tag};

/// The response a client (or tag) set, as recorded by the mock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedResponse {
    /// Status set with `set_status`.
    pub status: Option<u16>,
    /// Headers set with `set_header` (lower-cased names, last value wins).
    pub headers: Vec<(String, String)>,
    /// Body set with `set_body`.
    pub body: Option<Vec<u8>>,
    /// Cookies set with `set_cookie`.
    pub cookies: Vec<Cookie>,
}

impl RecordedResponse {
    /// The value of a header the template set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The cookie the template set with this name.
    pub fn cookie(&self, name: &str) -> Option<&Cookie> {
        self.cookies.iter().find(|c| c.name == name)
    }
}

#[derive(Default)]
struct State {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
    body: Vec<u8>,
    remote_address: Option<String>,
    event: Value,
    consent: HashMap<Purpose, ConsentStatus>,
    params: Map<String, Value>,
    grant: Option<PermissionSet>,
    stubs: Vec<(String, Result<HttpResponse, Error>)>,
    storage: HashMap<String, Vec<u8>>,

    effective: Option<EffectiveGrant>,
    response: RecordedResponse,
    sent: Vec<HttpRequest>,
    logs: Vec<(Level, String)>,
    denials: Vec<Denial>,
}

thread_local! {
    static CURRENT: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// A scripted host for unit tests. Build it, run a template, inspect what it did.
pub struct MockHost {
    state: State,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl MockHost {
    /// A `GET /` request with no headers, an empty event, no consent, no parameters, and a grant
    /// of everything the template declares.
    pub fn new() -> Self {
        MockHost { state: State { method: "GET".into(), path: "/".into(), event: Value::Object(Map::new()), ..State::default() } }
    }

    /// Sets the request method.
    pub fn method(mut self, method: &str) -> Self {
        self.state.method = method.to_ascii_uppercase();
        self
    }

    /// Sets the request path; a `?query` suffix sets the query string too.
    pub fn path(mut self, path: &str) -> Self {
        match path.split_once('?') {
            Some((p, q)) => {
                self.state.path = p.into();
                self.state.query = q.into();
            }
            None => self.state.path = path.into(),
        }
        self
    }

    /// Sets the raw query string (no leading `?`).
    pub fn query(mut self, query: &str) -> Self {
        self.state.query = query.into();
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.state.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Adds a request cookie.
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        self.state.cookies.push((name.into(), value.into()));
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.state.body = body.into();
        self
    }

    /// Sets the visitor's IP address.
    pub fn remote_address(mut self, ip: &str) -> Self {
        self.state.remote_address = Some(ip.into());
        self
    }

    /// Sets the event a tag runs for (a JSON object).
    pub fn event(mut self, event: Value) -> Self {
        self.state.event = event;
        self
    }

    /// Sets one purpose's consent state (others stay `Unset`).
    pub fn consent(mut self, purpose: Purpose, status: ConsentStatus) -> Self {
        self.state.consent.insert(purpose, status);
        self
    }

    /// Sets a parameter, as the operator would in the container config.
    pub fn param(mut self, name: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.state.params.insert(name.into(), value);
        self
    }

    /// Replaces the default grant (everything declared) with the operator grant given.
    pub fn grant(mut self, grant: PermissionSet) -> Self {
        self.state.grant = Some(grant);
        self
    }

    /// Answers outbound requests whose URL starts with `url_prefix` with `response`. The most
    /// recently added matching stub wins (so a test can override a shared setup); a request with
    /// no stub fails with [`Error::Failed`].
    pub fn stub(mut self, url_prefix: &str, response: HttpResponse) -> Self {
        self.state.stubs.push((url_prefix.into(), Ok(response)));
        self
    }

    /// Makes outbound requests whose URL starts with `url_prefix` fail with `error` (a vendor
    /// outage, a timeout).
    pub fn stub_error(mut self, url_prefix: &str, error: Error) -> Self {
        self.state.stubs.push((url_prefix.into(), Err(error)));
        self
    }

    /// Pre-fills template storage.
    pub fn stored(mut self, key: &str, value: &[u8]) -> Self {
        self.state.storage.insert(key.into(), value.to_vec());
        self
    }

    /// Runs a client template against the request.
    ///
    /// # Panics
    /// If `C`'s manifest is not a valid client manifest, or the grant does not parse: those are
    /// mistakes in the test or the template, not outcomes to assert on.
    pub fn run_client<C: Client>(&mut self) -> Result<Claim, Error> {
        self.prepare(&C::MANIFEST, Kind::Client);
        self.with_current(|| C::run(&crate::Host::new()))
    }

    /// Runs a tag template against the event.
    ///
    /// # Panics
    /// As [`MockHost::run_client`].
    pub fn run_tag<T: Tag>(&mut self) -> Result<(), Error> {
        self.prepare(&T::MANIFEST, Kind::Tag);
        self.with_current(|| T::fire(&crate::TagHost::new()))
    }

    fn prepare(&mut self, manifest: &Manifest, kind: Kind) {
        let decl = Declaration::from_json(&manifest.to_json())
            .unwrap_or_else(|e| panic!("template manifest does not decode: {e}"));
        assert_eq!(decl.kind, kind, "template {:?} is a {}, not a {kind}", decl.name, decl.kind);
        let granted = self.state.grant.clone().unwrap_or_else(|| decl.permissions.clone());
        let effective = EffectiveGrant::new(kind, &decl.permissions, &granted)
            .unwrap_or_else(|e| panic!("grant is not valid: {e}"));
        self.state.effective = Some(effective);
    }

    fn with_current<R>(&mut self, f: impl FnOnce() -> R) -> R {
        CURRENT.with(|c| *c.borrow_mut() = Some(std::mem::take(&mut self.state)));
        // Put the state back even if the template panics, so the test can still inspect it.
        struct Restore<'a>(&'a mut State);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(s) = CURRENT.with(|c| c.borrow_mut().take()) {
                    *self.0 = s;
                }
            }
        }
        let _restore = Restore(&mut self.state);
        f()
    }

    /// The response the template set.
    pub fn response(&self) -> &RecordedResponse {
        &self.state.response
    }

    /// The outbound requests the template sent (allowed ones only), in order.
    pub fn sent(&self) -> &[HttpRequest] {
        &self.state.sent
    }

    /// Log lines the template wrote.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.state.logs
    }

    /// Host calls that were refused, in order.
    pub fn denials(&self) -> &[Denial] {
        &self.state.denials
    }

    /// Template storage after the run.
    pub fn storage(&self, key: &str) -> Option<&[u8]> {
        self.state.storage.get(key).map(Vec::as_slice)
    }
}

/// The host-call implementations the SDK's `sys` seam routes to off wasm.
pub(crate) mod sys {
    use super::*;

    fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        CURRENT.with(|c| {
            let mut slot = c.borrow_mut();
            let state = slot
                .as_mut()
                .expect("a sluice-sdk host call was made outside MockHost::run_client/run_tag");
            f(state)
        })
    }

    /// Runs `check` against the effective grant; a denial is recorded and returned as an error.
    fn allowed(state: &mut State, check: impl FnOnce(&EffectiveGrant) -> Result<(), Denial>) -> Result<(), Error> {
        let grant = state.effective.as_ref().expect("prepared before run");
        match check(grant) {
            Ok(()) => Ok(()),
            Err(denial) => {
                let msg = denial.to_string();
                state.denials.push(denial);
                Err(Error::PermissionDenied(msg))
            }
        }
    }

    pub(crate) fn method() -> String {
        with(|s| s.method.clone())
    }
    pub(crate) fn path() -> String {
        with(|s| s.path.clone())
    }
    pub(crate) fn query_string() -> Result<String, Error> {
        with(|s| allowed(s, |g| g.check_query()).map(|()| s.query.clone()))
    }
    pub(crate) fn query_param(name: &str) -> Result<Option<String>, Error> {
        with(|s| {
            allowed(s, |g| g.check_query())?;
            Ok(form_urlencoded::parse(s.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
        })
    }
    pub(crate) fn header(name: &str) -> Result<Option<String>, Error> {
        with(|s| {
            allowed(s, |g| g.check_request_header(name))?;
            let values: Vec<&str> =
                s.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
            Ok((!values.is_empty()).then(|| values.join(", ")))
        })
    }
    pub(crate) fn cookie(name: &str) -> Result<Vec<String>, Error> {
        with(|s| {
            allowed(s, |g| g.check_cookie(name))?;
            Ok(s.cookies.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect())
        })
    }
    pub(crate) fn body() -> Result<Vec<u8>, Error> {
        with(|s| allowed(s, |g| g.check_body()).map(|()| s.body.clone()))
    }
    pub(crate) fn remote_address() -> Result<Option<String>, Error> {
        with(|s| allowed(s, |g| g.check_remote_address()).map(|()| s.remote_address.clone()))
    }

    pub(crate) fn set_status(status: u16) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_response_status())?;
            s.response.status = Some(status);
            Ok(())
        })
    }
    pub(crate) fn set_header(name: &str, value: &str) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_response_header(name))?;
            if value.contains(['\r', '\n']) {
                return Err(Error::Invalid(format!("response header {name:?} value contains a line break")));
            }
            let name = name.to_ascii_lowercase();
            s.response.headers.retain(|(n, _)| *n != name);
            s.response.headers.push((name, value.into()));
            Ok(())
        })
    }
    pub(crate) fn set_body(body: &[u8]) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_response_body())?;
            s.response.body = Some(body.to_vec());
            Ok(())
        })
    }
    pub(crate) fn set_cookie(cookie: &Cookie) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_response_cookie(&cookie.name))?;
            s.response.cookies.push(cookie.clone());
            Ok(())
        })
    }

    pub(crate) fn event_get(path: &str) -> Result<Option<String>, Error> {
        with(|s| {
            allowed(s, |g| g.check_event_key(path))?;
            Ok(sluice_manifest::event_value(&s.event, path).map(Value::to_string))
        })
    }
    pub(crate) fn event_all() -> Result<String, Error> {
        with(|s| allowed(s, |g| g.check_all_event_data()).map(|()| s.event.to_string()))
    }
    /// As the host computes it: SHA-256 of the event's JSON (serde_json sorts the keys).
    pub(crate) fn event_fingerprint() -> Result<String, Error> {
        with(|s| allowed(s, |g| g.check_all_event_data()).map(|()| crate::identity::sha256_hex(&s.event.to_string())))
    }
    pub(crate) fn consent_status(purpose: Purpose) -> Result<ConsentStatus, Error> {
        with(|s| {
            allowed(s, |g| g.check_consent())?;
            Ok(s.consent.get(&purpose).copied().unwrap_or(ConsentStatus::Unset))
        })
    }

    pub(crate) fn http_send(request: &HttpRequest) -> Result<HttpResponse, Error> {
        with(|s| {
            let url = Url::parse(&request.url)
                .map_err(|e| Error::Invalid(format!("outbound URL {:?}: {e}", request.url)))?;
            allowed(s, |g| g.check_outbound(&url))?;
            s.sent.push(request.clone());
            match s.stubs.iter().rev().find(|(prefix, _)| request.url.starts_with(prefix.as_str())) {
                Some((_, answer)) => answer.clone(),
                None => Err(Error::Failed(format!(
                    "MockHost has no stub for {}: add .stub(\"{}\", HttpResponse::new(200, \"\"))",
                    request.url,
                    url.origin().ascii_serialization() + "/"
                ))),
            }
        })
    }

    pub(crate) fn storage_get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        with(|s| allowed(s, |g| g.check_storage()).map(|()| s.storage.get(key).cloned()))
    }
    pub(crate) fn storage_set(key: &str, value: &[u8], _ttl_ms: Option<u64>) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_storage())?;
            s.storage.insert(key.into(), value.to_vec());
            Ok(())
        })
    }
    pub(crate) fn storage_delete(key: &str) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_storage())?;
            s.storage.remove(key);
            Ok(())
        })
    }

    pub(crate) fn log(level: Level, message: &str) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_logging())?;
            s.logs.push((level, message.into()));
            Ok(())
        })
    }

    pub(crate) fn config_get(name: &str) -> Option<String> {
        with(|s| s.params.get(name).map(Value::to_string))
    }
}
