//! The request pipeline, as its stages — sGTM's semantics, one module per stage:
//!
//! 1. **Load and validate** ([`Container::load`], `load.rs`): every template's manifest,
//!    parameters and grant are checked and the components compiled before traffic arrives.
//! 2. **Claim** (`claim.rs`): clients run highest priority first (ties by name). The first to
//!    claim handles the request and no other client runs. A client that fails or traps is
//!    recorded and treated as not claiming. Nobody claims → `400 no client claimed the
//!    request`. The claiming client's events must be JSON objects (others are dropped and
//!    recorded; tags never see a half-built event), at most `[server] max_events_per_request`.
//! 3. **Consent gate and fan-out** (`fanout.rs`): for each event, consent is resolved
//!    ([`sluice_policy::consent`]); a matching tag whose purposes are not all granted is blocked
//!    without being instantiated, and with `ad_user_data` not granted the others see the event
//!    and the request with personal data removed. Every decision is audited. The tags that may
//!    run start highest priority first (ties by name) and run concurrently, as sGTM fires tags
//!    asynchronously in priority order.
//! 4. **Invoke** (`invoke.rs`): each template runs in its own fresh instance; a failure, trap,
//!    CPU or memory overrun, or timeout is recorded and costs only that invocation.
//!    A tag with a `deliver` phase and no `fire` runs nothing here: the event it may see is
//!    written to its outbox as it is, and the trace says `queued`.
//! 5. **Respond** ([`Container::handle`]): the response goes out after the tags finish (tags
//!    may set cookies), unless the client is configured to `respond_before_tags`, in which case
//!    tags run in the background. Background work is bounded: at most half of `[limits]
//!    max_concurrent` requests' tags at once, so background tags waiting on a slow vendor never
//!    hold every instance slot the clients need. When it is full, the next request runs its
//!    tags before answering: a slow vendor slows the senders down (backpressure) instead of
//!    growing a queue in memory.
//!
//! 6. **Deliver** (`deliver.rs`), outside any request: each tag's outbox worker
//!    ([`crate::delivery`]) hands batches of queued items to the tag's `deliver` export, one
//!    fresh sandbox per batch (from the delivery pool, [`crate::engine::Runtime`]: a held batch
//!    never takes a slot a request needs), and sends plain queued requests itself.
//!
//! Every step lands in a [`RequestTrace`], logged as one line per request.

mod claim;
mod deliver;
mod fanout;
mod invoke;
mod load;
pub use load::Warning;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_manifest::{DeliverySpec, Purpose};
use tokio_util::task::TaskTracker;

use crate::bindings::client::ClientPre;
use crate::bindings::tag::TagPre;
use crate::config::ServerConfig;
use crate::delivery::{Outboxes, TagOutbox};
use crate::engine::Runtime;
use crate::services::Services;
use crate::state::{Invocation, RequestData, ResponseDraft};
use crate::template::Template;
use crate::trace::RequestTrace;
use crate::trigger::Trigger;

struct ClientEntry {
    template: Arc<Template>,
    pre: ClientPre<Invocation>,
    respond_before_tags: bool,
    /// For `send-later`; `None` without an outbound grant.
    outbox: Option<Arc<TagOutbox>>,
}

struct TagEntry {
    template: Arc<Template>,
    /// For `fire`, in the request pool.
    pre: TagPre<Invocation>,
    /// For `deliver`, in the delivery pool; `None` without a declared batch.
    deliver_pre: Option<TagPre<Invocation>>,
    trigger: Trigger,
    /// Purposes that must be granted before it runs (config override, else its manifest's).
    purposes: Vec<Purpose>,
    /// Its phases (the manifest's), with the batch limits as the operator narrowed them and
    /// the id cookies its parameters leave on.
    delivery: DeliverySpec,
    /// Its queue: with a declared batch, or an outbound grant (for `send-later`).
    outbox: Option<Arc<TagOutbox>>,
}

/// A loaded container: the templates, in run order, and the runtime that executes them.
pub struct Container {
    /// Shared with the container a reload swaps in when `[limits]` did not change: the same
    /// engine, pool and permits, so unchanged templates need no compiling and old and new
    /// requests together stay within `max_concurrent`.
    runtime: Arc<Runtime>,
    /// Every template's component, by the digest of its bytes (for a reload's reuse).
    compiled: crate::template::Compiled,
    /// The same for the delivery pool's copies of the tags that deliver.
    compiled_for_delivery: crate::template::Compiled,
    services: Arc<Services>,
    clients: Vec<ClientEntry>,
    tags: Vec<Arc<TagEntry>>,
    server: ServerConfig,
    background: TaskTracker,
    /// Requests whose tags may run in the background at once (see the module docs).
    background_slots: Arc<tokio::sync::Semaphore>,
    /// Every template's outbox, and the delivery workers' lifecycle.
    outboxes: Outboxes,
    delivery: deliver::Workers,
    /// `[outbox] answer_after_commit`.
    answer_after_commit: bool,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("clients", &self.clients.iter().map(|c| &c.template.name).collect::<Vec<_>>())
            .field("tags", &self.tags.iter().map(|t| &t.template.name).collect::<Vec<_>>())
            .finish()
    }
}

impl Container {
    /// The loaded templates, in run order: clients then tags.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.clients.iter().map(|c| &*c.template).chain(self.tags.iter().map(|t| &*t.template))
    }

    /// Incoming-request settings.
    pub fn server_config(&self) -> &ServerConfig {
        &self.server
    }

    /// A new request id.
    pub fn next_request_id(&self) -> String {
        self.services.telemetry.next_request_id()
    }

    /// What this container shares with the ones a reload swaps in (metrics, preview).
    pub fn telemetry(&self) -> &Arc<crate::services::Telemetry> {
        &self.services.telemetry
    }

    /// The end of a request: the log line, the metrics, the preview's recording.
    fn finish(&self, trace: &RequestTrace, response: &ResponseDraft) {
        trace.log();
        self.services.telemetry.metrics.request(trace);
        self.services.telemetry.preview.finish(trace, response);
    }

    /// Each outbox's state, live.
    pub fn outbox_status(&self) -> Vec<crate::delivery::OutboxStatus> {
        let mut all: Vec<_> = self.outboxes
            .by_tag
            .values()
            .map(|o| crate::delivery::status(&o.tag, &o.store, Some(o.counters.retrying.load(Ordering::Relaxed)), Vec::new()))
            .collect();
        all.sort_by(|a, b| a.template.cmp(&b.template));
        all
    }

    /// Each outbox's state and counters, for a `/metrics` scrape.
    pub(crate) fn outbox_samples(&self) -> Vec<crate::metrics::OutboxSample> {
        let mut all: Vec<_> = self
            .outboxes
            .by_tag
            .values()
            .map(|o| {
                let c = &o.counters;
                let get = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
                let status = crate::delivery::status(&o.tag, &o.store, None, Vec::new());
                crate::metrics::OutboxSample {
                    tag: status.template,
                    pending: status.pending as u64,
                    oldest_age_secs: status.oldest_age_secs.unwrap_or(0),
                    retrying: get(&c.retrying),
                    dead: status.dead as u64,
                    bytes_on_disk: status.bytes_on_disk,
                    queued: get(&c.queued),
                    delivered: get(&c.delivered),
                    retried: get(&c.retried),
                    dead_lettered: get(&c.dead),
                    refused: get(&c.refused),
                    requests: get(&c.requests),
                    damaged: status.damaged,
                }
            })
            .collect();
        all.sort_by(|a, b| a.tag.cmp(&b.tag));
        all
    }

    /// What the admin UI's status panel shows: the templates and their queues.
    pub fn status(&self) -> ContainerStatus {
        let templates = self
            .templates()
            .map(|t| TemplateStatus {
                name: t.name.clone(),
                kind: t.declaration.kind.to_string(),
                template: t.declaration.name.clone(),
                version: t.declaration.version.clone(),
                record_only: t.record_only,
            })
            .collect();
        ContainerStatus { templates, outboxes: self.outbox_status() }
    }

    /// One template's dead letters, masked as `sluice outbox dead` shows them.
    pub fn dead_letters(&self, template: &str) -> Vec<crate::delivery::DeadLetterView> {
        let Some(outbox) = self.outboxes.by_tag.get(template) else { return Vec::new() };
        let minimiser = self.services.consent.policy().minimiser();
        outbox.store.dead_letters().unwrap_or_default().iter().map(|d| crate::delivery::view(d, minimiser)).collect()
    }

    /// Host calls refused so far.
    pub fn denial_count(&self) -> u64 {
        self.services.denials.count.load(Ordering::Relaxed)
    }

    /// Waits for tags still running in the background (respond-before-tags) to finish, then
    /// lets the delivery workers work off the backlog for at most `[outbox] drain_ms`; what is
    /// left is on disk for the next start.
    pub async fn drain(&self) {
        self.background.close();
        self.background.wait().await;
        self.outboxes.flush().await;
        self.delivery.stop().await;
    }

    /// How many of this container's templates were compiled for it rather than taken from
    /// `previous` (a reload with the same `[limits]` reuses the components of unchanged files).
    pub(crate) fn compiled_since(&self, previous: &Container) -> usize {
        if !Arc::ptr_eq(&self.runtime, &previous.runtime) {
            return self.compiled.len();
        }
        self.compiled.keys().filter(|digest| !previous.compiled.contains_key(*digest)).count()
    }

    /// Steps aside for the container a reload swapped in: waits for this one's background
    /// tags, then its delivery workers finish their batches in flight and hand every other
    /// item back to the queues, which the new container's workers deliver.
    pub(crate) async fn retire(&self) {
        self.background.close();
        self.background.wait().await;
        self.delivery.hand_over().await;
    }

    /// Runs the pipeline for one request. The trace is complete unless the claiming client
    /// answers before tags, in which case the tags' part is logged when they finish.
    pub async fn handle(self: &Arc<Self>, request: RequestData) -> (ResponseDraft, RequestTrace) {
        let Start { started, request, response, mut trace, deadline } = self.start(request);

        let Some((client, events)) = self.claim((&request, &response, deadline), &mut trace).await else {
            let draft = ResponseDraft { status: 400, body: b"no client claimed the request".to_vec(), ..Default::default() };
            trace.status = 400;
            trace.duration = started.elapsed();
            self.finish(&trace, &draft);
            return (draft, trace);
        };

        let background_slot = if client.respond_before_tags {
            // Full: answer after the tags, like a client without respond_before_tags.
            self.background_slots.clone().try_acquire_owned().ok()
        } else {
            None
        };
        if let Some(slot) = background_slot {
            let draft = {
                let mut r = response.lock().unwrap_or_else(|p| p.into_inner());
                r.sent = true;
                r.clone()
            };
            trace.status = draft.status;
            trace.tags_in_background = true;
            let this = self.clone();
            let mut bg_trace = trace.clone();
            self.background.spawn(async move {
                bg_trace.events = this.fan_out((&request, &response, deadline), events).await;
                bg_trace.duration = started.elapsed();
                let sent = response.lock().unwrap_or_else(|p| p.into_inner()).clone();
                this.finish(&bg_trace, &sent);
                drop(slot);
            });
            trace.duration = started.elapsed();
            return (draft, trace);
        }

        trace.events = self.fan_out((&request, &response, deadline), events).await;
        if self.answer_after_commit && trace.events.iter().flat_map(|e| &e.tags).any(|t| t.queued > 0) {
            self.outboxes.flush().await;
        }
        let draft = response.lock().unwrap_or_else(|p| p.into_inner()).clone();
        trace.status = draft.status;
        trace.duration = started.elapsed();
        self.finish(&trace, &draft);
        (draft, trace)
    }
}

impl Container {
    /// Runs the tags on `event` as if a client had claimed `request` with it: consent,
    /// triggers, permissions, `fire` and queueing exactly as for a claimed request (the claim
    /// caps included). For running a built tag in the real engine ([`crate::testing`]).
    pub async fn handle_event(self: &Arc<Self>, request: RequestData, event: serde_json::Value) -> (ResponseDraft, RequestTrace) {
        let Start { started, request, response, mut trace, deadline } = self.start(request);
        let admitted = sluice_policy::claim::admit(&[event.to_string()], self.event_caps());
        trace.events = self.fan_out((&request, &response, deadline), admitted.events).await;
        let draft = response.lock().unwrap_or_else(|p| p.into_inner()).clone();
        trace.status = draft.status;
        trace.duration = started.elapsed();
        self.services.telemetry.preview.finish(&trace, &draft);
        (draft, trace)
    }
}

/// The running container, as the admin UI shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatus {
    /// Clients then tags, in run order.
    pub templates: Vec<TemplateStatus>,
    /// Each queue's state.
    pub outboxes: Vec<crate::delivery::OutboxStatus>,
}

/// One loaded template.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TemplateStatus {
    /// Its name in the config.
    pub name: String,
    /// `client` or `tag`.
    pub kind: String,
    /// The template's own name and version.
    pub template: String,
    /// Its version.
    pub version: String,
    /// Its outbound requests are recorded, not sent.
    pub record_only: bool,
}

/// What every request's handling starts with.
struct Start {
    started: Instant,
    request: Arc<RequestData>,
    response: Arc<Mutex<ResponseDraft>>,
    trace: RequestTrace,
    /// `[limits] request_ms` from `started`.
    deadline: Instant,
}

impl Container {
    fn start(self: &Arc<Self>, request: RequestData) -> Start {
        self.start_delivery();
        let started = Instant::now();
        self.services.telemetry.preview.begin(&request);
        let request = Arc::new(request);
        let trace = RequestTrace::new(&request);
        let deadline = started + std::time::Duration::from_millis(self.runtime.limits.request_ms);
        Start { started, request, response: Arc::new(Mutex::new(ResponseDraft::default())), trace, deadline }
    }
}

/// Highest priority first; equal priorities in name order, so runs are reproducible.
fn run_order(a: &Template, b: &Template) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name))
}

