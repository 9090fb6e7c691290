//! A tag template that POSTs events, in batches, as a JSON array of event objects, to a URL the
//! operator configures.
//!
//! It has no per-request phase: it needs nothing from the visitor's request, so the host queues
//! each event in the tag's outbox and calls `deliver` with up to 100 events at a time (an
//! operator sets `delivery = { max_items = 1 }` for one event per request, or more up to
//! 1,000). The template declares `outbound = ["*"]` because it cannot know the URL; the
//! operator's grant (for example `outbound = ["https://hooks.example.com/"]`) is what limits
//! where it can send. An optional `token` (a secret, so given as `${ENV_VAR}`) is sent as
//! `Authorization: Bearer`. Each event carries its `x-sluice-event-id` (the host's event id,
//! stable across retries) so the receiver can drop redeliveries.
//!
//! Answers: `2xx` delivers the batch; `408`, `429` (honouring `Retry-After`) and `5xx` retry it;
//! any other status rejects it (the host splits the batch to find the event the receiver
//! refuses, and dead-letters it).

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use sluice_sdk::prelude::*;
use sluice_sdk::{Batch, BatchFailure, DeliverHost, Delivery, HttpRequest, Item, ItemResult, Kind, Manifest, Parameter, Permissions, Tag};

/// The webhook tag.
pub struct Webhook;

/// The header-like key each event gets for deduplication.
pub const EVENT_ID_KEY: &str = "x-sluice-event-id";

impl Tag for Webhook {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Tag,
        name: "webhook",
        version: env!("CARGO_PKG_VERSION"),
        description: "POSTs events, batched, as a JSON array to a configured URL.",
        permissions: Permissions { event_data: &["*"], outbound: &["*"], logging: true, ..Permissions::NONE },
        consent: &[],
        parameters: &[
            Parameter::required("url", "Where to POST events."),
            Parameter::optional("token", "Bearer token sent in the Authorization header.").secret(),
        ],
        delivery: Delivery::batched(Batch { max_items: 100, max_bytes: 4 << 20, max_wait_ms: 200, max_age_secs: 7 * 86_400 }),
    };

    fn deliver(host: &DeliverHost, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
        let config = host.config();
        let url = config.require_str("url").map_err(|e| BatchFailure::Reject(e.to_string()))?;
        let mut request = HttpRequest::post(url).json_text(body(batch));
        if let Some(token) = config.str("token") {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = host.http().send(&request).map_err(|e| {
            host.log().info(&format!("webhook not reached, will retry: {e}"));
            BatchFailure::Retry(None)
        })?;
        if let Some(failure) = response.batch_failure("the webhook") {
            host.log().warn(&format!("webhook answered HTTP {}", response.status));
            return Err(failure);
        }
        Ok(vec![ItemResult::Delivered; batch.len()])
    }
}

/// The request body: the events as the host holds them, each with its event id, in a JSON
/// array — spliced as text, without parsing each event inside the sandbox.
pub fn body(batch: &[Item]) -> String {
    let mut out = String::with_capacity(batch.iter().map(|i| i.data.len() + 64).sum::<usize>() + 2);
    out.push('[');
    for (n, item) in batch.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        // Every queued event is a JSON object; `{"k":…,` + the rest of it after its `{`.
        let rest = item.data.trim_start().strip_prefix('{').unwrap_or("}");
        out.push_str(&format!("{{\"{EVENT_ID_KEY}\":{}", sluice_sdk::json::to_string(&item.id).unwrap_or_default()));
        if !rest.trim_start().starts_with('}') {
            out.push(',');
        }
        out.push_str(rest);
    }
    out.push(']');
    out
}

sluice_sdk::export_tag!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{Error, HttpResponse, PermissionSet, Value, json};

    fn event() -> Value {
        json!({"event_name": "purchase", "value": 30, "currency": "EUR", "event_id": "T-1"})
    }

    fn operator_grant() -> PermissionSet {
        PermissionSet {
            event_data: vec!["*".into()],
            outbound: vec!["https://hooks.example.com/".into()],
            logging: true,
            ..Default::default()
        }
    }

    fn webhook() -> MockHost {
        MockHost::new().param("url", "https://hooks.example.com/in").secret_param("token", "s3cret").grant(operator_grant())
    }

    #[test]
    fn events_are_queued_by_the_host_and_posted_as_one_json_array_with_the_token() {
        let mut mock = webhook().stub("https://hooks.example.com/", HttpResponse::new(204, ""));
        for n in 0..3 {
            let mut e = event();
            e["event_id"] = json!(format!("T-{n}"));
            mock = mock.event(e);
            mock.run_tag::<Webhook>().expect("queued");
        }
        assert!(mock.sent().is_empty(), "nothing is sent from the request");
        let report = mock.deliver_queued::<Webhook>();
        assert_eq!(report.delivered, ["T-0", "T-1", "T-2"]);
        assert_eq!(mock.sent().len(), 1, "one request for the batch");
        let sent = &mock.sent()[0];
        assert_eq!((sent.method.as_str(), sent.url.as_str()), ("POST", "https://hooks.example.com/in"));
        assert!(sent.headers.contains(&("authorization".into(), "Bearer s3cret".into())));
        assert!(sent.headers.contains(&("content-type".into(), "application/json".into())));
        let body: Value = serde_json::from_slice(&sent.body).expect("json body");
        let mut first = event();
        first["event_id"] = json!("T-0");
        first[EVENT_ID_KEY] = json!("T-0");
        assert_eq!(body[0], first);
        assert_eq!(body.as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn the_body_splices_events_and_ids_exactly() {
        let item = |id: &str, data: &str| Item { id: id.into(), attempt: 0, created_ms: 0, data: data.into(), cookies: Vec::new() };
        let text = body(&[item("a\"b", r#"{"x":1}"#), item("c", "{}")]);
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed, json!([{"x": 1, EVENT_ID_KEY: "a\"b"}, {EVENT_ID_KEY: "c"}]));
    }

    #[test]
    fn a_url_outside_the_operator_grant_is_refused_and_nothing_is_sent() {
        let mut mock = MockHost::new().event(event()).param("url", "https://attacker.example.net/steal").grant(operator_grant());
        mock.run_tag::<Webhook>().expect("queued");
        let report = mock.deliver_queued::<Webhook>();
        assert!(mock.sent().is_empty());
        assert_eq!(mock.denials().len(), 1);
        assert_eq!(report.retry.len(), 1, "a refused send is retried, not lost (the operator may fix the grant)");
    }

    #[test]
    fn outages_and_throttling_retry_and_a_refused_event_is_isolated_and_dead_lettered() {
        let throttled = HttpResponse { status: 429, headers: vec![("retry-after".into(), "30".into())], body: Vec::new() };
        let mut mock = webhook().event(event()).stub_sequence(
            "https://hooks.example.com/",
            vec![Ok(HttpResponse::new(503, "down")), Ok(throttled), Ok(HttpResponse::new(204, ""))],
        );
        mock.run_tag::<Webhook>().expect("queued");
        assert_eq!(mock.deliver_queued::<Webhook>().retry, [("T-1".to_string(), None)], "503: retry");
        assert_eq!(mock.deliver_queued::<Webhook>().retry, [("T-1".to_string(), Some(30_000))], "429: after Retry-After");
        assert_eq!(mock.deliver_queued::<Webhook>().delivered, ["T-1"]);

        // A receiver that refuses any batch holding the bad event: the host halves until it
        // stands alone.
        let mut mock = webhook().stub_sequence(
            "https://hooks.example.com/",
            vec![Ok(HttpResponse::new(400, "bad")), Ok(HttpResponse::new(204, "")), Ok(HttpResponse::new(400, "bad"))],
        );
        for id in ["a", "b"] {
            let mut e = event();
            e["event_id"] = json!(id);
            mock = mock.event(e);
            mock.run_tag::<Webhook>().expect("queued");
        }
        let report = mock.deliver_queued::<Webhook>();
        assert_eq!(report.batches, [vec!["a".to_string(), "b".into()], vec!["a".into()], vec!["b".into()]]);
        assert_eq!(report.delivered, ["a"]);
        assert_eq!(report.dead, [("b".to_string(), "the webhook answered HTTP 400: bad".to_string())]);
    }

    #[test]
    fn a_missing_url_parameter_is_a_clear_error() {
        let mut mock = MockHost::new().event(event()).grant(operator_grant());
        let err: Error = mock.run_tag::<Webhook>().unwrap_err();
        assert!(err.to_string().contains("the host refuses to load this configuration") && err.to_string().contains("\"url\" is required"), "{err}");
    }
}
