//! Preview: each recorded request's whole path, for the admin UI ([`crate::admin`]).
//!
//! sGTM's preview mode shows, per incoming request, the claiming client, the events, each tag
//! fired or not (and why), and every outgoing request with the vendor's answer. This module
//! records exactly that, for the requests a debug session asks for:
//!
//! * **Which requests.** A *debug session* (started in the UI, `POST /api/sessions`) gives a
//!   token; requests carrying it in the `x-sluice-preview` header or the `sluice_preview`
//!   cookie are recorded while the session lasts (`[admin.preview] session_minutes`). Unknown
//!   or expired tokens record nothing, so a visitor cannot fill the buffer. `sample` records a
//!   share of all requests besides (0 by default).
//! * **How much memory.** Finished requests go to a ring of `[admin.preview] buffer` entries;
//!   the oldest is dropped. Each entry is bounded: bodies are cut at [`MAX_BODY`] bytes,
//!   exchanges per request at [`MAX_EXCHANGES`].
//! * **What is hidden.** Everything passes through the output masker (secret values, whole or
//!   in part); cookie values, `authorization` and the preview token itself are replaced by
//!   `(masked)`. Event data is shown as the client produced it: this is the operator's own
//!   debugging view, behind the admin token, as sGTM's preview is.
//! * **Cost when off.** A request not recorded costs one check of an atomic count of active
//!   recordings at each hook; nothing is copied.
//!
//! Delivery: a recorded tag's queued item ids are *watched*; the outbox worker reports their
//! fate (delivered, retrying, dead) and the vendor exchange of their batch, shown under the tag.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::request::RequestData;
use crate::trace::{ClientRun, Outcome, Phases, RequestTrace, TagRun};

/// Longest body (incoming, outgoing, vendor answer) kept, in bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Most outbound exchanges kept per request (a tag looping over `send` is cut off here).
pub const MAX_EXCHANGES: usize = 64;
/// The header that binds a request to a debug session.
pub const PREVIEW_HEADER: &str = "x-sluice-preview";
/// The cookie that binds a request to a debug session.
pub const PREVIEW_COOKIE: &str = "sluice_preview";
const MASKED: &str = "(masked)";

/// `[admin.preview]`: which requests are recorded and how many are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreviewConfig {
    /// Finished requests kept for the UI (a ring: the oldest goes).
    pub buffer: usize,
    /// Share of all requests recorded without a session, 0 to 1.
    pub sample: f64,
    /// How long a debug session's token records requests.
    pub session_minutes: u64,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig { buffer: 200, sample: 0.0, session_minutes: 60 }
    }
}

impl PreviewConfig {
    /// Load-time validation; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(format!("sample = {} must be between 0 (only debug sessions) and 1 (every request)", self.sample));
        }
        if self.buffer == 0 || self.buffer > 100_000 {
            return Err(format!("buffer = {} must be between 1 and 100000 requests", self.buffer));
        }
        if self.session_minutes == 0 {
            return Err("session_minutes must be at least 1".into());
        }
        Ok(())
    }
}

/// Phase times in microseconds, for the UI.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PhasesView {
    instantiate_us: u64,
    call_us: u64,
    teardown_us: u64,
}

impl From<&Phases> for PhasesView {
    fn from(p: &Phases) -> Self {
        let us = |d: Duration| d.as_micros() as u64;
        PhasesView { instantiate_us: us(p.instantiate), call_us: us(p.call), teardown_us: us(p.teardown) }
    }
}

/// One client's run, as the UI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    client: String,
    claimed: bool,
    outcome: String,
    denials: Vec<String>,
    phases: PhasesView,
}

/// One outbound request and the vendor's answer.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeView {
    /// The template that sent it.
    pub template: String,
    /// `fire`, `run` or `deliver`.
    pub export: String,
    /// Method.
    pub method: String,
    /// URL (masked).
    pub url: String,
    /// Request headers (masked).
    pub request_headers: Vec<(String, String)>,
    /// Request body (masked, cut).
    pub request_body: String,
    /// The vendor's status, when it answered.
    pub status: Option<u16>,
    /// Why there was no answer (refused, timed out, ...).
    pub error: Option<String>,
    /// The vendor's body (masked, cut).
    pub response_body: String,
    /// Milliseconds to the answer.
    pub duration_ms: u64,
    /// Recorded instead of sent (`record_only`).
    pub recorded_only: bool,
}

/// One tag for one event: fired or not, and why.
#[derive(Debug, Clone, Serialize)]
pub struct TagView {
    tag: String,
    /// `fired`, `queued`, `failed`, `not_fired` (trigger), `blocked` (consent).
    state: &'static str,
    /// The outcome label (`ok`, `blocked_by_consent`, ...); `not_triggered` when its trigger
    /// did not match.
    outcome: String,
    /// Why it did not fire, or how it failed.
    reason: Option<String>,
    denials: Vec<String>,
    phases: PhasesView,
    /// Its queued items' ids, and each one's delivery state as the worker reported it.
    delivery: Vec<DeliveryView>,
}

/// One queued item's delivery, as far as it went.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    item: String,
    /// `queued`, `delivered`, `retrying`, `dead`.
    state: String,
    detail: Option<String>,
    exchanges: Vec<ExchangeView>,
}

/// One event: its data, its consent, its tags.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    name: String,
    data: Value,
    /// Per purpose: status and the source that decided it.
    consent: Value,
    personal_data_removed: bool,
    removed: Vec<String>,
    tags: Vec<TagView>,
}

/// A recorded request: everything the UI shows for it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    id: String,
    /// Unix ms when it arrived.
    at_ms: u64,
    /// `session` (a debug session's token) or `sample`.
    why: &'static str,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
    remote_addr: Option<String>,
    clients: Vec<ClientView>,
    claimed_by: Option<String>,
    client_errors: Vec<(String, String)>,
    status: u16,
    response_headers: Vec<(String, String)>,
    response_cookies: Vec<String>,
    duration_us: u64,
    events: Vec<EventView>,
    exchanges: Vec<ExchangeView>,
    /// Still being handled.
    pending: bool,
}

impl RequestView {
    /// A recording just started: nothing known yet but its id and why it is recorded.
    fn started(id: &str, why: &'static str) -> Self {
        RequestView {
            id: id.into(),
            at_ms: now_ms(),
            why,
            method: String::new(),
            path: String::new(),
            query: String::new(),
            headers: Vec::new(),
            body: String::new(),
            remote_addr: None,
            clients: Vec::new(),
            claimed_by: None,
            client_errors: Vec::new(),
            status: 0,
            response_headers: Vec::new(),
            response_cookies: Vec::new(),
            duration_us: 0,
            events: Vec::new(),
            exchanges: Vec::new(),
            pending: true,
        }
    }
}

/// A line of the UI's list.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    id: String,
    seq: u64,
    at_ms: u64,
    method: String,
    path: String,
    status: u16,
    claimed_by: Option<String>,
    events: Vec<String>,
    fired: usize,
    blocked: usize,
    not_fired: usize,
    failed: usize,
    pending: bool,
}

/// One tag's run as [`crate::pipeline`] reports it for a recorded event.
pub(crate) struct EventRecord<'a> {
    pub(crate) data: &'a Value,
    pub(crate) consent: Value,
    pub(crate) personal_data_removed: bool,
    pub(crate) removed: &'a [String],
    /// Tags whose trigger did not match, with the condition that failed.
    pub(crate) not_triggered: Vec<(String, String)>,
}

struct Recording {
    seq: u64,
    view: RequestView,
    /// Items queued for the event being handled, by tag (taken by [`Preview::event`]).
    queued: HashMap<String, Vec<String>>,
}

/// A watched item: the recording it belongs to (gone once the ring drops it) and its event.
type Watch = (std::sync::Weak<Mutex<Recording>>, usize);

/// A started debug session.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The token requests carry.
    pub token: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
    /// The header to send it in.
    pub header: &'static str,
    /// The cookie to send it in.
    pub cookie: &'static str,
}

/// The process's preview state: sessions, requests being recorded, the ring of finished ones,
/// and the queued items being watched. Shared by every container a reload swaps in.
pub struct Preview {
    config: RwLock<PreviewConfig>,
    sessions: Mutex<HashMap<String, Instant>>,
    /// A session was ever started: until then no request's headers are searched for a token.
    sessions_started: std::sync::atomic::AtomicBool,
    /// Requests being handled now, by request id.
    active: Mutex<HashMap<String, Arc<Mutex<Recording>>>>,
    /// `active.len()` plus watched items, read without a lock by every hook.
    live: AtomicUsize,
    ring: Mutex<VecDeque<Arc<Mutex<Recording>>>>,
    /// (tag, item id) → the recording and its event index.
    watched: Mutex<HashMap<(String, String), Watch>>,
    seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preview").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Default for Preview {
    fn default() -> Self {
        Preview {
            config: RwLock::new(PreviewConfig::default()),
            sessions: Mutex::default(),
            sessions_started: Default::default(),
            active: Mutex::default(),
            live: AtomicUsize::new(0),
            ring: Mutex::default(),
            watched: Mutex::default(),
            seq: Default::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Text for the UI: lossy UTF-8, masked, cut at [`MAX_BODY`].
fn shown(bytes: &[u8]) -> String {
    crate::output::bounded(&String::from_utf8_lossy(bytes), MAX_BODY)
}

/// Headers for the UI: secrets masked, credentials and cookie values replaced.
fn shown_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    headers
        .map(|(name, value)| {
            let name = name.to_ascii_lowercase();
            let value = match name.as_str() {
                "cookie" => masked_cookies(value),
                "authorization" | "proxy-authorization" | "x-api-key" | "access-token" | PREVIEW_HEADER => MASKED.to_string(),
                _ => crate::output::bounded(value, 2048),
            };
            (name, value)
        })
        .collect()
}

/// `a=1; b=2` → `a=(masked); b=(masked)`: which cookies came, not what they hold.
fn masked_cookies(header: &str) -> String {
    header
        .split(';')
        .filter_map(|c| c.split_once('=').map(|(n, _)| format!("{}={MASKED}", crate::output::mask(n.trim()))))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A `Set-Cookie` value with its value masked and its attributes kept.
fn masked_set_cookie(value: &str) -> String {
    let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
    let attributes = if attributes.is_empty() { String::new() } else { format!(";{}", crate::output::mask(attributes)) };
    format!("{}={MASKED}{attributes}", crate::output::mask(name.trim()))
}

/// The session token a request carries, from the header or the cookie.
fn carried_token(request: &RequestData) -> Option<String> {
    if let Some(v) = request.headers.get(PREVIEW_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    request.headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == PREVIEW_COOKIE).then(|| value.trim().to_string())
    })
}

fn client_view(run: &ClientRun) -> ClientView {
    ClientView { client: run.client.clone(), claimed: run.claimed, outcome: run.outcome.to_string(), denials: run.denials.clone(), phases: (&run.phases).into() }
}

fn tag_view(run: &TagRun, ids: Vec<String>) -> TagView {
    let state = match &run.outcome {
        Outcome::Ok | Outcome::Skipped(_) => "fired",
        Outcome::Queued => "queued",
        Outcome::BlockedByConsent(_) => "blocked",
        _ => "failed",
    };
    let reason = match &run.outcome {
        Outcome::Ok | Outcome::Queued => None,
        other => Some(other.to_string()),
    };
    let delivery = ids.into_iter().map(|item| DeliveryView { item, state: "queued".into(), detail: None, exchanges: Vec::new() }).collect();
    TagView { tag: run.tag.clone(), state, outcome: run.outcome.label().into(), reason, denials: run.denials.clone(), phases: (&run.phases).into(), delivery }
}

impl Preview {
    /// Applies `[admin.preview]` (at load and on every reload); a smaller buffer drops the
    /// oldest entries now.
    pub(crate) fn configure(&self, config: PreviewConfig) {
        let buffer = config.buffer;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        let mut ring = lock(&self.ring);
        while ring.len() > buffer {
            ring.pop_front();
        }
    }

    /// Starts a debug session: a random token, valid for `session_minutes`.
    pub fn start_session(&self) -> Session {
        // The OS's random source; if it ever failed, no session is better than a guessable one.
        let token = random_token().unwrap_or_default();
        let minutes = self.config.read().unwrap_or_else(|p| p.into_inner()).session_minutes;
        let lifetime = Duration::from_secs(minutes * 60);
        if !token.is_empty() {
            let mut sessions = lock(&self.sessions);
            let now = Instant::now();
            sessions.retain(|_, until| *until > now);
            sessions.insert(token.clone(), now + lifetime);
            self.sessions_started.store(true, Ordering::Relaxed);
        }
        Session { token, expires_in_secs: lifetime.as_secs(), header: PREVIEW_HEADER, cookie: PREVIEW_COOKIE }
    }

    /// Whether any request is being recorded or item watched: every hook checks this first.
    fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed) > 0
    }

    fn recording(&self, request_id: &str) -> Option<Arc<Mutex<Recording>>> {
        if !self.is_live() {
            return None;
        }
        lock(&self.active).get(request_id).cloned()
    }

    /// Whether `request` is to be recorded; if so, its recording starts now.
    pub(crate) fn begin(&self, request: &RequestData) -> bool {
        // Most servers never start a session: their requests' headers are not searched.
        let token = if self.sessions_started.load(Ordering::Relaxed) { carried_token(request) } else { None };
        let why = match token {
            Some(token) if !token.is_empty() && lock(&self.sessions).get(&token).is_some_and(|until| *until > Instant::now()) => "session",
            _ => {
                let sample = self.config.read().unwrap_or_else(|p| p.into_inner()).sample;
                if sample <= 0.0 || fastrand::f64() >= sample {
                    return false;
                }
                "sample"
            }
        };
        let view = RequestView {
            method: request.method.clone(),
            path: crate::output::mask(&request.path),
            query: crate::output::bounded(&request.query, MAX_BODY),
            headers: shown_headers(request.headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("(not text)")))),
            body: shown(&request.body),
            remote_addr: request.remote_addr.map(|a| a.to_string()),
            ..RequestView::started(&request.id, why)
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let recording = Arc::new(Mutex::new(Recording { seq, view, queued: HashMap::new() }));
        lock(&self.active).insert(request.id.clone(), recording.clone());
        self.live.fetch_add(1, Ordering::Relaxed);
        self.push(recording);
        true
    }

    /// Puts a recording in the ring (it shows as pending until it finishes).
    fn push(&self, recording: Arc<Mutex<Recording>>) {
        let buffer = self.config.read().unwrap_or_else(|p| p.into_inner()).buffer;
        let mut ring = lock(&self.ring);
        ring.push_back(recording);
        while ring.len() > buffer {
            ring.pop_front();
        }
    }

    /// An item a recorded request's tag queued (its event id), shown with its delivery.
    pub(crate) fn queued(&self, request_id: &str, tag: &str, id: &str) {
        let Some(recording) = self.recording(request_id) else { return };
        lock(&recording).queued.entry(tag.to_string()).or_default().push(id.to_string());
    }

    /// One event of a recorded request, with what the trace does not carry.
    pub(crate) fn event(&self, request_id: &str, event: EventRecord<'_>, runs: &[TagRun]) {
        let Some(recording) = self.recording(request_id) else { return };
        let queued = std::mem::take(&mut lock(&recording).queued);
        let mut tags: Vec<TagView> = runs.iter().map(|run| tag_view(run, queued.get(&run.tag).cloned().unwrap_or_default())).collect();
        tags.extend(event.not_triggered.into_iter().map(|(tag, why)| TagView {
            tag,
            state: "not_fired",
            outcome: "not_triggered".into(),
            reason: Some(why),
            denials: Vec::new(),
            phases: PhasesView::default(),
            delivery: Vec::new(),
        }));
        let data = serde_json::from_str(&crate::output::mask(&crate::json_text(event.data))).unwrap_or(Value::Null);
        let name = event.data.get("event_name").and_then(Value::as_str).unwrap_or("").to_string();
        let mut rec = lock(&recording);
        let index = rec.view.events.len();
        rec.view.events.push(EventView { name, data, consent: event.consent, personal_data_removed: event.personal_data_removed, removed: event.removed.to_vec(), tags });
        drop(rec);
        let mut watched = lock(&self.watched);
        let most = self.config.read().unwrap_or_else(|p| p.into_inner()).buffer.saturating_mul(MAX_EXCHANGES);
        for (tag, ids) in queued {
            for id in ids {
                // Bounded like the ring: past it, further items show as queued only.
                if watched.len() >= most {
                    break;
                }
                if watched.insert((tag.clone(), id), (Arc::downgrade(&recording), index)).is_none() {
                    self.live.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// An outbound exchange of a recorded request (or of a batch carrying a watched item).
    pub(crate) fn exchange(&self, request_id: &str, exchange: impl FnOnce() -> ExchangeView) {
        let Some(recording) = self.recording(request_id) else { return };
        let mut rec = lock(&recording);
        if rec.view.exchanges.len() < MAX_EXCHANGES {
            rec.view.exchanges.push(exchange());
        }
    }

    /// Whether exchanges of `request_id` are recorded (so callers copy a request only then).
    pub(crate) fn records(&self, request_id: &str) -> bool {
        self.recording(request_id).is_some()
    }

    /// The request is done: its trace and response complete the recording.
    pub(crate) fn finish(&self, trace: &RequestTrace, response: &crate::request::ResponseDraft) {
        if !self.is_live() {
            return;
        }
        let Some(recording) = lock(&self.active).remove(&trace.request_id) else { return };
        self.live.fetch_sub(1, Ordering::Relaxed);
        let mut rec = lock(&recording);
        let view = &mut rec.view;
        view.clients = trace.clients.iter().map(client_view).collect();
        view.claimed_by = trace.claimed_by.clone();
        view.client_errors = trace.client_errors.clone();
        view.status = trace.status;
        view.duration_us = trace.duration.as_micros() as u64;
        view.response_headers = response.headers.iter().map(|(n, v)| (n.clone(), crate::output::mask(v))).collect();
        view.response_cookies = response.cookies.iter().map(|c| masked_set_cookie(c)).collect();
        view.pending = false;
    }

    /// Which queued items of `tag` are watched: a batch carrying one records its exchanges
    /// under `deliver_id`.
    pub(crate) fn begin_delivery(&self, tag: &str, ids: &[&str], deliver_id: &str) -> bool {
        if !self.is_live() {
            return false;
        }
        let any = {
            let watched = lock(&self.watched);
            ids.iter().any(|id| watched.contains_key(&(tag.to_string(), id.to_string())))
        };
        if any {
            // Only its exchanges are kept; it is never listed.
            let view = RequestView::started(deliver_id, "session");
            lock(&self.active).insert(deliver_id.into(), Arc::new(Mutex::new(Recording { seq: 0, view, queued: HashMap::new() })));
            self.live.fetch_add(1, Ordering::Relaxed);
        }
        any
    }

    /// The batch `deliver_id` ended: its exchanges go to each watched item's delivery.
    pub(crate) fn end_delivery(&self, tag: &str, ids: &[&str], deliver_id: &str) {
        let Some(batch) = lock(&self.active).remove(deliver_id) else { return };
        self.live.fetch_sub(1, Ordering::Relaxed);
        let exchanges = lock(&batch).view.exchanges.clone();
        for id in ids {
            self.update(tag, id, |d| d.exchanges.extend(exchanges.iter().cloned()));
        }
    }

    /// A watched item's new state (`delivered`, `retrying`, `dead`); a final state stops the
    /// watch.
    pub(crate) fn delivery(&self, tag: &str, id: &str, state: &str, detail: Option<String>) {
        if !self.is_live() {
            return;
        }
        self.update(tag, id, |d| {
            d.state = state.into();
            d.detail = detail;
        });
        if state != "retrying" && lock(&self.watched).remove(&(tag.to_string(), id.to_string())).is_some() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn update(&self, tag: &str, id: &str, change: impl FnOnce(&mut DeliveryView)) {
        let key = (tag.to_string(), id.to_string());
        let Some((recording, index)) = lock(&self.watched).get(&key).cloned() else { return };
        let Some(recording) = recording.upgrade() else {
            // Dropped from the ring: nobody can see it any more.
            if lock(&self.watched).remove(&key).is_some() {
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        };
        let mut rec = lock(&recording);
        let found = rec.view.events.get_mut(index).into_iter().flat_map(|e| e.tags.iter_mut()).filter(|t| t.tag == tag).flat_map(|t| t.delivery.iter_mut()).find(|d| d.item == id);
        if let Some(d) = found {
            change(d);
        }
    }

    /// The ring, newest first, after `after` (a `seq` the UI has already shown).
    pub fn list(&self, after: u64) -> Vec<RequestSummary> {
        let ring = lock(&self.ring);
        ring.iter()
            .rev()
            .filter_map(|r| {
                let rec = lock(r);
                (rec.seq > after || rec.view.pending).then(|| summary(&rec))
            })
            .collect()
    }

    /// One recorded request in full.
    pub fn get(&self, id: &str) -> Option<RequestView> {
        let ring = lock(&self.ring);
        ring.iter().rev().find_map(|r| {
            let rec = lock(r);
            (rec.view.id == id).then(|| rec.view.clone())
        })
    }
}

fn summary(rec: &Recording) -> RequestSummary {
    let v = &rec.view;
    let tags = || v.events.iter().flat_map(|e| &e.tags);
    let count = |state: &str| tags().filter(|t| t.state == state).count();
    RequestSummary {
        id: v.id.clone(),
        seq: rec.seq,
        at_ms: v.at_ms,
        method: v.method.clone(),
        path: v.path.clone(),
        status: v.status,
        claimed_by: v.claimed_by.clone(),
        events: v.events.iter().map(|e| e.name.clone()).collect(),
        fired: count("fired") + count("queued"),
        blocked: count("blocked"),
        not_fired: count("not_fired"),
        failed: count("failed"),
        pending: v.pending,
    }
}

/// What a template sent, for an [`ExchangeView`].
pub(crate) fn exchange_view(
    (template, export): (&str, &str),
    (method, url, headers, body): (&str, &str, &[(String, String)], &[u8]),
    answer: Result<(u16, &[u8]), String>,
    (duration, recorded_only): (Duration, bool),
) -> ExchangeView {
    let (status, error, response_body) = match answer {
        Ok((status, body)) => (Some(status), None, shown(body)),
        Err(e) => (None, Some(crate::output::mask(&e)), String::new()),
    };
    ExchangeView {
        template: template.into(),
        export: export.into(),
        method: method.into(),
        url: crate::output::bounded(url, 4096),
        request_headers: shown_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
        request_body: shown(body),
        status,
        error,
        response_body,
        duration_ms: duration.as_millis() as u64,
        recorded_only,
    }
}

/// 128 random bits from the OS, hex: a token for a listener configured without one, or a
/// debug session's.
pub(crate) fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source to make a token ({e}): set token = \"${{SLUICE_ADMIN_TOKEN}}\""))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_and_credentials_never_reach_the_view() {
        let headers = [("Cookie", "_fbp=fb.1.123; sluice_preview=abc"), ("Authorization", "Bearer s3cret"), ("User-Agent", "ua")];
        let shown = shown_headers(headers.into_iter());
        assert_eq!(shown[0], ("cookie".into(), "_fbp=(masked); sluice_preview=(masked)".into()));
        assert_eq!(shown[1].1, MASKED);
        assert_eq!(shown[2].1, "ua");
        assert_eq!(masked_set_cookie("_fbp=fb.1.2.3; Path=/; Max-Age=7776000"), "_fbp=(masked); Path=/; Max-Age=7776000");
    }

    #[test]
    fn only_a_live_session_token_records_and_the_ring_is_bounded() {
        let preview = Preview::default();
        preview.configure(PreviewConfig { buffer: 3, ..Default::default() });
        let request = |id: &str, token: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(t) = token {
                headers.insert(PREVIEW_HEADER, t.parse().unwrap());
            }
            RequestData { id: id.into(), method: "GET".into(), path: "/".into(), query: String::new(), headers, body: Default::default(), remote_addr: None }
        };
        assert!(!preview.begin(&request("1", None)), "no session, no sample: nothing recorded");
        assert!(!preview.begin(&request("2", Some("made-up"))), "an unknown token records nothing");
        let session = preview.start_session();
        assert_eq!(session.token.len(), 32);
        for n in 0..5 {
            assert!(preview.begin(&request(&format!("r{n}"), Some(&session.token))));
        }
        let listed: Vec<String> = preview.list(0).into_iter().map(|s| s.id).collect();
        assert_eq!(listed, ["r4", "r3", "r2"], "newest first, at most `buffer`");
    }
}
