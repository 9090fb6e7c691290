//! In-process figures:
//! * `pipeline/tags=N`: one real GA4 hit through the GA4 client, consent resolution and N
//!   vendor tags (Meta, TikTok, GA4), outbound stopped at the choke point. The step from N to
//!   N+1 is the cost of one tag invocation (fresh instance + call + drop, WASI linked as in
//!   production, with its host calls).
//! * `parse/ga4_hit`: the GA4 hit parser alone, natively, for comparison.
//!
//! Before criterion runs, two percentile tables (median, p99 over 5,000 hits after a warm-up)
//! are printed: the pipeline configurations, and each tag's invocation as the request trace
//! timed it, whole and by phase (instantiate; call, its host calls included; teardown). The
//! `empty` tag (`benches/fixtures/empty-tag.wat`) is the floor: what the host itself costs per
//! invocation, apart from anything a guest adds. Criterion reports central
//! estimates; the tail matters for a server.
//!
//! Run: `cargo bench -p sluice-benches` (see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::{Container, Phases, RequestData};
use sluice_benches::procfs::minor_faults;
use sluice_benches::{container, empty_tag_container, ga4_hit_query, noop_tag_container, request, webhook_container};

/// Median and p99 of `samples` (µs), sorting them.
fn median_p99(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

/// Which consent the benchmarked hit carries.
#[derive(Clone, Copy)]
enum Consent {
    /// The hit's own signals: everything granted.
    Hit,
    /// Plus `x-consent: ad_user_data=denied`.
    Denied,
}

impl Consent {
    fn request(self, query: &str) -> RequestData {
        let mut r = request(query);
        if let Consent::Denied = self {
            r.headers.insert("x-consent", http::HeaderValue::from_static("ad_user_data=denied"));
        }
        r
    }
}

fn percentiles(c: &mut Criterion) {
    let _ = c;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let query = ga4_hit_query();
    // The hit grants consent (gcs/gcd); `Denied` adds a CMP header denying ad_user_data, so Meta
    // and TikTok are blocked before instantiation and the GA4 tag runs on the minimised event.
    let configs: [(&str, Arc<Container>, Consent); 8] = [
        ("GA4 client only", container(0), Consent::Hit),
        ("GA4 client + 1 vendor tag (Meta)", container(1), Consent::Hit),
        ("GA4 client + 3 vendor tags", container(3), Consent::Hit),
        ("GA4 client + 3 vendor tags, ad_user_data denied (2 blocked, 1 minimised)", container(3), Consent::Denied),
        ("GA4 client + webhook tag", webhook_container(), Consent::Hit),
        ("GA4 client + no-op tag", noop_tag_container(), Consent::Hit),
        ("GA4 client + empty tag (floor)", empty_tag_container(), Consent::Hit),
        // Repeated last, so a drift of the machine during the run shows.
        ("GA4 client only (again)", container(0), Consent::Hit),
    ];
    println!("\n| pipeline (1 GA4 hit) | median µs | p99 µs | minor page faults / hit |");
    println!("|---|---|---|---|");
    let mut invocations: BTreeMap<String, Vec<(f64, Phases)>> = BTreeMap::new();
    for (label, container, consent) in configs {
        let request = |query: &str| consent.request(query);
        for _ in 0..500 {
            rt.block_on(container.handle(request(&query)));
        }
        let faults_before = minor_faults();
        let mut samples: Vec<f64> = (0..5000)
            .map(|_| {
                let start = Instant::now();
                let (_, trace) = rt.block_on(container.handle(request(&query)));
                let elapsed = start.elapsed().as_secs_f64() * 1e6;
                for run in trace.events.iter().flat_map(|e| &e.tags) {
                    invocations.entry(run.tag.clone()).or_default().push((run.duration.as_secs_f64() * 1e6, run.phases));
                }
                elapsed
            })
            .collect();
        let faults = (minor_faults() - faults_before) as f64 / 5000.0;
        let (median, p99) = median_p99(&mut samples);
        println!("| {label} | {median:.1} | {p99:.1} | {faults:.1} |");
    }
    println!("\n| tag invocation (from the request trace) | median µs | p99 µs | instantiate | call | teardown (medians, µs) |");
    println!("|---|---|---|---|---|---|");
    for (tag, runs) in invocations {
        let phase = |pick: fn(&Phases) -> std::time::Duration| {
            let mut v: Vec<f64> = runs.iter().map(|(_, p)| pick(p).as_secs_f64() * 1e6).collect();
            median_p99(&mut v).0
        };
        let (instantiate, call, teardown) = (phase(|p| p.instantiate), phase(|p| p.call), phase(|p| p.teardown));
        let (median, p99) = median_p99(&mut runs.iter().map(|(total, _)| *total).collect::<Vec<_>>());
        println!("| {tag} | {median:.1} | {p99:.1} | {instantiate:.1} | {call:.1} | {teardown:.1} |");
    }
    println!();
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let query = ga4_hit_query();
    let mut group = c.benchmark_group("pipeline");
    for tags in [0, 1, 3] {
        let container = container(tags);
        // Sanity: the hit is claimed and every tag ran to the choke point.
        let (_, trace) = rt.block_on(container.handle(request(&query)));
        assert_eq!(trace.claimed_by.as_deref(), Some("ga4"));
        assert_eq!(trace.events.first().map_or(0, |e| e.tags.len()), tags);
        group.bench_function(format!("tags={tags}"), |b| b.iter(|| rt.block_on(container.handle(request(&query)))));
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let query = ga4_hit_query();
    // What the client does with a hit: its events, written as the JSON the host receives.
    let events_json = |query: &str| ga4_client::hit::events(query, b"").map(|events| events.iter().map(ga4_client::hit::Fields::to_json).collect::<Vec<_>>());
    c.bench_function("parse/ga4_hit", |b| b.iter(|| events_json(std::hint::black_box(&query))));
}

/// The part of the fixed per-invocation cost spent building a WASI context (every invocation
/// builds one).
fn wasi_ctx(c: &mut Criterion) {
    c.bench_function("setup/wasi_ctx", |b| b.iter(|| wasmtime_wasi::WasiCtxBuilder::new().build()));
}

criterion_group!(benches, percentiles, pipeline, parse, wasi_ctx);
criterion_main!(benches);
