//! `sluice::ContainerConfig::parse`: an operator's container config (TOML) never panics the
//! host at start-up, however malformed; `${ENV}` references resolve through a fake
//! environment (a few names set, one to an awkward value).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("s3cr3t-token-value".into()),
        "EMPTY" => Some(String::new()),
        "WEIRD" => Some("${TOKEN}\"\n[x]é𝟘".into()),
        "PORT" => Some("8080".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sluice::ContainerConfig::parse(text, Path::new("/nonexistent/fuzz/container.toml"), &env);
    let _ = sluice::ContainerConfig::parse(text, Path::new("container.toml"), &env);
});
