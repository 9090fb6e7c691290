//! Stage 2, claim: the clients, in run order, until one claims the request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use sluice_policy::consent::ConsentState;

use super::invoke::Invoked;
use super::{ClientEntry, Container};
use crate::bindings::client::Claim;
use crate::state::{RequestData, ResponseDraft};
use crate::trace::{Outcome, RequestTrace};

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
            match self.run_client(client, (request, response, deadline)).await {
                (Outcome::Ok, Some(events)) => {
                    claimed = Some((client, events));
                    break;
                }
                (Outcome::Ok, None) => {}
                (outcome, _) => trace.client_errors.push((client.template.name.clone(), outcome.to_string())),
            }
        }
        let (client, events) = claimed?;
        trace.claimed_by = Some(client.template.name.clone());

        let max_events = self.server.max_events_per_request;
        if events.len() > max_events {
            trace.client_errors.push((
                client.template.name.clone(),
                format!("{} events in one request; only the first {max_events} run tags ([server] max_events_per_request)", events.len()),
            ));
        }
        // Parsed here, outside the client's sandbox: the text is capped so that what parsing
        // allocates stays within the client's memory budget ([server] max_event_bytes).
        let max_bytes = self.server.event_bytes(&self.runtime.limits);
        let mut parsed = Vec::new();
        let mut total = 0usize;
        for (i, text) in events.iter().take(max_events).enumerate() {
            total = total.saturating_add(text.len());
            if total > max_bytes {
                trace.client_errors.push((
                    client.template.name.clone(),
                    format!("event {i} ({} bytes) and the rest pass {max_bytes} bytes of event JSON in one request ([server] max_event_bytes); dropped", text.len()),
                ));
                break;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(event @ Value::Object(_)) => parsed.push(event),
                _ => trace.client_errors.push((client.template.name.clone(), format!("event {i} is not a JSON object; dropped"))),
            }
        }
        Some((client, parsed))
    }

    /// Runs a client; `Some(events)` when it claimed.
    async fn run_client(
        &self,
        client: &ClientEntry,
        request: (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>, Instant),
    ) -> (Outcome, Option<Vec<String>>) {
        let pre = client.pre.clone();
        let invoked = self
            .invoke(
                &client.template,
                request,
                None,
                (ConsentState::default(), false),
                move |store| Box::pin(async move { pre.instantiate_async(store).await }),
                |instance, store| Box::pin(async move { instance.call_run(store).await }),
            )
            .await;
        match invoked.result {
            Invoked::Returned(Ok(Claim::Pass)) => (Outcome::Ok, None),
            Invoked::Returned(Ok(Claim::Claimed(events))) => (Outcome::Ok, Some(events)),
            Invoked::Returned(Err(e)) => (Outcome::from_template_error(e).masked(), None),
            other => (Outcome::from_invocation(other.map_unit()).masked(), None),
        }
    }
}
