//! In-process figures:
//! * `pipeline/tags=N`: one real GA4 hit through the GA4 client, consent resolution and N
//!   vendor tags (Meta, TikTok, GA4), outbound stopped at the choke point. The step from N to
//!   N+1 is the cost of one tag invocation (fresh instance + call + drop, WASI linked as in
//!   production, with its host calls).
//! * `parse/ga4_hit`: the GA4 hit parser alone, natively, for comparison.
//!
//! Before criterion runs, a percentile table (median, p99 over 5,000 iterations after a
//! warm-up) is printed for the pipeline configurations: criterion reports central estimates,
//! and the tail matters for a server.
//!
//! Run: `cargo bench -p sluice-benches` (see BENCHMARKS.md).

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_benches::{container, ga4_hit_query, noop_tag_container, request};

/// Minor page faults of this process so far (field 10 of /proc/self/stat; 0 where unavailable).
/// Unlike time, a count is not disturbed by the other tenants of a shared machine.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after it are space-separated.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after.split_whitespace().nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

fn percentiles(c: &mut Criterion) {
    let _ = c;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let query = ga4_hit_query();
    println!("\n| pipeline (1 GA4 hit) | median µs | p99 µs | per added tag µs (median) | minor page faults / hit |");
    println!("|---|---|---|---|---|");
    let mut previous: Option<f64> = None;
    let mut baseline = 0.0;
    for tags in [0usize, 1, 3, 99] {
        let noop = tags == 99;
        let container = if noop { noop_tag_container() } else { container(tags) };
        for _ in 0..500 {
            rt.block_on(container.handle(request(&query)));
        }
        let faults_before = minor_faults();
        let mut samples: Vec<f64> = (0..5000)
            .map(|_| {
                let start = Instant::now();
                rt.block_on(container.handle(request(&query)));
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let faults = (minor_faults() - faults_before) as f64 / 5000.0;
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        if noop {
            println!("| GA4 client + 1 no-op tag | {median:.1} | {p99:.1} | {:.1} | {faults:.1} |", median - baseline);
            continue;
        }
        let per_tag = previous.map_or("—".to_string(), |p| format!("{:.1}", (median - p) / if tags == 3 { 2.0 } else { 1.0 }));
        println!("| GA4 client + {tags} vendor tag(s) | {median:.1} | {p99:.1} | {per_tag} | {faults:.1} |");
        if tags == 0 {
            baseline = median;
        }
        previous = Some(median);
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
    c.bench_function("parse/ga4_hit", |b| b.iter(|| ga4_client::hit::parse(std::hint::black_box(&query), b"")));
}

/// The part of the fixed per-invocation cost spent building a WASI context (every invocation
/// builds one).
fn wasi_ctx(c: &mut Criterion) {
    c.bench_function("setup/wasi_ctx", |b| b.iter(|| wasmtime_wasi::WasiCtxBuilder::new().build()));
}

criterion_group!(benches, percentiles, pipeline, parse, wasi_ctx);
criterion_main!(benches);
