//! Stage 6, deliver: outside any request, each tag's outbox worker hands batches to the tag's
//! `deliver` export (one fresh sandbox per batch, the same limits as any invocation) and plain
//! queued requests to the egress choke point.
//!
//! The workers hold the container weakly: dropping the container (or [`Workers::stop`], on
//! shutdown) ends them, and they never keep it, or its outbox files' locks, alive.
//!
//! They run on a runtime of their own (one thread, `sluice-delivery`): a `deliver` of 1,000
//! events is milliseconds of work between yields, and on the request runtime every visitor's
//! request queued behind it (the load run's p99 at half load went from 2 ms to 200 ms). On a
//! thread of its own the OS shares the CPU between the two, and requests never wait in line
//! behind a batch. That thread runs at a lower priority ([`DELIVERY_NICE`]): when both want
//! the CPU, the visitor's request goes first and delivery takes the rest — the queue is on
//! disk, so delivery can wait; a visitor cannot. The CPU budget counts the thread's own CPU
//! time ([`crate::limits::CpuClock`]), so a `deliver` that waits for the CPU is not charged
//! for the wait.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sluice_policy::consent::ConsentState;
use sluice_policy::delivery::{self as rules, BatchFailure, ItemResult};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::invoke::Invoked;
use super::{Container, TagEntry};
use crate::bindings::delivery as wit;
use crate::delivery::store::Item;
use crate::delivery::worker::{Answer, Deliver, Worker};
use crate::delivery::{OutboxConfig, PlainRequest, TagItem, TagOutbox};
use crate::outbound::OutboundRequest;
use crate::state::{Phase, RequestData, ResponseDraft};
use crate::trace::Outcome;

/// The delivery workers' lifecycle: started once, on the first request or when serving starts.
#[derive(Debug)]
pub(super) struct Workers {
    /// The delivery runtime, once started (`None` inside: it could not be built, and the
    /// workers run on the caller's runtime instead).
    started: OnceLock<Option<tokio::runtime::Runtime>>,
    shutdown: CancellationToken,
    /// A reload: hand the queues to the next container's workers ([`Workers::hand_over`]).
    handover: CancellationToken,
    tasks: TaskTracker,
    config: OutboxConfig,
}

impl Workers {
    pub(super) fn new(config: OutboxConfig) -> Self {
        Workers { started: OnceLock::new(), shutdown: CancellationToken::new(), handover: CancellationToken::new(), tasks: TaskTracker::new(), config }
    }

    /// Runs `worker` on the delivery runtime, logging where the caller logs (the process's
    /// subscriber; in tests, the one capturing that test's output).
    fn spawn(&self, runtime: Option<&tokio::runtime::Runtime>, worker: impl std::future::Future<Output = ()> + Send + 'static) {
        use tracing::instrument::WithSubscriber;
        let tracked = self.tasks.track_future(worker.with_current_subscriber());
        match runtime {
            Some(rt) => drop(rt.spawn(tracked)),
            None => drop(tokio::spawn(tracked)),
        }
    }

    /// Tells the workers to finish the batches in flight and give every other item back to its
    /// queue (the next container's workers deliver them), and waits.
    pub(super) async fn hand_over(&self) {
        self.handover.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Tells the workers to finish (each drains for at most `[outbox] drain_ms`) and waits.
    pub(super) async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.delivery.shutdown.cancel();
        // Dropping a runtime waits for its threads, which async code must not do.
        if let Some(Some(runtime)) = self.delivery.started.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whose outbox a worker empties.
#[derive(Clone, Copy)]
enum Owner {
    /// `tags[i]`: batches through its `deliver`, and plain requests.
    Tag(usize),
    /// `clients[i]`: plain requests only (clients have no `deliver`).
    Client(usize),
}

/// What a worker delivers through: one template of a container it does not keep alive.
struct Deliverer {
    container: Weak<Container>,
    owner: Owner,
    outbox: Arc<TagOutbox>,
    /// For the preview's delivery states (it outlives the container).
    telemetry: Arc<crate::services::Telemetry>,
}

impl Deliver for Deliverer {
    fn deliver(&self, items: Vec<Item>) -> BoxFuture<'static, Option<Answer>> {
        let container = self.container.clone();
        let (owner, outbox) = (self.owner, self.outbox.clone());
        Box::pin(async move {
            let container = container.upgrade()?;
            let Owner::Tag(tag) = owner else {
                return Some(Answer { result: Err(None), broken: "clients have no deliver phase".into() });
            };
            let entry = container.tags.get(tag)?.clone();
            Some(container.deliver_batch(&entry, outbox, items).await)
        })
    }

    fn send_plain(&self, request: PlainRequest) -> BoxFuture<'static, Option<ItemResult>> {
        let container = self.container.clone();
        let owner = self.owner;
        Box::pin(async move {
            let container = container.upgrade()?;
            let template = match owner {
                Owner::Tag(i) => container.tags.get(i)?.template.clone(),
                Owner::Client(i) => container.clients.get(i)?.template.clone(),
            };
            Some(container.send_plain(&template, request).await)
        })
    }

    fn settled(&self, item: &Item, state: &str, detail: Option<String>) {
        self.telemetry.preview.delivery(&self.outbox.tag, &item.id, state, detail);
    }
}

/// The delivery thread's nice value: weight 110 against a request thread's 1,024, so under
/// full load delivery gets about a tenth of a contended core (and all of an idle one).
pub const DELIVERY_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`DELIVERY_NICE`] (on Linux a nice value is per
/// thread). A refusal leaves it as it was: delivery still works, only the request path's
/// latency under load is worse.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), DELIVERY_NICE) {
        tracing::warn!("the delivery thread keeps its priority ({e}): requests may wait behind batches under load");
    }
}

impl Container {
    /// Starts one delivery worker per outbox (idempotent). [`Container::handle`] calls it, and
    /// so does [`crate::server::serve`], so a backlog left by the previous run is delivered
    /// even before the first request.
    pub fn start_delivery(self: &Arc<Self>) {
        if self.delivery.started.get().is_some() {
            return;
        }
        // `get_or_init` runs the closure once; a request racing this one waits, then returns.
        let mut first = false;
        let runtime = self.delivery.started.get_or_init(|| {
            first = true;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("sluice-delivery")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!("no runtime of its own for delivery ({e}); it shares the request runtime"))
                .ok()
        });
        if !first {
            return;
        }
        let runtime = runtime.as_ref();
        let tags = self.tags.iter().enumerate().map(|(i, t)| (Owner::Tag(i), t.outbox.clone()));
        let clients = self.clients.iter().enumerate().map(|(i, c)| (Owner::Client(i), c.outbox.clone()));
        for (owner, outbox) in tags.chain(clients) {
            let Some(outbox) = outbox else { continue };
            let config = &self.delivery.config;
            let worker = Worker {
                deliverer: Arc::new(Deliverer { container: Arc::downgrade(self), owner, outbox: outbox.clone(), telemetry: self.services.telemetry.clone() }),
                outbox,
                backoff: config.backoff(),
                plain_max_age_secs: config.send_later_max_age_secs,
                drain: Duration::from_millis(config.drain_ms),
                shutdown: self.delivery.shutdown.clone(),
                handover: self.delivery.handover.clone(),
            };
            self.delivery.spawn(runtime, worker.run());
        }
    }

    /// One `deliver` invocation for a batch.
    async fn deliver_batch(&self, tag: &TagEntry, outbox: Arc<TagOutbox>, items: Vec<Item>) -> Answer {
        let request = Arc::new(RequestData {
            id: format!("deliver-{}", self.next_request_id()),
            method: String::new(),
            path: String::new(),
            query: String::new(),
            headers: Default::default(),
            body: Default::default(),
            remote_addr: None,
        });
        let response = Arc::new(Mutex::new(ResponseDraft::default()));
        let deadline = Instant::now() + Duration::from_millis(self.runtime.limits.wall_ms);
        let batch: Vec<wit::Item> = items
            .into_iter()
            .map(|item| {
                let TagItem { data, cookies } = TagItem::decode(item.data);
                wit::Item {
                    id: item.id,
                    attempt: item.attempts,
                    created_ms: item.created_ms,
                    // Only valid JSON is queued (checked by `enqueue`, or the host's own JSON).
                    data: String::from_utf8(data).unwrap_or_default(),
                    cookies,
                }
            })
            .collect();
        let Some(pre) = tag.deliver_pre.clone() else {
            return Answer { result: Err(None), broken: "deliver: the tag declares no batch".into() };
        };
        let items = batch.len();
        let preview = &self.services.telemetry.preview;
        let ids: Vec<String> = batch.iter().map(|i| i.id.clone()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let watched = preview.begin_delivery(&tag.template.name, &ids, &request.id);
        let invoked = self
            .invoke(
                &tag.template,
                (&request, &response, deadline),
                (None, ConsentState::default(), false),
                (Phase::Deliver(items), Some(outbox)),
                move |store| Box::pin(async move { pre.instantiate_async(store).await }),
                move |instance, store| Box::pin(async move { instance.call_deliver(store, &batch).await }),
            )
            .await;
        self.services.telemetry.metrics.phases(&tag.template.name, "deliver", &invoked.phases);
        if watched {
            preview.end_delivery(&tag.template.name, &ids, &request.id);
        }
        let result = match invoked.result {
            Invoked::Returned(Ok(results)) => Ok(results.into_iter().map(item_result).collect()),
            Invoked::Returned(Err(failure)) => Err(Some(batch_failure(failure))),
            // Out of time: the vendor was slow, not the items bad.
            Invoked::TimedOut | Invoked::DeadlinePassed => Err(Some(BatchFailure::Retry(None))),
            other => {
                let outcome = Outcome::from_invocation(other.map_unit()).masked();
                return Answer { result: Err(None), broken: format!("deliver {outcome}") };
            }
        };
        Answer { result, broken: String::new() }
    }

    /// One plain queued request, through the same choke point as a template's own.
    async fn send_plain(&self, template: &crate::template::Template, request: PlainRequest) -> ItemResult {
        let url = crate::outbound::without_query(&request.url).to_string();
        let outbound = OutboundRequest::new(request.method, request.url, request.headers, request.body, request.timeout_ms);
        let sent = self.services.send(template, ("deliver", "send-later"), outbound).await;
        let template = &template.name;
        match sent {
            Ok(response) => {
                let retry_after = response
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| rules::retry_after(v, std::time::SystemTime::now()));
                rules::plain_result(Some(response.status), retry_after)
            }
            Err(e @ (crate::outbound::OutboundError::Denied(_) | crate::outbound::OutboundError::Policy(_) | crate::outbound::OutboundError::Invalid(_))) => {
                ItemResult::Rejected(crate::output::mask(&format!("{template}: {url}: {e}")))
            }
            Err(e) => {
                tracing::info!(template, url = %url, "queued request not delivered, will retry: {}", crate::output::mask(&e.to_string()));
                rules::plain_result(None, None)
            }
        }
    }
}

fn item_result(r: wit::ItemResult) -> ItemResult {
    match r {
        wit::ItemResult::Delivered => ItemResult::Delivered,
        wit::ItemResult::Retry(after) => ItemResult::Retry(after),
        wit::ItemResult::Rejected(reason) => ItemResult::Rejected(crate::output::bounded(&reason, super::invoke::MAX_MESSAGE)),
    }
}

fn batch_failure(f: wit::BatchFailure) -> BatchFailure {
    match f {
        wit::BatchFailure::Retry(after) => BatchFailure::Retry(after),
        wit::BatchFailure::Reject(reason) => BatchFailure::Reject(crate::output::bounded(&reason, super::invoke::MAX_MESSAGE)),
    }
}
