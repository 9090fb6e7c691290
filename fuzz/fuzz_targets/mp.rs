//! `ga4_client::mp::parse`: the input is `body NUL measurement_id` (no NUL: no measurement id).
//! An accepted request has 1 to 25 events, each with a non-empty string `event_name`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (body, id) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(String::from_utf8_lossy(&data[i + 1..]))),
        None => (data, None),
    };
    if let Ok(events) = ga4_client::mp::parse(body, id.as_deref()) {
        assert!((1..=ga4_client::mp::MAX_EVENTS).contains(&events.len()));
        for event in &events {
            assert!(event.get("event_name").and_then(|n| n.as_str()).is_some_and(|n| !n.is_empty()), "{event:?}");
        }
    }
});
