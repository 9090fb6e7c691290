//! GA4 Measurement Protocol requests (`/mp/collect`) → sGTM event data, so server-to-server
//! senders reach the same tags as browsers.
//!
//! Each `events[]` entry becomes one event: `name` → `event_name`, its `params` as top-level
//! keys, plus the request's `client_id`, `user_id`, `user_properties` (values unwrapped into
//! `x-ga-mp2-user_properties`), `user_data`, `ip_override`, `user_agent`, and the `consent`
//! object as `x-ga-mp2-consent`. The measurement id comes from the `measurement_id` query
//! parameter; the `api_secret` is deliberately not copied into event data.

use serde_json::{Map, Value};

use crate::hit::Invalid;

/// The most events Google accepts in one request.
pub const MAX_EVENTS: usize = 25;

/// Parses a Measurement Protocol body; `measurement_id` is the query parameter.
pub fn parse(body: &[u8], measurement_id: Option<&str>) -> Result<Vec<Map<String, Value>>, Invalid> {
    let request: Value = serde_json::from_slice(body).map_err(|e| Invalid(format!("body is not JSON: {e}")))?;
    let Value::Object(request) = request else {
        return Err(Invalid("body must be a JSON object".into()));
    };
    let client_id = match request.get("client_id").or_else(|| request.get("app_instance_id")) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(Invalid("client_id is missing".into())),
    };
    let events = match request.get("events") {
        Some(Value::Array(events)) if !events.is_empty() => events,
        _ => return Err(Invalid("events must be a non-empty list".into())),
    };
    if events.len() > MAX_EVENTS {
        return Err(Invalid(format!("{} events in one request; the limit is {MAX_EVENTS}", events.len())));
    }

    let mut shared = Map::new();
    shared.insert("client_id".into(), Value::String(client_id));
    if let Some(id) = measurement_id {
        shared.insert("x-ga-measurement_id".into(), Value::String(id.into()));
    }
    shared.insert("x-ga-protocol_version".into(), Value::String("2".into()));
    for (from, to) in [
        ("user_id", "user_id"),
        ("user_data", "user_data"),
        ("ip_override", "ip_override"),
        ("user_agent", "user_agent"),
        ("consent", "x-ga-mp2-consent"),
        ("timestamp_micros", "x-ga-mp2-timestamp_micros"),
        ("user_location", "x-ga-mp2-user_location"),
        ("device", "x-ga-mp2-device"),
    ] {
        if let Some(v) = request.get(from) {
            shared.insert(to.into(), v.clone());
        }
    }
    if let Some(Value::Object(props)) = request.get("user_properties") {
        let unwrapped: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), v.get("value").cloned().unwrap_or_else(|| v.clone())))
            .collect();
        shared.insert("x-ga-mp2-user_properties".into(), Value::Object(unwrapped));
    }

    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let name = match event.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n,
                _ => return Err(Invalid(format!("events[{i}] has no name"))),
            };
            let mut ev = shared.clone();
            if let Some(params) = event.get("params") {
                let Value::Object(params) = params else {
                    return Err(Invalid(format!("events[{i}].params must be an object")));
                };
                for (k, v) in params {
                    ev.insert(k.clone(), v.clone());
                }
            }
            if let Some(ts) = event.get("timestamp_micros") {
                ev.insert("x-ga-mp2-timestamp_micros".into(), ts.clone());
            }
            ev.insert("event_name".into(), Value::String(name.clone()));
            Ok(ev)
        })
        .collect()
}
