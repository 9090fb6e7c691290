//! A client template that claims `POST /collect` (path configurable) with a JSON body holding one
//! event object or a list of them: the simplest way for a site or a backend to send events to a
//! Sluice container.
//!
//! Each event must be a JSON object with a non-empty string `event_name`. A body that is not
//! valid is still claimed (it was meant for this endpoint) but answered with `400` and a reason,
//! and no event reaches the tags: a half-valid batch is rejected whole, so a sender can retry it
//! without creating duplicates.
//!
//! When an event has no `user_agent` or `ip_override`, the client fills them from the request if
//! the operator granted the `user-agent` header and the remote address; without those grants it
//! carries on without them.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use sluice_sdk::prelude::*;
use sluice_sdk::{Claim, Client, Error, Host, Kind, Manifest, Parameter, Permissions, Value, json};

/// The JSON collect client.
pub struct JsonCollect;

impl Client for JsonCollect {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Client,
        name: "json-collect",
        version: env!("CARGO_PKG_VERSION"),
        description: "Claims POST /collect with a JSON event or list of events.",
        permissions: Permissions {
            body: true,
            request_headers: &["user-agent"],
            remote_address: true,
            response_headers: &["content-type"],
            ..Permissions::NONE
        },
        consent: &[],
        parameters: &[Parameter::optional("path", "Path to claim.").default("/collect")],
        delivery: sluice_sdk::Delivery::IN_REQUEST,
    };

    fn run(host: &Host) -> Result<Claim, Error> {
        let request = host.request();
        let path = host.config().require_str("path")?;
        if request.method() != "POST" || request.path() != path {
            return Ok(Claim::Pass);
        }
        let mut events = match parse_events(&request.body()?) {
            Ok(events) => events,
            Err(reason) => {
                respond(host, 400, &json!({ "error": reason }))?;
                return Ok(Claim::Claimed(Vec::new()));
            }
        };
        let user_agent = request.header("user-agent").unless_denied()?;
        let ip = request.remote_address().unless_denied()?.map(|ip| ip.to_string());
        for event in &mut events {
            if let (Some(ua), Value::Object(map)) = (&user_agent, &mut *event) {
                map.entry("user_agent").or_insert_with(|| Value::String(ua.clone()));
            }
            if let (Some(ip), Value::Object(map)) = (&ip, &mut *event) {
                map.entry("ip_override").or_insert_with(|| Value::String(ip.clone()));
            }
        }
        respond(host, 200, &json!({ "received": events.len() }))?;
        Ok(Claim::Claimed(events))
    }
}

fn respond(host: &Host, status: u16, body: &Value) -> Result<(), Error> {
    let response = host.response();
    response.set_status(status)?;
    // Cosmetic: without the grant the answer is still correct (the host logs the refusal).
    let _ = response.set_header("content-type", "application/json");
    response.set_body(body.to_string().as_bytes())
}

/// The events in a collect body, or why the body is not acceptable.
pub fn parse_events(body: &[u8]) -> Result<Vec<Value>, String> {
    let value: Value = json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let events = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err("body must be an event object or a list of event objects".into()),
    };
    for (i, event) in events.iter().enumerate() {
        match event.get("event_name") {
            Some(Value::String(name)) if !name.is_empty() => {}
            _ => return Err(format!("event {i} has no \"event_name\" string")),
        }
    }
    Ok(events)
}

sluice_sdk::export_client!(JsonCollect);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::PermissionSet;

    fn post(body: &str) -> MockHost {
        MockHost::new()
            .method("POST")
            .path("/collect")
            .header("User-Agent", "Mozilla/5.0 test")
            .remote_address("203.0.113.9")
            .body(body)
    }

    #[test]
    fn claims_a_single_event_and_adds_request_context() {
        let mut mock = post(r#"{"event_name":"purchase","value":12.5}"#);
        let Claim::Claimed(events) = mock.run_client::<JsonCollect>().expect("runs") else { panic!("not claimed") };
        assert_eq!(
            events,
            vec![json!({"event_name":"purchase","value":12.5,"user_agent":"Mozilla/5.0 test","ip_override":"203.0.113.9"})]
        );
        assert_eq!(mock.response().status, Some(200));
        assert_eq!(mock.response().body.as_deref(), Some(br#"{"received":1}"#.as_slice()));
    }

    #[test]
    fn claims_a_list_and_keeps_values_the_sender_set() {
        let mut mock = post(r#"[{"event_name":"a","user_agent":"server"},{"event_name":"b"}]"#);
        let Claim::Claimed(events) = mock.run_client::<JsonCollect>().expect("runs") else { panic!("not claimed") };
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["user_agent"], "server");
        assert_eq!(events[1]["user_agent"], "Mozilla/5.0 test");
    }

    #[test]
    fn passes_on_other_paths_methods_and_configured_path() {
        let mut mock = MockHost::new().method("GET").path("/collect");
        assert_eq!(mock.run_client::<JsonCollect>(), Ok(Claim::Pass));
        let mut mock = post("{}").path("/other");
        assert_eq!(mock.run_client::<JsonCollect>(), Ok(Claim::Pass));
        let mut mock = post(r#"{"event_name":"x"}"#).path("/events").param("path", "/events");
        assert!(matches!(mock.run_client::<JsonCollect>(), Ok(Claim::Claimed(e)) if e.len() == 1));
    }

    #[test]
    fn a_malformed_body_gets_400_and_no_events() {
        for body in ["not json", "42", r#"[{"event_name":"ok"},{"value":1}]"#, r#"{"event_name":""}"#] {
            let mut mock = post(body);
            assert_eq!(mock.run_client::<JsonCollect>(), Ok(Claim::Claimed(vec![])), "{body}");
            assert_eq!(mock.response().status, Some(400), "{body}");
            let reply: Value = json::from_slice(mock.response().body.as_deref().unwrap_or_default()).expect("json");
            assert!(reply["error"].is_string(), "{body}");
        }
    }

    #[test]
    fn without_the_optional_grants_it_carries_on_and_the_denials_are_recorded() {
        let grant = PermissionSet { body: true, ..Default::default() };
        let mut mock = post(r#"{"event_name":"page_view"}"#).grant(grant);
        let Claim::Claimed(events) = mock.run_client::<JsonCollect>().expect("runs") else { panic!("not claimed") };
        assert_eq!(events, vec![json!({"event_name":"page_view"})]);
        assert_eq!(mock.response().status, Some(200));
        assert_eq!(mock.response().header("content-type"), None);
        assert_eq!(mock.denials().len(), 3, "user-agent, remote address, content-type: {:?}", mock.denials());
    }

    #[test]
    fn without_the_body_grant_it_cannot_work_and_says_so() {
        let mut mock = post(r#"{"event_name":"page_view"}"#).grant(PermissionSet::default());
        let err = mock.run_client::<JsonCollect>().unwrap_err();
        assert!(err.is_permission_denied() && err.to_string().contains("the request body"), "{err}");
    }
}
