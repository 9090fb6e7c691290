//! What happened to one request: who claimed it, and each tag's outcome per event. Logged as
//! one line per request; returned by [`crate::Container::handle`] for tests and tooling.

use std::time::Duration;

use crate::request::RequestData;

/// How a template invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned success.
    Ok,
    /// It ran and decided there was nothing to do for this event, for this reason (a tag's
    /// `fired::skipped`). Not a failure.
    Skipped(String),
    /// It returned an error.
    Failed(String),
    /// It trapped (panicked, hit `unreachable`, ...).
    Trapped(String),
    /// It ran past its CPU budget and was stopped.
    CpuLimit,
    /// It tried to grow memory past its cap and was stopped.
    MemoryLimit,
    /// It did not finish within the wall-clock limit.
    TimedOut,
    /// The request's deadline passed before it finished, or before it could start.
    DeadlinePassed,
    /// It was not run: these purposes it needs were not granted.
    BlockedByConsent(Vec<String>),
    /// No sandbox ran: the event was written to the tag's outbox for its `deliver` phase.
    Queued,
    /// The event should have been queued and was not (the outbox is full or failing): it is
    /// lost for this tag, and counted.
    NotQueued(String),
}

impl Outcome {
    /// Whether the invocation succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Skipped(_) | Outcome::Queued)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
            Outcome::Failed(m) => write!(f, "failed: {m}"),
            Outcome::Trapped(m) => write!(f, "trapped: {m}"),
            Outcome::CpuLimit => f.write_str("stopped: CPU time limit exceeded ([limits] cpu_ms)"),
            Outcome::MemoryLimit => f.write_str("stopped: memory limit exceeded ([limits] memory_mb)"),
            Outcome::TimedOut => f.write_str("stopped: wall-clock limit exceeded ([limits] wall_ms)"),
            Outcome::DeadlinePassed => f.write_str("stopped or not started: the request's deadline passed ([limits] request_ms)"),
            Outcome::BlockedByConsent(missing) => write!(f, "blocked by consent: {} not granted", missing.join(", ")),
            Outcome::Queued => f.write_str("queued"),
            Outcome::NotQueued(why) => write!(f, "not queued: {why}"),
        }
    }
}

impl Outcome {
    /// Its kind without the message: the `outcome` label of `sluice_tag_runs_total`, the preview's badge.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
            Outcome::Trapped(_) => "trapped",
            Outcome::CpuLimit => "cpu_limit",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::TimedOut => "timed_out",
            Outcome::DeadlinePassed => "deadline_passed",
            Outcome::BlockedByConsent(_) => "blocked_by_consent",
            Outcome::Queued => "queued",
            Outcome::NotQueued(_) => "not_queued",
        }
    }
}

/// One client's run on a request.
#[derive(Debug, Clone)]
pub struct ClientRun {
    /// Client name.
    pub client: String,
    /// How it ended (`Ok` whether it claimed or passed).
    pub outcome: Outcome,
    /// Whether it claimed the request.
    pub claimed: bool,
    /// Host calls it was refused.
    pub denials: Vec<String>,
    /// Where its time went.
    pub phases: Phases,
}

/// One tag's run for one event.
#[derive(Debug, Clone)]
pub struct TagRun {
    /// Tag name.
    pub tag: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Host calls it was refused.
    pub denials: Vec<String>,
    /// How long it took, from asking for a pool slot to the instance being dropped.
    pub duration: Duration,
    /// Where that time went (zero for a tag that did not run).
    pub phases: Phases,
    /// Items it put in its outbox (by `enqueue` or `send-later`, or the event itself for a tag
    /// without `fire`).
    pub queued: usize,
}

/// The phases of one sandboxed invocation. Every invocation gets a fresh instance, so the
/// fixed cost of a template is `instantiate` + `teardown`; `call` is its own work, host calls
/// included. Wall-clock times: the tags of one event run concurrently, so a phase can include
/// time another tag ran while this one waited (after a host call or an epoch yield). The
/// benchmarks report these per tag (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// A fresh store and instance: pool slot, imports resolved, memory image in place.
    pub instantiate: Duration,
    /// The template's export (`fire`), until it returned, trapped or ran out of time.
    pub call: Duration,
    /// Dropping the store: the pool resets the slot's memory and tables for the next instance.
    pub teardown: Duration,
}

/// The tags run for one event, in start (priority) order.
#[derive(Debug, Clone)]
pub struct EventTrace {
    /// The event's `event_name`.
    pub event_name: String,
    /// Tags whose trigger matched.
    pub tags: Vec<TagRun>,
}

/// Everything that happened to one request.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    /// Request id.
    pub request_id: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The client that claimed it.
    pub claimed_by: Option<String>,
    /// The clients that ran, in run order: those that passed, then the one that claimed.
    pub clients: Vec<ClientRun>,
    /// Clients that failed, and events a client produced that were dropped.
    pub client_errors: Vec<(String, String)>,
    /// Per event, the tags that ran.
    pub events: Vec<EventTrace>,
    /// Response status.
    pub status: u16,
    /// Tags run after the response was sent.
    pub tags_in_background: bool,
    /// Time to the response (or to the tags' end, for the background log line).
    pub duration: Duration,
}

impl RequestTrace {
    pub(crate) fn new(request: &RequestData) -> Self {
        RequestTrace {
            request_id: request.id.clone(),
            method: request.method.clone(),
            path: request.path.clone(),
            claimed_by: None,
            clients: Vec::new(),
            client_errors: Vec::new(),
            events: Vec::new(),
            status: 0,
            tags_in_background: false,
            duration: Duration::ZERO,
        }
    }

    /// The run of `tag` for the `n`th event, if it ran.
    pub fn tag_run(&self, n: usize, tag: &str) -> Option<&TagRun> {
        self.events.get(n)?.tags.iter().find(|r| r.tag == tag)
    }

    /// Writes the one-line summary.
    pub fn log(&self) {
        let tags: Vec<String> = self
            .events
            .iter()
            .flat_map(|e| e.tags.iter().map(move |t| format!("{}/{}={}", e.event_name, t.tag, t.outcome)))
            .collect();
        let client_errors: Vec<String> = self.client_errors.iter().map(|(c, e)| format!("{c}: {e}")).collect();
        let claimed_by = self.claimed_by.as_deref().unwrap_or("-");
        if self.claimed_by.is_none() {
            tracing::warn!(request_id = %self.request_id, method = %self.method, path = %self.path, status = self.status,
                client_errors = ?client_errors, "no client claimed the request");
        } else {
            tracing::info!(request_id = %self.request_id, method = %self.method, path = %self.path, status = self.status,
                client = claimed_by, events = self.events.len(), tags = ?tags, client_errors = ?client_errors,
                duration_us = self.duration.as_micros() as u64, "request");
        }
    }
}
