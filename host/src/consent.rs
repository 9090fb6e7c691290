//! The consent capability, host side: reads the signals out of the HTTP request, decides with
//! `sluice-policy`'s rules ([`sluice_policy::consent`], shared with the SDK's mock host) and
//! writes the audit record of every decision.
//!
//! Nothing is cached: each request is resolved from its own signals.

use std::sync::Arc;

use serde_json::Value;
use sluice_policy::consent::{AuditRecord, ConsentConfig, ConsentPolicy, ConsentState};
use sluice_policy::request::RequestSource;

use crate::error::AuditOpenError;
use crate::output::Batched;

/// A container's consent rules and its audit sink.
pub struct Consent {
    policy: ConsentPolicy,
    /// Written in batches, never later than the events the records vouch for
    /// ([`crate::output::Batched`]).
    audit: Option<Arc<Batched>>,
}

impl std::fmt::Debug for Consent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consent").field("policy", &self.policy).field("audits", &self.audit.is_some()).finish()
    }
}

impl Consent {
    /// The rules for `[consent]`; opens the audit file if one is configured.
    pub fn new(config: ConsentConfig) -> Result<Self, AuditOpenError> {
        let audit = match config.audit.as_str() {
            "off" | "" => None,
            "stdout" => Some(Batched::new("consent audit", Box::new(std::io::stdout()))),
            path => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| AuditOpenError { path: path.to_string(), error })?;
                Some(Batched::new("consent audit", Box::new(file)))
            }
        };
        Ok(Consent { policy: ConsentPolicy::new(config), audit })
    }

    /// The shared rules.
    pub fn policy(&self) -> &ConsentPolicy {
        &self.policy
    }

    /// Resolves one event's consent; a malformed signal is logged (and falls through).
    pub fn resolve(&self, request: &dyn RequestSource, event: &Value, request_id: &str) -> ConsentState {
        let resolution = self.policy.resolve(request, event);
        for why in &resolution.ignored {
            tracing::warn!(request_id, "{why}; falling back to the next source or the default");
        }
        resolution.state
    }

    /// Whether decisions are audited (`audit` is not `off`): callers skip building records
    /// nobody will read.
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }

    /// Audits one event's decisions, a JSON line each, through the output masker like every
    /// other line the process writes. Written out in batches ([`Batched`]): before any outbox
    /// commit of the event, and within [`crate::output::FLUSH_EVERY`].
    pub fn audit(&self, records: &[AuditRecord<'_>]) {
        let Some(sink) = &self.audit else { return };
        let mut lines = Vec::with_capacity(records.len() * 640);
        for record in records {
            if serde_json::to_writer(&mut lines, record).is_ok() {
                lines.push(b'\n');
            }
        }
        sink.write(&crate::output::mask_bytes(&lines));
    }
}
