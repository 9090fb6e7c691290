//! Runs one pipeline configuration in a loop, for a profiler to watch:
//! `cargo build --release -p sluice-benches --example profile`, then e.g.
//! `perf record -e cpu-clock -- target/release/examples/profile noop 20000`.
//! Configurations: `0`..`3` vendor tags (outbound stopped at the choke point), `sink1`..`sink3`
//! (the same tags, requests really sent to a loopback sink), `noop` (GA4 client + the no-op
//! probe tag), `empty` (GA4 client + the empty WAT tag, the floor), `webhook` (GA4 client + the
//! webhook tag). Each tag prints its mean time split into instantiate, call and teardown.

use sluice_benches::procfs::minor_faults;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "noop".into());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let container = match which.as_str() {
        "noop" => sluice_benches::noop_tag_container(),
        "empty" => sluice_benches::empty_tag_container(),
        "webhook" => sluice_benches::webhook_container(),
        // `sinkN`: N vendor tags whose requests really go out to a loopback sink.
        n if n.starts_with("sink") => sluice_benches::container_with_sink(n[4..].parse().expect("sink1..=sink3"), sluice_benches::load::spawn_sink()),
        n => sluice_benches::container(n.parse().expect("tag count 0..=3, `noop`, `empty`, `webhook` or `sinkN`")),
    };
    let query = sluice_benches::ga4_hit_query();
    // One hit first, to show what each tag ended with (and what it was refused).
    let (_, trace) = rt.block_on(container.handle(sluice_benches::request(&query)));
    for run in trace.events.iter().flat_map(|e| &e.tags) {
        println!("  tag {}: {} {:?}", run.tag, run.outcome, run.denials);
    }
    let faults = minor_faults();
    let start = std::time::Instant::now();
    let mut per_tag: std::collections::BTreeMap<String, [f64; 4]> = Default::default();
    for _ in 0..iterations {
        let (_, trace) = rt.block_on(container.handle(sluice_benches::request(&query)));
        for run in trace.events.iter().flat_map(|e| &e.tags) {
            let p = run.phases;
            let sums = per_tag.entry(run.tag.clone()).or_default();
            for (sum, d) in sums.iter_mut().zip([run.duration, p.instantiate, p.call, p.teardown]) {
                *sum += d.as_secs_f64() * 1e6;
            }
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    let faults = (minor_faults() - faults) as f64 / iterations as f64;
    println!("{which}: {per:.1} µs per hit over {iterations} hits, {faults:.1} minor faults per hit");
    for (tag, sums) in per_tag {
        let [total, instantiate, call, teardown] = sums.map(|s| s / iterations as f64);
        println!("  tag {tag}: {total:.1} µs (mean) = instantiate {instantiate:.1} + call {call:.1} + teardown {teardown:.1}");
    }
}
