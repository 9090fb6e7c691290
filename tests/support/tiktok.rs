//! A fake TikTok Events API that enforces the fields TikTok's template sends as required
//! (`shared/reference/domain.md` §8.1). Like the real API it answers HTTP 200 with a `code`.

use serde_json::{Value, json};

use crate::Received;

fn is_hash(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

/// TikTok's answer: `code` 0 or an error code with a message.
pub fn judge(request: &Received, now_secs: u64) -> (u16, String) {
    match check(request, now_secs) {
        Ok(()) => (200, json!({"code": 0, "message": "OK"}).to_string()),
        Err((code, message)) => (200, json!({"code": code, "message": message}).to_string()),
    }
}

/// Ok, or (TikTok error code, message).
pub fn check(request: &Received, now_secs: u64) -> Result<(), (u32, String)> {
    if request.headers.get("access-token").is_none_or(|t| t.is_empty()) {
        return Err((40001, "Access-Token header is required".into()));
    }
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| (40002, format!("body is not JSON: {e}")))?;
    for key in ["event_source", "event_source_id"] {
        if body.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err((40002, format!("{key} is required")));
        }
    }
    let data = body.get("data").and_then(Value::as_array).filter(|d| !d.is_empty()).ok_or((40002, "data is required".to_string()))?;
    for (i, event) in data.iter().enumerate() {
        if event.get("event").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err((40002, format!("data[{i}].event is required")));
        }
        let time = event.get("event_time").and_then(Value::as_u64).ok_or((40002, format!("data[{i}].event_time is required")))?;
        if time > now_secs + 3600 {
            return Err((40002, format!("data[{i}].event_time must be in seconds")));
        }
        let user = event.get("user").and_then(Value::as_object).ok_or((40002, format!("data[{i}].user is required")))?;
        for key in ["email", "phone", "external_id"] {
            if let Some(v) = user.get(key)
                && !is_hash(v)
            {
                return Err((40002, format!("data[{i}].user.{key} must be SHA-256 hashed")));
            }
        }
    }
    Ok(())
}
