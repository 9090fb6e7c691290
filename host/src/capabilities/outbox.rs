//! `sluice:template/outbox`: handing the host work to deliver later, durably
//! ([`crate::delivery`]).

use sluice_policy::delivery as rules;

use crate::bindings::http::OutgoingRequest;
use crate::bindings::outbox::Host;
use crate::bindings::types::Error;
use crate::delivery::{ItemKind, PlainRequest, QueueError, TagOutbox};
use crate::outbound::OutboundError;
use crate::state::{Invocation, Phase};

impl Invocation {
    /// The outbox, if this invocation may queue one more item under `id`.
    fn outbox_for(&self, id: &str) -> Result<std::sync::Arc<TagOutbox>, Error> {
        if matches!(self.phase, Phase::Deliver(_)) {
            return Err(Error::Invalid(rules::NO_QUEUEING_IN_DELIVER.into()));
        }
        rules::check_queueing(id, self.queued).map_err(Error::Invalid)?;
        self.outbox.clone().ok_or_else(|| Error::Invalid(rules::NO_OUTBOX.into()))
    }

    fn queued(&mut self, id: &str, result: Result<(), QueueError>) -> Result<(), Error> {
        match result {
            Ok(()) => {
                self.queued += 1;
                self.services.telemetry.preview.queued(&self.request.id, &self.template.name, id);
                Ok(())
            }
            Err(QueueError::TooLarge { size, max }) => Err(Error::Invalid(QueueError::TooLarge { size, max }.to_string())),
            Err(e) => {
                tracing::warn!(request_id = %self.request.id, template = %self.template.name, "item not queued: {e}");
                Err(Error::Failed(e.to_string()))
            }
        }
    }
}

impl Host for Invocation {
    async fn enqueue(&mut self, id: String, item: String) -> Result<(), Error> {
        let outbox = self.outbox_for(&id)?;
        let Some(batch) = outbox.batch else {
            return Err(Error::Invalid(rules::NO_DELIVER_PHASE.into()));
        };
        rules::check_item(&item, batch.max_bytes).map_err(Error::Invalid)?;
        let result = outbox.push(ItemKind::Tag, id.clone(), item.into_bytes());
        self.queued(&id, result)
    }

    async fn send_later(&mut self, id: String, request: OutgoingRequest) -> Result<(), Error> {
        let outbox = self.outbox_for(&id)?;
        match self.services.outbound.check_url(&self.template.grant, &request.url) {
            Ok(()) => {}
            Err(OutboundError::Denied(denial)) => return Err(self.deny(denial)),
            Err(OutboundError::Policy(refusal)) => return Err(Invocation::network_refusal(&request.url, &refusal)),
            Err(e) => return Err(Error::Invalid(e.to_string())),
        }
        let plain = PlainRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        let data = serde_json::to_vec(&plain).map_err(|e| Error::Invalid(e.to_string()))?;
        let result = outbox.push(ItemKind::Plain, id.clone(), data);
        self.queued(&id, result)
    }
}
