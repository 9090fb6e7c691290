//! `sluice audit` against a known run: the real container (GA4 client; Meta, GA4 and webhook
//! tags, each with its own consent needs) writes its audit file for hits with known consent
//! signals and personal data, and the summary of that file must be exactly the counts worked
//! out by hand below.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice::audit::{PurposeSummary, Summary, TagSummary, Window, configured_file};
use sluice_tests::{FakeVendor, TestServer, hit_request, loopback_outbound, parse_config, scratch_dir, template};

/// Meta needs `ad_storage` + `ad_user_data`, GA4 `analytics_storage`, the webhook nothing (as
/// the templates declare); every tag matches every event.
fn config(origin: &str, audit: &std::path::Path) -> String {
    format!(
        r#"{outbound}
[consent]
audit = "{audit}"

[outbox]
drain_ms = 1500

{client}

[[tag]]
name = "meta"
wasm = "{meta}"
trigger = {{ events = ["*"] }}
params = {{ pixel_id = "1234567890", access_token = "${{TEST_SECRET}}", endpoint = "{origin}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/"] }}

[[tag]]
name = "ga4-web"
wasm = "{ga4}"
trigger = {{ events = ["*"] }}
params = {{ endpoint = "{origin}" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/g/collect"] }}

[[tag]]
name = "webhook"
wasm = "{webhook}"
trigger = {{ events = ["*"] }}
params = {{ url = "{origin}/hook" }}
grants = {{ event_data = ["*"], outbound = ["{origin}/hook"] }}
"#,
        outbound = loopback_outbound(),
        audit = audit.display(),
        client = sluice_tests::ga4_client_entry(),
        meta = template("meta-capi-tag").display(),
        ga4 = template("ga4-tag").display(),
        webhook = template("webhook-tag").display(),
    )
}

/// A purchase hit with these extra parameters, from 203.0.113.7 (the GA4 client makes that
/// `ip_override`, personal data: every hit carries some).
fn hit(params: &str, consent_header: Option<&str>) -> sluice::RequestData {
    let mut request = hit_request(&format!("v=2&tid=G-TEST&cid=123456789.1700000000&en=purchase&epn.value=30&cu=EUR{params}"));
    if let Some(value) = consent_header {
        request.headers.insert("x-consent", value.parse().unwrap());
    }
    request
}

const EMAIL: &str = "&ep.user_data.email_address=jane%40example.com";
const GCLID_URL: &str = "&dl=https%3A%2F%2Fshop.example%2F%3Fgclid%3Dabc%26color%3Dred";

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_of_a_known_run_is_exactly_the_counts_worked_out_by_hand() {
    let vendor = FakeVendor::start().await;
    let audit = scratch_dir("audit").join("audit.jsonl");
    let text = config(&vendor.origin(), &audit);
    let server = TestServer::start(&text).await;

    let start = now_ms();
    // State per hit: ad_storage / analytics_storage / ad_user_data ("-" unset: no signal).
    let hits = [
        hit(&format!("&gcd=13r3r3r2r5l1&gcs=G111{EMAIL}{GCLID_URL}"), None), // H1: gcd all granted         G G G
        hit(&format!("&gcs=G111{EMAIL}{GCLID_URL}"), None),                  // H2: gcs says nothing of aud  G G -
        hit("&gcs=G100", None),                                               // H3: ads and analytics denied D D -
        hit("&gcs=G110", None),                                               // H4: analytics denied        G D -
        hit(EMAIL, None),                                                     // H5: no signal at all        - - -
        hit(&format!("&gcd=13r3r3p2r5l1{EMAIL}"), None),                     // H6: gcd, ad_user_data denied G G D
        hit(EMAIL, Some("ad_storage=granted,ad_user_data=granted,analytics_storage=denied")), // H7: CMP header G D G
    ];
    for request in hits {
        server.container.handle(request).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.container.handle(hit("&gcd=13r3r3r2r5l1", None)).await; // H8, after `between`: all granted
    server.stop().await;

    // The audit is written in batches (within 20 ms, and before any outbox commit): now.
    sluice::output::flush_batched();
    let config = parse_config(&text).unwrap();
    let file = configured_file(&config).unwrap();
    assert_eq!(file, audit, "sluice audit --config reads the file the server wrote");
    let known_run = Summary::read_file(&file, Window { since_ms: None, until_ms: Some(between) }).unwrap();

    // (tag, allowed, stripped, blocked), over H1..H7.
    let tags = [
        ("ga4-web", 1, 2, 4), // allowed H1; stripped H2, H6 (analytics granted, ad_user_data not); blocked H3 H4 H5 H7
        ("meta", 2, 0, 5),    // allowed H1, H7 (both granted); stripping never happens: it needs ad_user_data itself
        ("webhook", 2, 5, 0), // needs nothing, never blocked; stripped H2..H6, whenever ad_user_data is not granted
    ];
    // (tag, purpose, granted, unset_allowed, blocked); unset = "deny", so unset_allowed is 0.
    let purposes = [
        ("ga4-web", "analytics_storage", 3, 0, 4), // granted H1 H2 H6; denied H3 H4 H7, unset H5
        ("meta", "ad_storage", 5, 0, 2),           // granted H1 H2 H4 H6 H7; denied H3, unset H5
        ("meta", "ad_user_data", 2, 0, 5),         // granted H1 H7; unset H2..H5, denied H6
    ];
    // (tag, removed key path, events): only from the events the tag ran on stripped.
    let removed = [
        ("ga4-web", "ip_override", 2),          // H2, H6
        ("ga4-web", "page_location?gclid", 1),  // H2 (H1's gclid stays: ad_user_data granted)
        ("ga4-web", "user_data", 2),            // H2, H6
        ("webhook", "ip_override", 5),          // H2..H6
        ("webhook", "page_location?gclid", 1),  // H2
        ("webhook", "user_data", 3),            // H2, H5, H6 (H3, H4 carry no email)
    ];
    let mut expected: BTreeMap<String, TagSummary> = tags
        .iter()
        .map(|&(tag, allowed, stripped, blocked)| (tag.to_string(), TagSummary { allowed, stripped, blocked, ..TagSummary::default() }))
        .collect();
    for (tag, purpose, granted, unset_allowed, blocked) in purposes {
        expected.get_mut(tag).unwrap().purposes.insert(purpose.into(), PurposeSummary { granted, unset_allowed, blocked });
    }
    for (tag, key, events) in removed {
        expected.get_mut(tag).unwrap().removed_keys.insert(key.into(), events);
    }
    assert_eq!(known_run.tags, expected, "report:\n{known_run}");
    assert_eq!(known_run.decisions, 21, "7 hits x 3 tags");
    assert_eq!(known_run.outside_window, 3, "H8's three decisions are after `until`");
    assert_eq!((known_run.not_audit_records, known_run.malformed), (0, 0), "every line the host writes reads back as a record");
    let covered = known_run.covered.unwrap();
    assert!(start <= covered.first_ms && covered.first_ms <= covered.last_ms, "the records' own times: {covered:?}");

    // The window's other side: only H8, all granted, is from `between` on.
    let after = Summary::read_file(&file, Window { since_ms: Some(between), until_ms: None }).unwrap();
    assert_eq!((after.decisions, after.outside_window), (3, 21));
    assert!(after.tags.values().all(|t| (t.allowed, t.stripped, t.blocked) == (1, 0, 0)), "{after}");
}
