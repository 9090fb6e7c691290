//! Prometheus metrics: what the admin listener's `/metrics` serves, in the OpenMetrics text
//! format, through the `prometheus-client` crate (maintained by the Prometheus project).
//!
//! One [`Metrics`] lives for the whole process: a reload swaps the container, not the counters,
//! so a rate over a reload is not a reset. Everything is recorded from what the pipeline
//! already knows — the finished [`RequestTrace`], a consent decision, an outbound answer — so a
//! metric and the trace of the same request can never disagree. The outbox gauges are read at
//! scrape time from the running container's queues (`Metrics::encode`).
//!
//! Every name, its labels and its unit are listed in the README ("Metrics"); the names follow
//! Prometheus conventions: `sluice_` prefix, base units (seconds, bytes), `_total` on counters.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::trace::{Phases, RequestTrace};

/// The histogram buckets of an invocation phase, in seconds: 10 µs to ~2.6 s, ×4 each. An
/// instantiation is tens of microseconds, a vendor call inside `fire` hundreds of milliseconds.
fn phase_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

type PhaseHistograms = Family<InvocationLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    client: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagRunLabels {
    tag: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsentLabels {
    purpose: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabel {
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    template: String,
    /// `run` (a client), `fire` (a tag in the request), `deliver` (a batch).
    export: String,
    /// `instantiate`, `call` or `teardown` ([`Phases`]).
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    template: String,
    /// The vendor's HTTP status, or `error` (not completed: refused connection, timeout, too
    /// large) or `refused` (the grant or the `[outbound]` rules stopped it).
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagLabel {
    tag: String,
}

/// One outbox as a scrape sees it: the store's state and the worker's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboxSample {
    pub(crate) tag: String,
    pub(crate) pending: u64,
    pub(crate) oldest_age_secs: u64,
    pub(crate) retrying: u64,
    pub(crate) dead: u64,
    pub(crate) bytes_on_disk: u64,
    pub(crate) queued: u64,
    pub(crate) delivered: u64,
    pub(crate) retried: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) refused: u64,
    pub(crate) damaged: u64,
    pub(crate) requests: u64,
}

/// How a family reads its value from a sample.
type Read = fn(&OutboxSample) -> u64;

/// The outbox families, filled just before each scrape.
#[derive(Debug, Default)]
struct OutboxCollector {
    samples: Mutex<Vec<OutboxSample>>,
}

impl Collector for OutboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let gauges: [(&str, &str, Option<Unit>, Read); 5] = [
            ("outbox_pending_items", "Items waiting in the tag's queue (retrying ones included)", None, |s| s.pending),
            ("outbox_oldest_item_age", "Age of the oldest pending item", Some(Unit::Seconds), |s| s.oldest_age_secs),
            ("outbox_retrying_items", "Items waiting for their next attempt", None, |s| s.retrying),
            ("outbox_dead_letters", "Dead letters kept (sluice outbox dead lists them)", None, |s| s.dead),
            ("outbox_disk", "Disk space of the queue's files", Some(Unit::Bytes), |s| s.bytes_on_disk),
        ];
        for (name, help, unit, value) in &gauges {
            let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), prometheus_client::metrics::MetricType::Gauge)?;
            for s in samples.iter() {
                let gauge = ConstGauge::new(value(s) as i64);
                gauge.encode(metric.encode_family(&TagLabel { tag: s.tag.clone() })?)?;
            }
        }
        let counters: [(&str, &str, Read); 7] = [
            ("outbox_queued", "Items written to the tag's queue", |s| s.queued),
            ("outbox_delivered", "Items the vendor took", |s| s.delivered),
            ("outbox_retries", "Item attempts that are to be retried", |s| s.retried),
            ("outbox_dead_lettered", "Items given up on (rejected, or past the vendor's window)", |s| s.dead_lettered),
            ("outbox_refused", "Items not queued: the queue was full, or an item larger than a batch", |s| s.refused),
            ("outbox_batches", "Deliveries started: batches through deliver, and plain queued requests", |s| s.requests),
            ("outbox_damaged", "Items lost to a queue record damaged on disk after its commit (each is logged)", |s| s.damaged),
        ];
        for (name, help, value) in &counters {
            let mut metric = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for s in samples.iter() {
                let counter = ConstCounter::new(value(s));
                counter.encode(metric.encode_family(&TagLabel { tag: s.tag.clone() })?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    events: Family<ClientLabel, Counter>,
    tag_runs: Family<TagRunLabels, Counter>,
    consent: Family<ConsentLabels, Counter>,
    denials: Family<TemplateLabel, Counter>,
    phases: PhaseHistograms,
    outbound: Family<OutboundLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    outboxes: std::sync::Arc<OutboxCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, all empty.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests handled, by the client that claimed them (none: no client did) and response status", requests.clone());
        let events = Family::<ClientLabel, Counter>::default();
        registry.register("events", "Events the claiming client produced (after the per-request caps)", events.clone());
        let tag_runs = Family::<TagRunLabels, Counter>::default();
        registry.register(
            "tag_runs",
            "Matching tags per event, by outcome (ok, skipped, failed, trapped, cpu_limit, memory_limit, timed_out, deadline_passed, blocked_by_consent, queued, not_queued)",
            tag_runs.clone(),
        );
        let consent = Family::<ConsentLabels, Counter>::default();
        registry.register("consent_decisions", "Per event, each purpose a matching tag needs, by its resolved status (granted, denied, unset)", consent.clone());
        let denials = Family::<TemplateLabel, Counter>::default();
        registry.register("permission_denials", "Host calls a template made that its grant refused", denials.clone());
        let phases: PhaseHistograms = Family::new_with_constructor(phase_buckets);
        registry.register_with_unit(
            "invocation_duration",
            "Sandboxed invocations' time, by template, export (run, fire, deliver) and phase (instantiate, call, teardown)",
            Unit::Seconds,
            phases.clone(),
        );
        let outbound = Family::<OutboundLabels, Counter>::default();
        registry.register(
            "outbound_requests",
            "Outbound HTTP requests by template and vendor status (error: not completed; refused: the grant or the [outbound] rules)",
            outbound.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register("reloads", "Container reloads (SIGHUP or the admin endpoint), by result (ok, failed)", reloads.clone());
        let outboxes = std::sync::Arc::new(OutboxCollector::default());
        registry.register_collector(Box::new(outboxes.clone()));
        Metrics { registry, requests, events, tag_runs, consent, denials, phases, outbound, reloads, outboxes }
    }

    /// A finished request: its status, its events, each tag's outcome and each invocation's
    /// phases (the clients' too).
    pub(crate) fn request(&self, trace: &RequestTrace) {
        let client = trace.claimed_by.clone().unwrap_or_else(|| "none".into());
        self.requests.get_or_create(&RequestLabels { client: client.clone(), status: trace.status.to_string() }).inc();
        if trace.claimed_by.is_some() {
            self.events.get_or_create(&ClientLabel { client }).inc_by(trace.events.len() as u64);
        }
        for run in &trace.clients {
            self.phases(&run.client, "run", &run.phases);
        }
        for run in trace.events.iter().flat_map(|e| &e.tags) {
            self.tag_runs.get_or_create(&TagRunLabels { tag: run.tag.clone(), outcome: run.outcome.label().into() }).inc();
            if run.phases != Phases::default() {
                self.phases(&run.tag, "fire", &run.phases);
            }
        }
    }

    /// One invocation's phases.
    pub(crate) fn phases(&self, template: &str, export: &str, phases: &Phases) {
        for (phase, time) in [("instantiate", phases.instantiate), ("call", phases.call), ("teardown", phases.teardown)] {
            let labels = InvocationLabels { template: template.into(), export: export.into(), phase: phase.into() };
            self.phases.get_or_create(&labels).observe(time.as_secs_f64());
        }
    }

    /// One event's consent, for each purpose its matching tags need.
    pub(crate) fn consent(&self, purpose: &str, status: &str) {
        self.consent.get_or_create(&ConsentLabels { purpose: purpose.into(), decision: status.into() }).inc();
    }

    /// A host call the grant refused.
    pub(crate) fn denial(&self, template: &str) {
        self.denials.get_or_create(&TemplateLabel { template: template.into() }).inc();
    }

    /// An outbound request's end: the vendor's status, `error` or `refused`.
    pub(crate) fn outbound(&self, template: &str, status: &str) {
        self.outbound.get_or_create(&OutboundLabels { template: template.into(), status: status.into() }).inc();
    }

    /// A reload's result.
    pub(crate) fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "failed" }.into() }).inc();
    }

    /// The OpenMetrics text of everything, with these outbox samples.
    pub(crate) fn encode(&self, outboxes: Vec<OutboxSample>) -> String {
        *self.outboxes.samples.lock().unwrap_or_else(|p| p.into_inner()) = outboxes;
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
