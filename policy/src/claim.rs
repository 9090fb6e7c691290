//! Which of a claiming client's events reach the tags. The client hands the host JSON text;
//! the host parses it outside the client's sandbox, so the text is bounded first: at most
//! [`EventCaps::max_events`] events (a batched hit must not fan out into thousands of vendor
//! calls) and [`EventCaps::max_bytes`] bytes of JSON in all (parsed JSON takes up to
//! [`PARSE_FACTOR`] times its text, so the host keeps this within the client's memory budget).
//! Each event must be a JSON object; anything else is dropped, and every drop is reported.

use serde_json::Value;

/// How much larger parsed event JSON can be than its text: serde_json values of short numbers
/// and strings (`[1,1,1,...]` is 2 bytes of text and 32 of `Value` per element; maps more).
pub const PARSE_FACTOR: usize = 20;

/// The caps on one request's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCaps {
    /// Events per request (`[server] max_events_per_request`).
    pub max_events: usize,
    /// Bytes of event JSON per request, all events together (`[server] max_event_bytes`).
    pub max_bytes: usize,
}

impl Default for EventCaps {
    /// The host's defaults: 100 events, 1 MiB.
    fn default() -> Self {
        EventCaps { max_events: 100, max_bytes: 1 << 20 }
    }
}

/// The events that reach the tags, and why the others did not.
#[derive(Debug, Default, PartialEq)]
pub struct Admitted {
    /// Parsed events (JSON objects), in the client's order.
    pub events: Vec<Value>,
    /// One line per drop, naming the cap or the fault.
    pub dropped: Vec<String>,
}

/// Applies the caps to a client's events, in order.
pub fn admit<S: AsRef<str>>(texts: &[S], caps: EventCaps) -> Admitted {
    let mut admitted = Admitted::default();
    if texts.len() > caps.max_events {
        admitted.dropped.push(format!(
            "{} events in one request; only the first {} run tags ([server] max_events_per_request)",
            texts.len(),
            caps.max_events
        ));
    }
    let mut total = 0usize;
    for (i, text) in texts.iter().take(caps.max_events).enumerate() {
        let text = text.as_ref();
        total = total.saturating_add(text.len());
        if total > caps.max_bytes {
            admitted.dropped.push(format!(
                "event {i} ({} bytes) and the rest pass {} bytes of event JSON in one request ([server] max_event_bytes); dropped",
                text.len(),
                caps.max_bytes
            ));
            break;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(event @ Value::Object(_)) => admitted.events.push(event),
            _ => admitted.dropped.push(format!("event {i} is not a JSON object; dropped")),
        }
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_past_a_cap_or_not_objects_are_dropped_and_reported() {
        let caps = EventCaps { max_events: 3, max_bytes: 30 };
        let a = admit(&[r#"{"event_name":"a"}"#, "[1]", r#"{"event_name":"b"}"#, "{}"], caps);
        assert_eq!(a.events.len(), 1, "{a:?}");
        assert_eq!(a.events[0]["event_name"], "a");
        assert!(a.dropped[0].contains("4 events") && a.dropped[0].contains("max_events_per_request"), "{a:?}");
        assert!(a.dropped[1].contains("event 1 is not a JSON object"), "{a:?}");
        assert!(a.dropped[2].contains("event 2 (18 bytes)") && a.dropped[2].contains("max_event_bytes"), "{a:?}");
        assert_eq!(admit(&["{}"; 2], EventCaps::default()).events.len(), 2);
    }
}
