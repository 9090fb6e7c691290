//! A fake Meta Conversions API that enforces Meta's documented rules
//! (`shared/reference/domain.md` §7.1–7.3): the whole batch is rejected if any event is invalid.

use serde_json::{Value, json};

use crate::Received;

/// Customer-information keys Meta only accepts hashed.
const HASHED: &[&str] = &["em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country"];
const ACTION_SOURCES: &[&str] =
    &["email", "website", "app", "phone_call", "chat", "physical_store", "system_generated", "business_messaging", "other"];

/// Meta's answer to one request: 200 with `events_received`, or 400 with a Graph error envelope.
pub fn judge(request: &Received, now_secs: u64) -> (u16, String) {
    match check(request, now_secs) {
        Ok(n) => (200, json!({"events_received": n, "messages": [], "fbtrace_id": "fake"}).to_string()),
        Err(message) => (
            400,
            json!({"error": {"message": message, "type": "OAuthException", "code": 100, "fbtrace_id": "fake"}}).to_string(),
        ),
    }
}

fn is_hash(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

/// Ok(number of events) or the reason the whole batch is rejected.
pub fn check(request: &Received, now_secs: u64) -> Result<usize, String> {
    if request.method != "POST" {
        return Err("use POST".into());
    }
    if !request.query.split('&').any(|p| p.starts_with("access_token=") && p.len() > "access_token=".len()) {
        return Err("An access token is required".into());
    }
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let data = body.get("data").and_then(Value::as_array).ok_or("data must be an array")?;
    if data.is_empty() || data.len() > 1000 {
        return Err(format!("data holds {} events; 1 to 1000 allowed", data.len()));
    }
    for (i, event) in data.iter().enumerate() {
        let name = event.get("event_name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(format!("data[{i}]: event_name is required"));
        }
        let time = event.get("event_time").and_then(Value::as_u64).ok_or(format!("data[{i}]: event_time must be Unix seconds"))?;
        if time + 7 * 24 * 3600 < now_secs {
            return Err(format!("data[{i}]: event_time is more than 7 days in the past"));
        }
        if time > now_secs + 3600 {
            return Err(format!("data[{i}]: event_time is in the future (milliseconds instead of seconds?)"));
        }
        let source = event.get("action_source").and_then(Value::as_str).unwrap_or("");
        if !ACTION_SOURCES.contains(&source) {
            return Err(format!("data[{i}]: action_source {source:?} is not valid"));
        }
        let user = event.get("user_data").and_then(Value::as_object).ok_or(format!("data[{i}]: user_data is required"))?;
        for key in HASHED {
            let Some(v) = user.get(*key) else { continue };
            let all_hashed = match v {
                Value::Array(items) => items.iter().all(is_hash),
                other => is_hash(other),
            };
            if !all_hashed {
                return Err(format!("data[{i}]: user_data.{key} must be a SHA-256 hash (lowercase hex)"));
            }
        }
        if source == "website" && user.get("client_user_agent").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(format!("data[{i}]: client_user_agent is required for website events"));
        }
    }
    Ok(data.len())
}
