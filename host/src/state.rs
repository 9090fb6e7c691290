//! What one template invocation holds: the per-`Store` data every host call reads.
//!
//! A fresh [`Invocation`] (and `Store`, and instance) is made for every client run and every
//! tag run, so nothing a template does survives into the next request except through the
//! host-mediated storage capability.

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use sluice_manifest::Denial;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use sluice_policy::consent::ConsentState;
pub(crate) use crate::request::{RequestData, ResponseDraft};
use crate::template::Template;

/// An event as the tags matching it see it. Serialised and fingerprinted at most once, on first
/// request, however many tags read it: tags of one event share this through an `Arc`.
#[derive(Debug)]
pub struct SharedEvent {
    value: Value,
    json: OnceLock<String>,
    fingerprint: OnceLock<String>,
}

impl SharedEvent {
    /// Wraps an event (a JSON object).
    pub fn new(value: Value) -> Self {
        SharedEvent { value, json: OnceLock::new(), fingerprint: OnceLock::new() }
    }

    /// The event.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The event as JSON text. serde_json's map keeps keys sorted, so the text is canonical.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| crate::json_text(&self.value))
    }

    /// [`sluice_manifest::fingerprint`] of [`Self::json`].
    pub fn fingerprint(&self) -> &str {
        self.fingerprint.get_or_init(|| sluice_manifest::fingerprint(self.json()))
    }
}

/// The per-invocation store data.
pub struct Invocation {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: crate::limits::MemoryLimiter,
    pub(crate) cpu: crate::limits::CpuClock,
    pub(crate) template: Arc<Template>,
    pub(crate) services: Arc<crate::services::Services>,
    pub(crate) request: Arc<RequestData>,
    pub(crate) response: Arc<Mutex<ResponseDraft>>,
    pub(crate) event: Option<Arc<SharedEvent>>,
    pub(crate) consent: ConsentState,
    /// `ad_user_data` is not granted: request reads hide the IP and click ids too.
    pub(crate) personal_data_removed: bool,
    /// Refused host calls, as logged and traced (the template's secrets masked).
    pub(crate) denials: Denials,
    /// Which of the template's exports is running.
    pub(crate) phase: Phase,
    /// The template's outbox, when it has one (a declared batch, or an outbound grant).
    pub(crate) outbox: Option<Arc<crate::delivery::TagOutbox>>,
    /// Items this invocation queued.
    pub(crate) queued: usize,
}

/// Which export an invocation runs: inside the visitor's request (a client's `run`, a tag's
/// `fire`) or outside any (a tag's `deliver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `run` or `fire`.
    InRequest,
    /// `deliver` of this many items: request, response, event and consent calls are refused.
    Deliver(usize),
}

impl Phase {
    /// The export running: `run` (a client), `fire` or `deliver` (a tag).
    pub(crate) fn export(self, kind: sluice_manifest::Kind) -> &'static str {
        match (self, kind) {
            (Phase::Deliver(_), _) => "deliver",
            (Phase::InRequest, sluice_manifest::Kind::Client) => "run",
            (Phase::InRequest, _) => "fire",
        }
    }

    /// How many times `[limits] cpu_ms` the invocation may use: one per started 100 items for
    /// `deliver` (a batch of 1,000 events does 1,000 events' work, outside any request), else 1.
    pub(crate) fn cpu_scale(self) -> u32 {
        match self {
            Phase::InRequest => 1,
            Phase::Deliver(items) => u32::try_from(items.div_ceil(100)).unwrap_or(u32::MAX).max(1),
        }
    }
}

/// The denials one invocation keeps for its trace: the first [`Denials::KEPT`], then a count.
/// Each is bounded ([`sluice_manifest::MAX_NAME_SHOWN`]), and so is their number: a template
/// looping over refused calls costs CPU (its budget) but no memory that outlives it.
#[derive(Debug, Default)]
pub(crate) struct Denials {
    kept: Vec<String>,
    more: usize,
}

impl Denials {
    /// How many are kept word for word.
    pub(crate) const KEPT: usize = 32;

    fn keep(&mut self, message: &str) {
        if self.kept.len() < Self::KEPT {
            self.kept.push(message.to_string());
        } else {
            self.more += 1;
        }
    }

    /// For the trace: the kept ones, and a line counting the rest.
    pub(crate) fn into_trace(self) -> Vec<String> {
        let mut out = self.kept;
        if self.more > 0 {
            out.push(format!("… and {} more denials in this invocation (the first {} are listed)", self.more, Self::KEPT));
        }
        out
    }
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_io::IoView for Invocation {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl Invocation {
    /// Runs a grant check; a denial is logged, counted, kept for the trace and turned into the
    /// WIT `permission-denied` error.
    pub(crate) fn allow(
        &mut self,
        check: impl FnOnce(&sluice_manifest::EffectiveGrant) -> Result<(), Denial>,
    ) -> Result<(), crate::bindings::types::Error> {
        check(&self.template.grant).map_err(|denial| self.deny(denial))
    }

    /// Logs, counts and keeps a denial; returns the WIT error for it.
    pub(crate) fn deny(&mut self, denial: Denial) -> crate::bindings::types::Error {
        // A refused URL can carry secrets (a token in the query, a webhook path).
        let message = crate::output::mask(&denial.to_string());
        if self.services.denials.first_denial(&self.template.name, &message) {
            tracing::warn!(request_id = %self.request.id, template = %self.template.name,
                "permission denied: {message} (logged once per template; later ones at debug level, all counted and traced)");
        } else {
            tracing::debug!(request_id = %self.request.id, template = %self.template.name, "permission denied: {message}");
        }
        self.services.denials.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.services.telemetry.metrics.denial(&self.template.name);
        self.denials.keep(&message);
        let (permission, name) = denial.scope.permission();
        crate::bindings::types::Error::PermissionDenied(crate::bindings::types::Denial {
            permission: permission.into(),
            name: crate::output::mask(&name),
            message,
        })
    }

    /// The WIT error for a request the `[outbound]` rules refused (not the grant): permission
    /// `network`, the URL's origin, the rule's explanation.
    pub(crate) fn network_refusal(url: &str, refusal: &sluice_policy::egress::EgressRefusal) -> crate::bindings::types::Error {
        let Ok(url) = url::Url::parse(url) else { return crate::bindings::types::Error::Invalid(crate::output::mask(&refusal.to_string())) };
        let (permission, name, message) = refusal.denial_parts(&url);
        crate::bindings::types::Error::PermissionDenied(crate::bindings::types::Denial {
            permission: permission.into(),
            name: crate::output::mask(&name),
            message: crate::output::mask(&message),
        })
    }

    /// Refuses request, response, event and consent calls while delivering a batch: there is
    /// no visitor then, and what the vendor needs from the request belongs in the item.
    pub(crate) fn in_request(&self, what: &str) -> Result<(), crate::bindings::types::Error> {
        match self.phase {
            Phase::InRequest => Ok(()),
            Phase::Deliver(_) => Err(crate::bindings::types::Error::Invalid(sluice_policy::delivery::not_in_deliver(what))),
        }
    }

    /// The shared response, tolerating a poisoned lock (writes are single assignments).
    pub(crate) fn response(&self) -> std::sync::MutexGuard<'_, ResponseDraft> {
        self.response.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod shared_event_tests {
    use super::SharedEvent;
    use serde_json::json;

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_canonical_json() {
        let a = SharedEvent::new(json!({"event_name": "purchase", "value": 1, "client_id": "1.2"}));
        let b = SharedEvent::new(json!({"client_id": "1.2", "value": 1, "event_name": "purchase"}));
        let c = SharedEvent::new(json!({"event_name": "purchase", "value": 2, "client_id": "1.2"}));
        assert_eq!(a.json(), r#"{"client_id":"1.2","event_name":"purchase","value":1}"#);
        // As `printf '%s' '<the JSON above>' | sha256sum` gives it.
        assert_eq!(a.fingerprint(), "63ad14aaf98f2c672e9429f4438453dec160fe796c7085c54ed66cf75a69a440");
        assert_eq!(a.fingerprint(), b.fingerprint(), "key order does not matter");
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
