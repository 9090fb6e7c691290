//! What the policy core costs per event and per output line, against a baseline measured in
//! the same run: cloning the event (which the pipeline does anyway to share it with the tags).
//!
//! `cargo bench -p sluice-policy --bench policy`
//!
//! The event is a real sGTM GA4-client event model from `shared/corpus/` (select_item with
//! items, client hints, `x-ga-*` and `x-sst-system_properties`), plus the personal data a
//! visitor's hit can carry: an IP in system properties, an email under a custom key, a click
//! id in the page URL.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use sluice_policy::personal_data::Minimiser;
use sluice_policy::secrets::Masker;

fn event() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/eventmodel/eventmodel_02_ga4_client_select_item_items.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: String = text.lines().filter(|l| !l.starts_with("//")).collect::<Vec<_>>().join("\n");
    let events: Vec<Value> = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut event = events.into_iter().next().unwrap_or(Value::Null);
    event["x-ga-system_properties"] = serde_json::json!({"uip": "198.51.100.23"});
    event["contact"] = "jane.doe@example.com".into();
    event["page_location"] = "https://shop.example/p?gclid=GCLID123&color=red".into();
    event
}

fn bench(c: &mut Criterion) {
    let event = event();
    let minimiser = Minimiser::default();
    c.bench_function("baseline: clone the event", |b| b.iter(|| black_box(&event).clone()));
    c.bench_function("minimise the event (ad_user_data denied)", |b| b.iter(|| minimiser.event(black_box(&event))));

    let line = "2026-12-01T09:04:56.691231Z  INFO sluice::trace: request request_id=0000002a method=POST path=/g/collect status=204 client=\"ga4\" events=1 tags=[\"add_to_cart/meta=ok\", \"add_to_cart/tiktok=ok\", \"add_to_cart/ga4-web=ok\", \"add_to_cart/webhook=failed: HTTP 503: down\"] client_errors=[] duration_us=412";
    let none = Masker::default();
    let masker = Masker::new(["EAAmetaSecretTok99", "https://hooks.slack.com/services/T0SEKRIT1/B0SEKRIT2/XyZsecretPathToken1234", "tok-Zq8Wv3Lm9Rt2", "s3cr3t-value"]);
    c.bench_function("baseline: copy a log line", |b| b.iter(|| black_box(line).to_string()));
    c.bench_function("mask a log line, no secrets", |b| b.iter(|| none.mask(black_box(line)).len()));
    c.bench_function("mask a log line, 4 secrets", |b| b.iter(|| masker.mask(black_box(line)).len()));

    // One event's consent audit with three tags: three records, 1.8 kB, as the host masks them.
    let record = |tag: &str| format!(r#"{{"ts_ms":1796686901837,"request_id":"00000002","event_name":"add_to_cart","tag":"{tag}","purposes_needed":["analytics_storage"],"state":{{"ad_personalization":{{"source":"gcd","status":"granted"}},"ad_storage":{{"source":"gcd","status":"granted"}},"ad_user_data":{{"source":"gcd","status":"granted"}},"analytics_storage":{{"source":"gcd","status":"granted"}},"functionality_storage":{{"source":"default","status":"unset"}},"personalization_storage":{{"source":"default","status":"unset"}},"security_storage":{{"source":"default","status":"unset"}}}},"decision":"run","missing":[],"personal_data_removed":false,"removed":[]}}"#);
    let audit = format!("{}\n{}\n{}\n", record("ga4-1"), record("meta-1"), record("tiktok-1"));
    c.bench_function("baseline: copy an event's audit (3 records)", |b| b.iter(|| black_box(audit.as_bytes()).to_vec()));
    c.bench_function("mask an event's audit (3 records), 4 secrets", |b| b.iter(|| masker.mask_bytes(black_box(audit.as_bytes())).len()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
