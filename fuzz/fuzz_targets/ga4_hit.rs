//! `ga4_client::hit::parse`: the input is `query NUL body` (no NUL: all query, empty body), and
//! `hit::brands` over the query as a `Sec-CH-UA` header. Accepted hits must have an event name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let query = String::from_utf8_lossy(query);
    if let Ok(events) = ga4_client::hit::parse(&query, body) {
        assert!(!events.is_empty());
        for event in &events {
            assert!(event.contains_key("event_name"), "accepted event without event_name: {event:?}");
        }
    }
    let _ = ga4_client::hit::brands(&query);
});
