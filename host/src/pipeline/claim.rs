//! Stage 2, claim: the clients, in run order, until one claims the request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use sluice_policy::claim::EventCaps;
use sluice_policy::consent::ConsentState;

use super::invoke::Invoked;
use super::{ClientEntry, Container};
use crate::bindings::client::Claim;
use crate::state::{Phase, RequestData, ResponseDraft};
use crate::trace::{ClientRun, Outcome, RequestTrace};

impl Container {
    /// Offers the request to each client in run order; the first to claim wins. Returns it
    /// with its events (JSON objects, at most `[server] max_events_per_request`); failures
    /// and dropped events go into the trace.
    pub(super) async fn claim(
        &self,
        (request, response, deadline): (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>, Instant),
        trace: &mut RequestTrace,
    ) -> Option<(&ClientEntry, Vec<Value>)> {
        let mut claimed = None;
        for client in &self.clients {
            let (run, events) = self.run_client(client, (request, response, deadline)).await;
            if run.outcome != Outcome::Ok {
                trace.client_errors.push((client.template.name.clone(), run.outcome.to_string()));
            }
            trace.clients.push(run);
            if let Some(events) = events {
                claimed = Some((client, events));
                break;
            }
        }
        let (client, events) = claimed?;
        trace.claimed_by = Some(client.template.name.clone());

        // Parsed here, outside the client's sandbox, within the caps (sluice_policy::claim).
        let admitted = sluice_policy::claim::admit(&events, self.event_caps());
        trace.client_errors.extend(admitted.dropped.into_iter().map(|why| (client.template.name.clone(), why)));
        Some((client, admitted.events))
    }

    /// The caps on a request's events (`[server] max_events_per_request`, `max_event_bytes`).
    pub(super) fn event_caps(&self) -> EventCaps {
        EventCaps { max_events: self.server.max_events_per_request, max_bytes: self.server.event_bytes(&self.runtime.limits) }
    }

    /// Runs a client; `Some(events)` when it claimed.
    async fn run_client(
        &self,
        client: &ClientEntry,
        request: (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>, Instant),
    ) -> (ClientRun, Option<Vec<String>>) {
        let pre = client.pre.clone();
        let invoked = self
            .invoke(
                &client.template,
                request,
                (None, ConsentState::default(), false),
                (Phase::InRequest, client.outbox.clone()),
                move |store| Box::pin(async move { pre.instantiate_async(store).await }),
                |instance, store| Box::pin(async move { instance.call_run(store).await }),
            )
            .await;
        let (outcome, events) = match invoked.result {
            Invoked::Returned(Ok(Claim::Pass)) => (Outcome::Ok, None),
            Invoked::Returned(Ok(Claim::Claimed(events))) => (Outcome::Ok, Some(events)),
            Invoked::Returned(Err(e)) => (Outcome::from_template_error(e).masked(), None),
            other => (Outcome::from_invocation(other.map_unit()).masked(), None),
        };
        let run = ClientRun { client: client.template.name.clone(), outcome, claimed: events.is_some(), denials: invoked.denials, phases: invoked.phases };
        (run, events)
    }
}
