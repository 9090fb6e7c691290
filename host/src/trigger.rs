//! When a tag fires: an event-name list plus simple conditions on event data.
//!
//! ```toml
//! trigger = { events = ["purchase", "add_to_cart"], conditions = [
//!     { key = "currency", equals = "EUR" },
//!     { key = "page_location", contains = "/checkout" },
//!     { key = "user_data.email_address", exists = true },
//! ] }
//! ```
//!
//! `events = ["*"]` matches every event. All conditions must hold.

use serde::Deserialize;
use serde_json::Value;

/// A tag's firing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Event names it fires on; `"*"` for all.
    pub events: Vec<String>,
    /// Conditions that must all hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One condition on a dotted event-data key. Exactly one of `equals`, `contains`, `exists`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Dotted key path (`items.0.item_id`).
    pub key: String,
    /// The value equals this (numbers compare numerically, `"10"` ≠ `10`).
    pub equals: Option<toml::Value>,
    /// The string contains this text, or the list contains this value.
    pub contains: Option<toml::Value>,
    /// The key is present (`true`) or absent (`false`).
    pub exists: Option<bool>,
}

impl Trigger {
    /// Checks the rule is well-formed; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.events.is_empty() {
            return Err("events is empty, so the tag would never fire: list event names, or [\"*\"] for all".into());
        }
        for c in &self.conditions {
            let set = [c.equals.is_some(), c.contains.is_some(), c.exists.is_some()].iter().filter(|b| **b).count();
            if set != 1 || c.key.is_empty() {
                return Err(format!(
                    "condition on {:?} needs a key and exactly one of equals, contains or exists",
                    c.key
                ));
            }
        }
        Ok(())
    }

    /// Whether the tag fires for this event.
    pub fn matches(&self, event: &Value) -> bool {
        self.name_matches(event) && self.conditions.iter().all(|c| c.holds(event))
    }

    fn name_matches(&self, event: &Value) -> bool {
        let name = event.get("event_name").and_then(Value::as_str).unwrap_or("");
        self.events.iter().any(|e| e == "*" || e == name)
    }

    /// Why the tag does not fire for this event (the preview's "not fired" reason): the event
    /// name not listed, or the first condition that fails. `None` when it fires.
    pub fn explain(&self, event: &Value) -> Option<String> {
        if !self.name_matches(event) {
            let name = event.get("event_name").and_then(Value::as_str).unwrap_or("");
            return Some(format!("event {name:?} is not in the trigger's events {:?}", self.events));
        }
        let failed = self.conditions.iter().find(|c| !c.holds(event))?;
        let actual = sluice_manifest::event_value(event, &failed.key).map_or("absent".to_string(), crate::json_text);
        Some(format!("condition failed: {} (the event has {actual})", failed.describe()))
    }
}

impl Condition {
    /// The condition as the operator wrote it: `currency equals "EUR"`.
    fn describe(&self) -> String {
        match (&self.equals, &self.contains, self.exists) {
            (Some(v), _, _) => format!("{} equals {}", self.key, to_json(v)),
            (_, Some(v), _) => format!("{} contains {}", self.key, to_json(v)),
            (_, _, Some(true)) => format!("{} exists", self.key),
            _ => format!("{} is absent", self.key),
        }
    }

    fn holds(&self, event: &Value) -> bool {
        let value = sluice_manifest::event_value(event, &self.key);
        if let Some(expected) = self.exists {
            return value.is_some() == expected;
        }
        let Some(value) = value else { return false };
        if let Some(expected) = &self.equals {
            return json_eq(value, &to_json(expected));
        }
        if let Some(needle) = &self.contains {
            let needle = to_json(needle);
            return match (value, &needle) {
                (Value::String(s), Value::String(n)) => s.contains(n.as_str()),
                (Value::Array(items), n) => items.iter().any(|i| json_eq(i, n)),
                _ => false,
            };
        }
        false
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trigger(toml_text: &str) -> Trigger {
        let t: Trigger = toml::from_str(toml_text).expect("parses");
        t.validate().expect("valid");
        t
    }

    #[test]
    fn event_names_and_wildcard() {
        let t = trigger(r#"events = ["purchase", "add_to_cart"]"#);
        assert!(t.matches(&json!({"event_name": "purchase"})));
        assert!(!t.matches(&json!({"event_name": "page_view"})));
        assert!(!t.matches(&json!({"no_name": 1})));
        assert!(trigger(r#"events = ["*"]"#).matches(&json!({"event_name": "anything"})));
    }

    #[test]
    fn conditions_all_hold() {
        let t = trigger(
            r#"events = ["*"]
            conditions = [
                { key = "currency", equals = "EUR" },
                { key = "value", equals = 30 },
                { key = "page_location", contains = "/checkout" },
                { key = "items.0.item_id", exists = true },
                { key = "debug_mode", exists = false },
            ]"#,
        );
        let hit = json!({"event_name":"purchase","currency":"EUR","value":30.0,
            "page_location":"https://shop.example/checkout/done","items":[{"item_id":"SKU1"}]});
        assert!(t.matches(&hit));
        let mut other = hit.clone();
        other["currency"] = json!("USD");
        assert!(!t.matches(&other));
        let mut debug = hit.clone();
        debug["debug_mode"] = json!(true);
        assert!(!t.matches(&debug));
        let mut stringly = hit;
        stringly["value"] = json!("30");
        assert!(!t.matches(&stringly), "a string is not the number 30");
    }

    #[test]
    fn list_contains_and_bad_conditions() {
        let t = trigger(r#"events = ["*"]
            conditions = [{ key = "tags", contains = "vip" }]"#);
        assert!(t.matches(&json!({"event_name":"x","tags":["new","vip"]})));
        let bad: Trigger = toml::from_str(r#"events = ["*"]
            conditions = [{ key = "a", equals = 1, exists = true }]"#).expect("parses");
        assert!(bad.validate().unwrap_err().contains("exactly one"));
        let never: Trigger = toml::from_str("events = []").expect("parses");
        assert!(never.validate().unwrap_err().contains("never fire"));
    }

    #[test]
    fn explain_names_the_event_or_the_first_failing_condition() {
        let t = trigger(r#"events = ["purchase"]
            conditions = [{ key = "value", exists = true }, { key = "currency", equals = "EUR" }]"#);
        assert_eq!(t.explain(&json!({"event_name":"purchase","value":1,"currency":"EUR"})), None);
        assert_eq!(t.explain(&json!({"event_name":"page_view"})).unwrap(), r#"event "page_view" is not in the trigger's events ["purchase"]"#);
        assert_eq!(t.explain(&json!({"event_name":"purchase"})).unwrap(), "condition failed: value exists (the event has absent)");
        assert_eq!(
            t.explain(&json!({"event_name":"purchase","value":1,"currency":"USD"})).unwrap(),
            r#"condition failed: currency equals "EUR" (the event has "USD")"#
        );
    }
}
