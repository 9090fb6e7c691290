//! What every invocation of a container shares: the egress choke point, the consent rules and
//! audit sink, and the counters.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::consent::Consent;
use crate::outbound::{Outbound, OutboundError, OutboundRequest, OutboundResponse};

/// Refused host calls: how many (for [`crate::Container::denial_count`]), and which were
/// already logged at warn level. (The Prometheus counters are [`crate::metrics`]'s.)
#[derive(Debug, Default)]
pub struct DenialLog {
    /// Host calls refused by a grant.
    pub count: AtomicU64,
    /// Denials already logged at warn level, by template.
    warned: std::sync::Mutex<Warned>,
}

/// Denials already logged at warn level, by template, and how many in all.
#[derive(Debug, Default)]
struct Warned {
    by_template: std::collections::HashMap<String, std::collections::HashSet<String>>,
    count: usize,
}

/// How many distinct (template, denial) pairs are remembered for [`DenialLog::first_denial`];
/// beyond that (a template probing many names) every denial is logged at debug level. A
/// denial's text is bounded (the names in it are cut at [`sluice_manifest::MAX_NAME_SHOWN`]
/// characters), so this holds well under a megabyte, whatever templates ask for.
const WARNED_DENIALS_MAX: usize = 1024;

impl DenialLog {
    /// Whether this is the first time `template` met `denial`. A denial is a configuration
    /// hint ("add X to the grant") or a deliberate choice (an optional header withheld): worth
    /// one warning, not one per request — at thousands of requests a second those lines cost
    /// CPU and bury everything else. Every denial is still counted and kept in the trace.
    pub fn first_denial(&self, template: &str, denial: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by reference first: a denial seen before allocates nothing.
        if warned.by_template.get(template).is_some_and(|seen| seen.contains(denial)) || warned.count >= WARNED_DENIALS_MAX {
            return false;
        }
        warned.count += 1;
        warned.by_template.entry(template.to_string()).or_default().insert(denial.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::DenialLog;

    #[test]
    fn each_denial_warns_once_per_template_and_the_memory_is_bounded() {
        let m = DenialLog::default();
        assert!(m.first_denial("ga4", "header x"));
        assert!(!m.first_denial("ga4", "header x"), "the same denial again is not a first");
        assert!(m.first_denial("meta", "header x"), "another template's is");
        assert!(m.first_denial("ga4", "header y"));
        for i in 0..super::WARNED_DENIALS_MAX {
            m.first_denial("probe", &format!("header {i}"));
        }
        assert!(!m.first_denial("new", "never seen"), "past the bound nothing more is remembered");
    }
}

/// What every invocation shares.
#[derive(Debug)]
pub struct Services {
    /// The egress choke point.
    pub outbound: Outbound,
    /// Refused host calls, counted and warned about once.
    pub denials: DenialLog,
    /// Consent resolution, the gate's rules and the audit sink.
    pub consent: Consent,
    /// What outlives a reload: Prometheus metrics, the preview, request ids.
    pub telemetry: Arc<Telemetry>,
}

impl Services {
    /// Every outbound request a template makes goes through here: sent through the choke
    /// point (or recorded, for a `record_only` template), counted by status, and shown in the
    /// preview when `request_id` is being recorded.
    pub(crate) async fn send(
        &self,
        template: &crate::template::Template,
        (export, request_id): (&str, &str),
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        let preview = &self.telemetry.preview;
        let copy = preview.records(request_id).then(|| request.clone());
        let started = std::time::Instant::now();
        let result = if template.record_only {
            self.outbound.record(&template.grant, &request)
        } else {
            self.outbound.send(&template.grant, request).await
        };
        let status = match &result {
            Ok(r) => r.status.to_string(),
            Err(OutboundError::Denied(_) | OutboundError::Policy(_)) => "refused".into(),
            Err(_) => "error".into(),
        };
        self.telemetry.metrics.outbound(&template.name, &status);
        if let Some(sent) = copy {
            preview.exchange(request_id, || {
                let answer = result.as_ref().map(|r| (r.status, r.body.as_slice())).map_err(ToString::to_string);
                crate::preview::exchange_view(
                    (&template.name, export),
                    (&sent.method, &sent.url, &sent.headers, &sent.body),
                    answer,
                    (started.elapsed(), template.record_only),
                )
            });
        }
        result
    }
}

/// What the process keeps across reloads: every container a reload swaps in shares it, so
/// counters do not reset, the preview keeps its sessions and requests, and request ids stay
/// unique in the logs.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The preview's sessions and recorded requests.
    pub preview: crate::preview::Preview,
    next_id: AtomicU64,
}

impl Telemetry {
    /// A new request id, unique in this process.
    pub fn next_request_id(&self) -> String {
        format!("{:08x}", self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
}


