//! What one template invocation holds: the per-`Store` data every host call reads.
//!
//! A fresh [`Invocation`] (and `Store`, and instance) is made for every client run and every
//! tag run, so nothing a template does survives into the next request except through the
//! host-mediated storage capability.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use sluice_manifest::Denial;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::consent::ConsentState;
use crate::template::Template;

/// The incoming HTTP request, as the host read it.
#[derive(Debug)]
pub struct RequestData {
    /// Request id used in logs and traces.
    pub id: String,
    /// Method, upper case.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Visitor IP.
    pub remote_addr: Option<IpAddr>,
}

/// The response being built by the claiming client (and tags' cookies and headers).
#[derive(Debug, Clone)]
pub struct ResponseDraft {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names, one value each).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// `Set-Cookie` values.
    pub cookies: Vec<String>,
    /// Already sent to the browser (respond-before-tags): later writes fail.
    pub sent: bool,
}

impl Default for ResponseDraft {
    fn default() -> Self {
        ResponseDraft { status: 200, headers: Vec::new(), body: Vec::new(), cookies: Vec::new(), sent: false }
    }
}

/// Guest CPU time: wall time since start minus time spent waiting in async host calls.
#[derive(Debug)]
pub struct CpuClock {
    started: Instant,
    waiting: Duration,
    limit: Duration,
}

impl CpuClock {
    /// A clock with this budget, starting now.
    pub fn new(limit: Duration) -> Self {
        CpuClock { started: Instant::now(), waiting: Duration::ZERO, limit }
    }

    /// Whether the guest has used up its budget.
    pub fn exhausted(&self) -> bool {
        self.started.elapsed().saturating_sub(self.waiting) > self.limit
    }

    /// Records time the guest spent blocked on the host (not its CPU time).
    pub fn add_wait(&mut self, d: Duration) {
        self.waiting += d;
    }
}

/// The per-invocation store data.
pub struct Invocation {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) cpu: CpuClock,
    pub(crate) template: Arc<Template>,
    pub(crate) services: Arc<crate::engine::Services>,
    pub(crate) request: Arc<RequestData>,
    pub(crate) response: Arc<Mutex<ResponseDraft>>,
    pub(crate) event: Option<Arc<Value>>,
    pub(crate) consent: ConsentState,
    pub(crate) denials: Vec<Denial>,
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
        let message = denial.to_string();
        tracing::warn!(request_id = %self.request.id, template = %self.template.name, "permission denied: {message}");
        self.services.metrics.denials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.denials.push(denial);
        crate::bindings::types::Error::PermissionDenied(message)
    }

    /// The shared response, tolerating a poisoned lock (writes are single assignments).
    pub(crate) fn response(&self) -> std::sync::MutexGuard<'_, ResponseDraft> {
        self.response.lock().unwrap_or_else(|p| p.into_inner())
    }
}
