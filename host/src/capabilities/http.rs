//! `sluice:template/http`: outbound requests, through the one choke point in
//! [`crate::outbound`].

use std::time::Duration;

use crate::bindings::http::{Host, IncomingResponse, OutgoingRequest};
use crate::bindings::types::Error;
use crate::outbound::{OutboundError, OutboundRequest};
use crate::state::Invocation;

impl Host for Invocation {
    async fn send(&mut self, request: OutgoingRequest) -> Result<IncomingResponse, Error> {
        let url_for_log = crate::outbound::without_query(&request.url).to_string();
        let outbound = OutboundRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout: request.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
        };
        // Waiting on the vendor is paid for by wall_ms, not the CPU budget.
        let sent = self.cpu.epoch();
        let result = self.services.outbound.send(&self.template.grant, outbound).await;
        self.cpu.waited_since(sent);
        let (id, name) = (&self.request.id, &self.template.name);
        match result {
            Ok(r) => {
                tracing::debug!(request_id = %id, template = %name, url = %url_for_log, status = r.status, "outbound");
                Ok(IncomingResponse { status: r.status, headers: r.headers, body: r.body })
            }
            Err(OutboundError::Denied(denial)) => Err(self.deny(denial)),
            Err(e) => {
                tracing::info!(request_id = %id, template = %name, url = %url_for_log, "outbound not completed: {e}");
                Err(match e {
                    OutboundError::Policy(refusal) => Error::PermissionDenied(refusal.to_string()),
                    OutboundError::Invalid(m) => Error::Invalid(m),
                    OutboundError::Timeout => Error::Timeout,
                    other => Error::Failed(other.to_string()),
                })
            }
        }
    }
}
