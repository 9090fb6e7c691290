//! A fake Google Analytics collection endpoint. `/g/collect` needs `v=2`, `tid`, `cid` and `en`;
//! `/mp/collect` applies the Measurement Protocol limits (`shared/reference/domain.md` §6).
//! The real endpoint answers 2xx and silently drops what it does not accept; this fake answers
//! like Google's validation server instead (`validationMessages`, here with status 400), so a
//! test fails where Google would have dropped data.

use serde_json::{Value, json};

use crate::Received;

/// 204, or 400 with validation messages.
pub fn judge(request: &Received) -> (u16, String) {
    let messages = if request.path.ends_with("/mp/collect") { check_mp(request) } else { check_web(request) };
    if messages.is_empty() {
        (204, String::new())
    } else {
        let list: Vec<Value> = messages.iter().map(|m| json!({"description": m, "validationCode": "VALUE_INVALID"})).collect();
        (400, json!({"validationMessages": list}).to_string())
    }
}

/// Problems with a web hit: each of its events — the query alone, or the query with each body
/// line's parameters added (a line's own win), as gtag batches them (`domain.md` §5.1) — needs
/// `v=2`, `tid`, `cid` and `en`.
pub fn check_web(request: &Received) -> Vec<String> {
    let shared = form_pairs(&request.query);
    let body = String::from_utf8_lossy(&request.body);
    let lines: Vec<&str> = body.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect();
    let events: Vec<Vec<(String, String)>> = if lines.is_empty() {
        vec![shared]
    } else {
        lines
            .iter()
            .map(|line| {
                let own = form_pairs(line);
                let mut event: Vec<(String, String)> = shared.iter().filter(|(k, _)| !own.iter().any(|(o, _)| o == k)).cloned().collect();
                event.extend(own);
                event
            })
            .collect()
    };
    let mut problems = Vec::new();
    for (i, params) in events.iter().enumerate() {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("v") != Some("2") {
            problems.push(format!("event {i}: v=2 is required"));
        }
        for key in ["tid", "cid", "en"] {
            if get(key).is_none_or(str::is_empty) {
                problems.push(format!("event {i}: {key} is required"));
            }
        }
    }
    problems
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Problems with a Measurement Protocol request.
pub fn check_mp(request: &Received) -> Vec<String> {
    let params = form_pairs(&request.query);
    let mut problems = Vec::new();
    for key in ["measurement_id", "api_secret"] {
        if !params.iter().any(|(k, v)| k == key && !v.is_empty()) {
            problems.push(format!("{key} is required"));
        }
    }
    if request.body.len() >= 130 * 1024 {
        problems.push("body must be under 130 kB".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        problems.push("body is not JSON".into());
        return problems;
    };
    if body.get("client_id").and_then(Value::as_str).is_none() {
        problems.push("client_id is required".into());
    }
    let events = body.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
    if events.is_empty() || events.len() > 25 {
        problems.push(format!("{} events; 1 to 25 allowed", events.len()));
    }
    for event in &events {
        let name = event.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_name(name, 40) {
            problems.push(format!("event name {name:?} is invalid"));
        }
        let params = event.get("params").and_then(Value::as_object).cloned().unwrap_or_default();
        if params.len() > 25 {
            problems.push(format!("event {name} has {} params; at most 25", params.len()));
        }
        for (k, v) in &params {
            if k != "items" && !valid_name(k, 40) {
                problems.push(format!("param name {k:?} is invalid"));
            }
            if v.as_str().is_some_and(|s| s.chars().count() > 100) && k != "session_id" {
                problems.push(format!("param {k} is longer than 100 characters"));
            }
        }
    }
    if let Some(props) = body.get("user_properties").and_then(Value::as_object) {
        if props.len() > 25 {
            problems.push("more than 25 user properties".into());
        }
        for (k, v) in props {
            if !valid_name(k, 24) || v["value"].as_str().is_some_and(|s| s.chars().count() > 36) {
                problems.push(format!("user property {k} is invalid"));
            }
        }
    }
    problems
}
