//! `sluice:template/http`: outbound requests, through the one choke point in
//! [`crate::outbound`].

use crate::bindings::http::{Host, IncomingResponse, OutgoingRequest};
use crate::bindings::types::Error;
use crate::outbound::{OutboundError, OutboundRequest};
use crate::state::Invocation;

/// Most requests one `send-all` takes.
const MAX_SEND_ALL: usize = 64;

fn outbound(r: OutgoingRequest) -> OutboundRequest {
    OutboundRequest::new(r.method, r.url, r.headers, r.body, r.timeout_ms)
}

impl Host for Invocation {
    async fn send(&mut self, request: OutgoingRequest) -> Result<IncomingResponse, Error> {
        self.audit_before_sending();
        let url_for_log = crate::outbound::without_query(&request.url).to_string();
        // Waiting on the vendor is paid for by wall_ms: the CPU budget counts only what runs.
        let result = self.services.send(&self.template, (self.phase.export(self.template.declaration.kind), &self.request.id), outbound(request)).await;
        self.answer(&url_for_log, result)
    }

    async fn send_all(&mut self, requests: Vec<OutgoingRequest>) -> Result<Vec<Result<IncomingResponse, Error>>, Error> {
        if requests.len() > MAX_SEND_ALL {
            return Err(Error::Invalid(format!("send-all takes at most {MAX_SEND_ALL} requests (got {})", requests.len())));
        }
        self.audit_before_sending();
        let urls: Vec<String> = requests.iter().map(|r| crate::outbound::without_query(&r.url).to_string()).collect();
        let (services, template) = (self.services.clone(), self.template.clone());
        let (export, request_id) = (self.phase.export(template.declaration.kind), self.request.id.clone());
        let results = futures::future::join_all(requests.into_iter().map(|r| {
            let (services, template, request_id) = (&services, &template, &request_id);
            async move { services.send(template, (export, request_id), outbound(r)).await }
        }))
        .await;
        Ok(urls.iter().zip(results).map(|(url, result)| self.answer(url, result)).collect())
    }
}

impl Invocation {
    /// A template sending from inside the visitor's request (not through its outbox): the
    /// audit of the decision that let it run is written out before the vendor hears of it
    /// ([`crate::output::Batched`]). A `deliver` sends committed items, audited already.
    fn audit_before_sending(&self) {
        if matches!(self.phase, crate::state::Phase::InRequest) {
            crate::output::flush_batched();
        }
    }

    /// One outbound result as the template gets it; logged, and a denial recorded.
    fn answer(&mut self, url_for_log: &str, result: Result<crate::outbound::OutboundResponse, OutboundError>) -> Result<IncomingResponse, Error> {
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
                    OutboundError::Policy(refusal) => Invocation::network_refusal(url_for_log, &refusal),
                    OutboundError::Invalid(m) => Error::Invalid(m),
                    OutboundError::Timeout => Error::Timeout,
                    other => Error::Failed(other.to_string()),
                })
            }
        }
    }
}
