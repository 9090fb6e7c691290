//! The request pipeline: claim → events → tags → response. sGTM's semantics, in one place.
//!
//! 1. Clients run highest priority first (ties by name). The first to claim handles the request
//!    and no other client runs. A client that fails or traps is recorded and treated as not
//!    claiming. Nobody claims → `400 no client claimed the request`.
//! 2. The claiming client returns events (JSON objects). Anything that is not an object is
//!    dropped and recorded; tags never see a half-built event.
//! 3. For each event, consent is resolved ([`crate::consent`]); a matching tag whose purposes
//!    are not all granted is blocked without being instantiated, and with `ad_user_data` not
//!    granted the others see the event with personal data removed. Every decision is audited.
//!    The tags that may run are started highest priority first (ties by name) and run
//!    concurrently, as sGTM fires tags asynchronously in priority order. Each
//!    runs in its own fresh instance; a failure, trap, CPU or memory overrun, or timeout is
//!    recorded and costs only that tag.
//! 4. The response goes out after the tags finish (tags may set cookies), unless the client is
//!    configured to `respond_before_tags`, in which case tags run in the background. Background
//!    work is bounded: at most half of `[limits] max_concurrent` requests' tags at once, so
//!    background tags waiting on a slow vendor never hold every instance slot the clients need.
//!    When it is full, the next request runs its tags before answering: a slow vendor slows the
//!    senders down (backpressure) instead of growing a queue in memory.
//!
//! Every step lands in a [`RequestTrace`], logged as one line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;
use sluice_manifest::Kind;
use tokio_util::task::TaskTracker;
use wasmtime::Store;

use crate::bindings::client::{Claim, ClientPre};
use crate::bindings::tag::TagPre;
use crate::config::{ContainerConfig, ServerConfig};
use sluice_manifest::Purpose;
use sluice_policy::consent::{AuditRecord, ConsentState};
use sluice_policy::egress::EgressRules;

use crate::consent::Consent;
use crate::engine::Runtime;
use crate::limits::{CpuLimitExceeded, MemoryLimitExceeded};
use crate::services::Services;
use crate::error::{ConfigError, LoadError};
use crate::outbound::Outbound;
use crate::state::{Invocation, RequestData, ResponseDraft, SharedEvent};
use crate::template::{self, Template};
use crate::trace::{EventTrace, Outcome, Phases, RequestTrace, TagRun};
use crate::trigger::Trigger;

struct ClientEntry {
    template: Arc<Template>,
    pre: ClientPre<Invocation>,
    respond_before_tags: bool,
}

struct TagEntry {
    template: Arc<Template>,
    pre: TagPre<Invocation>,
    trigger: Trigger,
    /// Purposes that must be granted before it runs (config override, else its manifest's).
    purposes: Vec<Purpose>,
}

/// A loaded container: the templates, in run order, and the runtime that executes them.
pub struct Container {
    runtime: Runtime,
    services: Arc<Services>,
    clients: Vec<ClientEntry>,
    tags: Vec<Arc<TagEntry>>,
    server: ServerConfig,
    next_id: AtomicU64,
    background: TaskTracker,
    /// Requests whose tags may run in the background at once (see the module docs).
    background_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("clients", &self.clients.iter().map(|c| &c.template.name).collect::<Vec<_>>())
            .field("tags", &self.tags.iter().map(|t| &t.template.name).collect::<Vec<_>>())
            .finish()
    }
}

/// What a template invocation ended with, before it is mapped to an [`Outcome`].
enum Invoked<T> {
    Returned(T),
    Trapped(wasmtime::Error),
    TimedOut,
}

/// An invocation's result with what the host saw of it.
struct InvocationReport<T> {
    result: Invoked<T>,
    /// Host calls refused along the way (secrets masked).
    denials: Vec<String>,
    phases: Phases,
}

impl Container {
    /// Loads every template in the config: reads manifests, checks parameters and grants,
    /// compiles and pre-instantiates. Fails on the first problem, naming the entry.
    pub fn load(config: &ContainerConfig) -> Result<Self, LoadError> {
        let runtime = Runtime::new(&config.limits)?;
        let egress = EgressRules::new(&config.outbound.allow_http, &config.outbound.allow_private).map_err(|e| {
            ConfigError::Entry { file: config.path.clone(), entry: "[outbound]".into(), message: e.to_string() }
        })?;
        let outbound = Outbound::new(&config.outbound, egress).map_err(LoadError::Engine)?;
        let consent = Consent::new(config.consent.clone())
            .map_err(|e| LoadError::Template { entry: "[consent]".into(), message: e.to_string() })?;
        let services = Arc::new(Services { outbound, metrics: Default::default(), consent });

        let pre_err = |name: &str, e: wasmtime::Error| LoadError::Template {
            entry: name.to_string(),
            message: format!(
                "cannot be linked: {e}. Templates may import only the Sluice world and the WASI clocks, random, \
                 io and cli interfaces (no filesystem, no sockets)"
            ),
        };
        let mut clients = Vec::new();
        for c in &config.clients {
            let (template, component) = template::load(&runtime.engine, runtime.limits.memory_mb, Kind::Client, &c.template)?;
            let entry = format!("client {:?}", c.template.name);
            let pre = runtime.client_linker.instantiate_pre(&component).map_err(|e| pre_err(&entry, e))?;
            let pre = ClientPre::new(pre).map_err(|e| pre_err(&entry, e))?;
            clients.push(ClientEntry { template: Arc::new(template), pre, respond_before_tags: c.respond_before_tags });
        }
        let mut tags = Vec::new();
        for t in &config.tags {
            let (template, component) = template::load(&runtime.engine, runtime.limits.memory_mb, Kind::Tag, &t.template)?;
            let entry = format!("tag {:?}", t.template.name);
            let pre = runtime.tag_linker.instantiate_pre(&component).map_err(|e| pre_err(&entry, e))?;
            let pre = TagPre::new(pre).map_err(|e| pre_err(&entry, e))?;
            // Both lists were checked against the purpose names when read (config, manifest).
            let names = t.consent.as_ref().unwrap_or(&template.declaration.consent);
            let purposes = names.iter().filter_map(|name| Purpose::named(name)).collect();
            tags.push(Arc::new(TagEntry { template: Arc::new(template), pre, trigger: t.trigger.clone(), purposes }));
        }
        crate::output::register_secrets(clients.iter().map(|c| &c.template).chain(tags.iter().map(|t| &t.template)).flat_map(|t| t.secrets()));
        clients.sort_by(|a, b| run_order(&a.template, &b.template));
        tags.sort_by(|a, b| run_order(&a.template, &b.template));

        Ok(Container {
            runtime,
            services,
            clients,
            tags,
            server: config.server.clone(),
            next_id: AtomicU64::new(1),
            background: TaskTracker::new(),
            background_slots: Arc::new(tokio::sync::Semaphore::new((config.limits.max_concurrent as usize / 2).max(1))),
        })
    }

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
        format!("{:08x}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Host calls refused so far.
    pub fn denial_count(&self) -> u64 {
        self.services.metrics.denials.load(Ordering::Relaxed)
    }

    /// Waits for tags still running in the background (respond-before-tags) to finish.
    pub async fn drain(&self) {
        self.background.close();
        self.background.wait().await;
    }

    /// Runs the pipeline for one request. The trace is complete unless the claiming client
    /// answers before tags, in which case the tags' part is logged when they finish.
    pub async fn handle(self: &Arc<Self>, request: RequestData) -> (ResponseDraft, RequestTrace) {
        let started = Instant::now();
        let request = Arc::new(request);
        let response = Arc::new(Mutex::new(ResponseDraft::default()));
        let mut trace = RequestTrace::new(&request);

        let mut claimed = None;
        for client in &self.clients {
            match self.run_client(client, &request, &response).await {
                (Outcome::Ok, Some(events)) => {
                    claimed = Some((client, events));
                    break;
                }
                (Outcome::Ok, None) => {}
                (outcome, _) => trace.client_errors.push((client.template.name.clone(), outcome.to_string())),
            }
        }
        let Some((client, events)) = claimed else {
            let draft = ResponseDraft { status: 400, body: b"no client claimed the request".to_vec(), ..Default::default() };
            trace.status = 400;
            trace.duration = started.elapsed();
            trace.log();
            return (draft, trace);
        };
        trace.claimed_by = Some(client.template.name.clone());

        let max_events = self.server.max_events_per_request;
        if events.len() > max_events {
            trace.client_errors.push((
                client.template.name.clone(),
                format!("{} events in one request; only the first {max_events} run tags ([server] max_events_per_request)", events.len()),
            ));
        }
        let mut parsed = Vec::new();
        for (i, text) in events.iter().take(max_events).enumerate() {
            match serde_json::from_str::<Value>(text) {
                Ok(event @ Value::Object(_)) => parsed.push(event),
                _ => trace.client_errors.push((client.template.name.clone(), format!("event {i} is not a JSON object; dropped"))),
            }
        }

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
                bg_trace.events = this.run_tags(&request, &response, parsed).await;
                bg_trace.duration = started.elapsed();
                bg_trace.log();
                drop(slot);
            });
            trace.duration = started.elapsed();
            return (draft, trace);
        }

        trace.events = self.run_tags(&request, &response, parsed).await;
        let draft = response.lock().unwrap_or_else(|p| p.into_inner()).clone();
        trace.status = draft.status;
        trace.duration = started.elapsed();
        trace.log();
        (draft, trace)
    }

    async fn run_tags(&self, request: &Arc<RequestData>, response: &Arc<Mutex<ResponseDraft>>, events: Vec<Value>) -> Vec<EventTrace> {
        let consent = &self.services.consent;
        let policy = consent.policy();
        let mut traces = Vec::with_capacity(events.len());
        for event in events {
            let event_name = event.get("event_name").and_then(Value::as_str).unwrap_or("").to_string();
            let matching: Vec<&Arc<TagEntry>> = self.tags.iter().filter(|t| t.trigger.matches(&event)).collect();
            if matching.is_empty() {
                traces.push(EventTrace { event_name, tags: Vec::new() });
                continue;
            }
            // Consent is decided here, per event, before any tag is instantiated.
            let state = consent.resolve(request, &event);
            let minimise = policy.minimises(&state);
            let (seen, removed) = if minimise {
                let minimised = policy.minimiser().event(&event);
                (minimised.value, minimised.removed)
            } else {
                (event, Vec::new())
            };
            let seen = Arc::new(SharedEvent::new(seen));
            let decisions: Vec<(&Arc<TagEntry>, Vec<&Purpose>)> =
                matching.into_iter().map(|tag| (tag, policy.missing(&state, &tag.purposes))).collect();
            if consent.audits() {
                let ts_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
                let state_json = state.to_json();
                let records: Vec<AuditRecord> = decisions
                    .iter()
                    .map(|(tag, missing)| AuditRecord {
                        ts_ms,
                        request_id: &request.id,
                        event_name: &event_name,
                        tag: &tag.template.name,
                        purposes_needed: &tag.purposes,
                        state: &state_json,
                        decision: if missing.is_empty() { "run" } else { "blocked" },
                        missing,
                        personal_data_removed: minimise && missing.is_empty(),
                        removed: if missing.is_empty() { &removed } else { &[] },
                    })
                    .collect();
                consent.audit(&records);
            }
            let mut runs = Vec::with_capacity(decisions.len());
            let mut blocked = Vec::new();
            for (tag, missing) in decisions {
                if missing.is_empty() {
                    runs.push(tag);
                } else {
                    blocked.push((tag.template.name.clone(), missing.iter().map(|p| p.name().to_string()).collect()));
                }
            }
            // `join_all` polls in order, so tags start in priority order and then run concurrently.
            let mut tags = futures::future::join_all(
                runs.iter().map(|tag| self.run_tag(tag, request, response, &seen, state, minimise)),
            )
            .await;
            for (tag, missing) in blocked {
                tags.push(TagRun {
                    tag,
                    outcome: Outcome::BlockedByConsent(missing),
                    denials: Vec::new(),
                    duration: Duration::ZERO,
                    phases: Phases::default(),
                });
            }
            traces.push(EventTrace { event_name, tags });
        }
        traces
    }

    /// Runs a client; `Some(events)` when it claimed.
    async fn run_client(
        &self,
        client: &ClientEntry,
        request: &Arc<RequestData>,
        response: &Arc<Mutex<ResponseDraft>>,
    ) -> (Outcome, Option<Vec<String>>) {
        let pre = client.pre.clone();
        let invoked = self
            .invoke(
                &client.template,
                (request, response),
                None,
                (ConsentState::default(), false),
                move |store| Box::pin(async move { pre.instantiate_async(store).await }),
                |instance, store| Box::pin(async move { instance.call_run(store).await }),
            )
            .await;
        match invoked.result {
            Invoked::Returned(Ok(Claim::Pass)) => (Outcome::Ok, None),
            Invoked::Returned(Ok(Claim::Claimed(events))) => (Outcome::Ok, Some(events)),
            Invoked::Returned(Err(e)) => (Outcome::from_template_error(e).masked(), None),
            other => (Outcome::from_invocation(other.map_unit()).masked(), None),
        }
    }

    async fn run_tag(
        &self,
        tag: &TagEntry,
        request: &Arc<RequestData>,
        response: &Arc<Mutex<ResponseDraft>>,
        event: &Arc<SharedEvent>,
        consent: ConsentState,
        personal_data_removed: bool,
    ) -> TagRun {
        let started = Instant::now();
        let pre = tag.pre.clone();
        let invoked = self
            .invoke(
                &tag.template,
                (request, response),
                Some(event.clone()),
                (consent, personal_data_removed),
                move |store| Box::pin(async move { pre.instantiate_async(store).await }),
                |instance, store| Box::pin(async move { instance.call_fire(store).await }),
            )
            .await;
        let outcome = match invoked.result {
            Invoked::Returned(Ok(())) => Outcome::Ok,
            Invoked::Returned(Err(e)) => Outcome::from_template_error(e),
            other => Outcome::from_invocation(other.map_unit()),
        };
        TagRun {
            tag: tag.template.name.clone(),
            outcome: outcome.masked(),
            denials: invoked.denials,
            duration: started.elapsed(),
            phases: invoked.phases,
        }
    }

    /// One sandboxed invocation: a pool permit, a fresh store, `instantiate`, then `call` on
    /// the instance, all inside the wall-clock deadline; then the store is dropped. Returns
    /// what happened, the denials met and how long each phase took.
    async fn invoke<I: Send, T: Send + 'static>(
        &self,
        template: &Arc<Template>,
        (request, response): (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>),
        event: Option<Arc<SharedEvent>>,
        (consent, personal_data_removed): (ConsentState, bool),
        instantiate: impl for<'a> FnOnce(&'a mut Store<Invocation>) -> BoxFuture<'a, wasmtime::Result<I>> + Send,
        call: impl for<'a> FnOnce(I, &'a mut Store<Invocation>) -> BoxFuture<'a, wasmtime::Result<T>> + Send,
    ) -> InvocationReport<T> {
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, running
        // without a permit would only risk a pool-exhaustion error, not unsoundness.
        let _permit = self.runtime.permits.clone().acquire_owned().await.ok();
        let started = Instant::now();
        let mut store = self.runtime.store(|parts| Invocation {
            wasi: parts.wasi,
            table: Default::default(),
            limits: parts.limits,
            cpu: parts.cpu,
            template: template.clone(),
            services: self.services.clone(),
            request: request.clone(),
            response: response.clone(),
            event,
            consent,
            personal_data_removed,
            denials: Vec::new(),
        });
        let wall = Duration::from_millis(self.runtime.limits.wall_ms);
        let mut instantiated = None;
        let result = tokio::time::timeout(wall, async {
            let instance = instantiate(&mut store).await?;
            instantiated = Some(Instant::now());
            call(instance, &mut store).await
        })
        .await;
        let returned = Instant::now();
        let denials = std::mem::take(&mut store.data_mut().denials);
        drop(store);
        let instantiated = instantiated.unwrap_or(returned);
        let phases = Phases {
            instantiate: instantiated - started,
            call: returned - instantiated,
            teardown: returned.elapsed(),
        };
        let result = match result {
            Ok(Ok(value)) => Invoked::Returned(value),
            Ok(Err(trap)) => Invoked::Trapped(trap),
            Err(_) => Invoked::TimedOut,
        };
        InvocationReport { result, denials, phases }
    }
}

/// Highest priority first; equal priorities in name order, so runs are reproducible.
fn run_order(a: &Template, b: &Template) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name))
}

impl<T> Invoked<T> {
    fn map_unit(self) -> Invoked<()> {
        match self {
            Invoked::Returned(_) => Invoked::Returned(()),
            Invoked::Trapped(e) => Invoked::Trapped(e),
            Invoked::TimedOut => Invoked::TimedOut,
        }
    }
}

impl Outcome {
    /// The same outcome with every secret masked ([`crate::output`]): outcomes are logged and
    /// traced, and a template's error message can quote what it was given or what a vendor
    /// echoed.
    fn masked(self) -> Self {
        match self {
            Outcome::Failed(m) => Outcome::Failed(crate::output::mask(&m)),
            Outcome::Trapped(m) => Outcome::Trapped(crate::output::mask(&m)),
            other => other,
        }
    }

    fn from_template_error(e: crate::bindings::types::Error) -> Self {
        use crate::bindings::types::Error;
        Outcome::Failed(match e {
            Error::PermissionDenied(m) => format!("permission denied: {m}"),
            Error::Invalid(m) => format!("invalid: {m}"),
            Error::Timeout => "timed out".into(),
            Error::Failed(m) => m,
        })
    }

    fn from_invocation(invoked: Invoked<()>) -> Self {
        match invoked {
            Invoked::Returned(()) => Outcome::Ok,
            Invoked::TimedOut => Outcome::TimedOut,
            Invoked::Trapped(e) => {
                if e.downcast_ref::<CpuLimitExceeded>().is_some() {
                    Outcome::CpuLimit
                } else if e.downcast_ref::<MemoryLimitExceeded>().is_some() {
                    Outcome::MemoryLimit
                } else {
                    let mut message = e.to_string();
                    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
                        message = format!("{message} ({trap})");
                    }
                    Outcome::Trapped(message)
                }
            }
        }
    }
}
