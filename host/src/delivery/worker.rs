//! One tag's delivery worker: forms batches from its queue, hands them to a [`Deliver`]er,
//! and acts on the answer by `sluice_policy::delivery`'s rules.
//!
//! Memory is bounded whatever the backlog: the worker holds at most [`Worker::held_max`] items
//! (forming, in flight, waiting to retry); the rest stay on disk until there is room. A tag's
//! retries therefore never crowd out its fresh items by more than that, and a vendor outage
//! costs disk (up to the quota), not memory.
//!
//! Timing: a batch leaves when it is full (items or bytes) or when its oldest item has waited
//! `max_wait_ms`. At most `concurrency` batches are in flight. A whole-batch `retry` with a
//! wait (a `429` with `Retry-After`) pauses the tag until then; items retried on their own wait
//! their backoff. Items past `max_age_secs` are dead-lettered instead of sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sluice_manifest::Batch;
use sluice_policy::delivery::{self as rules, Backoff, BatchFailure, ItemResult, Plan};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::store::{Item, Position};
use super::{Counters, ItemKind, PlainRequest, TagOutbox, now_ms};

/// `deliver`'s answer for a batch, before [`rules::plan`]: `Err(None)` when the invocation
/// failed without answering (a trap), with `broken` saying how.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) result: Result<Vec<ItemResult>, Option<BatchFailure>>,
    pub(crate) broken: String,
}

/// What the worker delivers through: the tag's `deliver` export in a sandbox, and the host's
/// own sender for plain requests. `None`: the container is gone, stop.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// One `deliver` call with these items.
    fn deliver(&self, items: Vec<Item>) -> BoxFuture<'static, Option<Answer>>;
    /// One plain request: the result by [`rules::plain_result`].
    fn send_plain(&self, request: PlainRequest) -> BoxFuture<'static, Option<ItemResult>>;
    /// What became of an item: `delivered`, `retrying` or `dead` (for the preview).
    fn settled(&self, _item: &Item, _state: &str, _detail: Option<String>) {}
}

/// An item the worker holds.
#[derive(Debug)]
struct Held {
    pos: Position,
    item: Item,
    /// When it entered the worker (for `max_wait_ms`).
    since: Instant,
}

/// How the worker is set up.
pub(crate) struct Worker {
    pub(crate) outbox: Arc<TagOutbox>,
    pub(crate) deliverer: Arc<dyn Deliver>,
    pub(crate) backoff: Backoff,
    pub(crate) plain_max_age_secs: u32,
    pub(crate) drain: Duration,
    pub(crate) shutdown: CancellationToken,
    /// A reload: finish the batches in flight, hand every other held item back to the store
    /// (for the next container's worker), stop. Nothing waits for a retry's time or a batch
    /// to fill.
    pub(crate) handover: CancellationToken,
}

/// How long a worker waits after its outbox could not be read before it reads again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// A plain request's batch has no `deliver` limits: one request each.
const PLAIN: Batch = Batch { max_items: 1, max_bytes: u32::MAX, max_wait_ms: 0, max_age_secs: u32::MAX };

impl Worker {
    fn batch(&self) -> Batch {
        self.outbox.batch.unwrap_or(PLAIN)
    }

    /// Most items held in memory at once.
    fn held_max(&self) -> usize {
        (self.batch().max_items as usize).saturating_mul(self.outbox.concurrency + 2).clamp(64, 20_000)
    }

    /// Runs until shutdown (then drains for at most `drain`) or until the container is gone.
    pub(crate) async fn run(self) {
        let mut state = State::default();
        let mut committed = self.outbox.store.subscribe();
        let mut drain_until: Option<Instant> = None;
        let mut handing_over = false;
        loop {
            if handing_over {
                if state.in_flight.is_empty() {
                    break;
                }
            } else {
                self.dispatch(&mut state, drain_until.is_some());
            }
            if let Some(until) = drain_until
                && (Instant::now() >= until || (state.in_flight.is_empty() && state.is_idle(&self)))
            {
                break;
            }
            self.outbox.counters.retrying.store(state.retrying.len() as u64, std::sync::atomic::Ordering::Relaxed);
            // While draining, the drain's end is a wake too: nothing may sleep past it.
            let wake = [state.next_wake(&self), drain_until].into_iter().flatten().min().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                done = state.in_flight.join_next(), if !state.in_flight.is_empty() => match done {
                    Some(Ok(Some((held, plan)))) => {
                        state.in_flight_items = state.in_flight_items.saturating_sub(held.len());
                        self.settle(&mut state, held, plan);
                    }
                    Some(Ok(None)) => break,
                    Some(Err(e)) => tracing::error!(tag = %self.outbox.tag, "delivery task failed: {e}"),
                    None => {}
                },
                changed = committed.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(wake.into()) => {}
                () = self.shutdown.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + self.drain);
                }
                () = self.handover.cancelled(), if !handing_over => handing_over = true,
            }
        }
        state.in_flight.abort_all();
        if handing_over {
            self.outbox.store.hand_back(state.into_held());
        }
        if let Err(e) = self.outbox.store.flush().await {
            tracing::error!(tag = %self.outbox.tag, "outbox commit at shutdown failed: {e}");
        }
    }

    /// Starts every batch that may start now (while draining, a batch does not wait to fill).
    fn dispatch(&self, state: &mut State, draining: bool) {
        let now = Instant::now();
        if state.paused_until.is_some_and(|until| until > now) {
            return;
        }
        state.paused_until = None;
        let batch = self.batch();
        // Items come in retry-due order first, then fresh from the queue, as room allows.
        state.take_due_retries(now, Duration::from_millis(u64::from(batch.max_wait_ms)));
        let room = self.held_max().saturating_sub(state.held());
        if room > 0 {
            match self.outbox.store.read_next(room, usize::MAX) {
                Ok(fresh) => {
                    for (pos, item) in fresh {
                        let held = Held { pos, item, since: now };
                        if ItemKind::of(&held.item) == Some(ItemKind::Tag) && self.outbox.batch.is_some() {
                            state.forming.push_back(held);
                        } else {
                            state.ready.push_back(vec![held]);
                        }
                    }
                }
                Err(e) => {
                    // Nothing was lost (the store reads those items again); a file that cannot
                    // be read now may be readable in a moment.
                    tracing::error!(tag = %self.outbox.tag, "outbox read failed, trying again in {} s: {e}", READ_RETRY.as_secs());
                    state.paused_until = Some(now + READ_RETRY);
                    return;
                }
            }
        }
        while state.in_flight.len() < self.outbox.concurrency {
            let Some(held) = state.ready.pop_front().or_else(|| state.form(batch, now, draining)) else { break };
            let held = self.drop_expired(held);
            if !held.is_empty() {
                self.start(state, held);
            }
        }
    }

    /// Dead-letters the items past their vendor's window; returns the rest.
    fn drop_expired(&self, held: Vec<Held>) -> Vec<Held> {
        let now = now_ms();
        held.into_iter()
            .filter(|h| {
                let max_age = if ItemKind::of(&h.item) == Some(ItemKind::Plain) { self.plain_max_age_secs } else { self.batch().max_age_secs };
                if !rules::expired(h.item.created_ms, now, max_age) {
                    return true;
                }
                self.dead_letter(h, &format!("older than max_age_secs ({max_age} s, the vendor's window) after {} attempts", h.item.attempts));
                false
            })
            .collect()
    }

    fn start(&self, state: &mut State, held: Vec<Held>) {
        state.in_flight_items += held.len();
        let deliverer = self.deliverer.clone();
        let counters_tag = self.outbox.clone();
        // The batch logs where the worker logs (its subscriber travels with it, not the thread).
        use tracing::instrument::WithSubscriber;
        state.in_flight.spawn(async move {
            Counters::add(&counters_tag.counters.requests, 1);
            let plan = if ItemKind::of(&held[0].item) == Some(ItemKind::Tag) {
                let answer = deliverer.deliver(held.iter().map(|h| h.item.clone()).collect()).await?;
                rules::plan(held.len(), held[0].item.attempts, answer.result, || answer.broken)
            } else {
                Plan::PerItem(vec![plain(&*deliverer, &held[0].item).await?])
            };
            Some((held, plan))
        }.with_current_subscriber());
    }

    /// Acts on a batch's plan.
    fn settle(&self, state: &mut State, mut held: Vec<Held>, plan: Plan) {
        match plan {
            Plan::PerItem(results) => {
                for (h, result) in held.into_iter().zip(results) {
                    match result {
                        ItemResult::Delivered => {
                            Counters::add(&self.outbox.counters.delivered, 1);
                            self.deliverer.settled(&h.item, "delivered", None);
                            if let Err(e) = self.outbox.store.ack(h.pos) {
                                tracing::error!(tag = %self.outbox.tag, "outbox ack failed: {e}");
                            }
                        }
                        ItemResult::Retry(after) => self.retry(state, h, after),
                        ItemResult::Rejected(reason) => self.dead_letter(&h, &reason),
                    }
                }
            }
            Plan::Split(n) => {
                let rest = held.split_off(n.min(held.len()));
                state.ready.push_front(rest);
                state.ready.push_front(held);
            }
            Plan::RetryAll(after) => {
                if let Some(ms) = after {
                    let wait = Duration::from_millis(u64::from(ms));
                    let until = Instant::now() + wait;
                    tracing::warn!(tag = %self.outbox.tag, wait_ms = wait.as_millis() as u64, "the vendor asked to wait (Retry-After); this tag pauses");
                    state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
                }
                for h in held {
                    self.retry(state, h, after);
                }
            }
        }
    }

    fn retry(&self, state: &mut State, mut h: Held, after: Option<u32>) {
        Counters::add(&self.outbox.counters.retried, 1);
        let wait = self.backoff.delay(h.item.attempts, fastrand::f64(), after);
        h.item.attempts = h.item.attempts.saturating_add(1);
        self.deliverer.settled(&h.item, "retrying", Some(format!("attempt {} failed, next in {} ms", h.item.attempts, wait.as_millis())));
        state.seq += 1;
        state.retrying.insert((Instant::now() + wait, state.seq), h);
    }

    fn dead_letter(&self, h: &Held, reason: &str) {
        Counters::add(&self.outbox.counters.dead, 1);
        let reason = crate::output::bounded(reason, 2048);
        tracing::warn!(tag = %self.outbox.tag, item = %h.item.id, "dead-lettered: {reason}");
        self.deliverer.settled(&h.item, "dead", Some(reason.clone()));
        if let Err(e) = self.outbox.store.dead_letter(h.pos, &h.item, &reason) {
            tracing::error!(tag = %self.outbox.tag, "outbox dead letter failed: {e}");
        }
    }
}

async fn plain(deliverer: &dyn Deliver, item: &Item) -> Option<ItemResult> {
    match serde_json::from_slice::<PlainRequest>(&item.data) {
        Ok(request) => deliverer.send_plain(request).await,
        Err(e) => Some(ItemResult::Rejected(format!("the queued request cannot be read ({e})"))),
    }
}

/// What the worker holds between wakes.
#[derive(Default)]
struct State {
    /// Fresh items waiting for a batch to fill.
    forming: VecDeque<Held>,
    /// Batches ready to start (halves of a split batch, plain requests), in order.
    ready: VecDeque<Vec<Held>>,
    /// Items waiting for their retry time, by (due, sequence).
    retrying: BTreeMap<(Instant, u64), Held>,
    seq: u64,
    in_flight: JoinSet<Option<(Vec<Held>, Plan)>>,
    in_flight_items: usize,
    /// No batch starts before this: the vendor's `Retry-After`, or the outbox could not be read.
    paused_until: Option<Instant>,
}

impl State {
    /// Every item held and not in flight, for [`super::store::Store::hand_back`].
    fn into_held(self) -> Vec<(Position, Item)> {
        let State { forming, ready, retrying, .. } = self;
        forming.into_iter().chain(ready.into_iter().flatten()).chain(retrying.into_values()).map(|h| (h.pos, h.item)).collect()
    }

    fn held(&self) -> usize {
        self.forming.len() + self.ready.iter().map(Vec::len).sum::<usize>() + self.retrying.len() + self.in_flight_items
    }

    fn is_idle(&self, worker: &Worker) -> bool {
        self.forming.is_empty() && self.ready.is_empty() && self.retrying.is_empty() && worker.outbox.store.stats().pending == 0
    }

    /// Moves the retries that are due into the forming batch (tag items) or ready (plain).
    fn take_due_retries(&mut self, now: Instant, max_wait: Duration) {
        while let Some(entry) = self.retrying.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let held = entry.remove();
            if ItemKind::of(&held.item) == Some(ItemKind::Plain) {
                self.ready.push_back(vec![held]);
            } else {
                // Retries go first, and do not wait for the batch to fill again: they already
                // waited. (`checked_sub`: an `Instant` cannot go back past the clock's start.)
                self.forming.push_front(Held { since: now.checked_sub(max_wait).unwrap_or(now), ..held });
            }
        }
    }

    /// A batch from the forming items, if it is full or its oldest item has waited long enough.
    fn form(&mut self, batch: Batch, now: Instant, draining: bool) -> Option<Vec<Held>> {
        let oldest = self.forming.front()?.since;
        let (mut items, mut bytes) = (0usize, 0usize);
        for h in &self.forming {
            if items == batch.max_items as usize || (items > 0 && bytes + h.item.data.len() > batch.max_bytes as usize) {
                break;
            }
            items += 1;
            bytes += h.item.data.len();
        }
        let full = items < self.forming.len() || items == batch.max_items as usize;
        if !full && !draining && now < oldest + Duration::from_millis(u64::from(batch.max_wait_ms)) {
            return None;
        }
        Some(self.forming.drain(..items).collect())
    }

    /// The next time something becomes due: a forming batch's wait, a retry, the pause's end.
    /// With every batch slot taken or the tag paused, only a finished batch (or the pause's
    /// end) can change anything.
    fn next_wake(&self, worker: &Worker) -> Option<Instant> {
        if self.paused_until.is_some() {
            return self.paused_until;
        }
        if self.in_flight.len() >= worker.outbox.concurrency {
            return None;
        }
        if !self.ready.is_empty() {
            return Some(Instant::now());
        }
        let forming = self.forming.front().map(|h| h.since + Duration::from_millis(u64::from(worker.batch().max_wait_ms)));
        let retry = self.retrying.keys().next().map(|(due, _)| *due);
        [forming, retry].into_iter().flatten().min()
    }
}
