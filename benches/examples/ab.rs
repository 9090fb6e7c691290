//! Two builds of the templates against each other, interleaved in one process: what a change
//! to a template (or to the SDK) bought, measured to a few percent on a machine whose speed
//! drifts by more than that between runs.
//!
//! `cargo build --release -p sluice-benches --example ab`, then
//! `target/release/examples/ab <templates A> <templates B> [rounds] [hits per round]`, each a
//! directory of `.wasm` files as `cargo xtask templates` writes them (copy one aside before
//! rebuilding). Each side is a container with the GA4 client and the three vendor tags sending
//! to a loopback sink. A round sends one side `hits` single-event hits (each its own browser
//! hit, `_s` counting up), then waits until its outboxes are empty; the sides alternate round
//! by round, so both see the same machine. Per side it prints the request path's CPU per hit
//! (this thread: the client's sandbox, consent, queueing) and the delivery thread's
//! (`deliver` in batches, the vendor requests), as the median over rounds and the sum.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::Container;
use sluice_benches::procfs::thread_cpu_ns;

/// CPU nanoseconds so far of this thread (the request path) and of the delivery threads.
fn cpu(main: &str) -> (u64, u64) {
    let by_name = thread_cpu_ns(std::process::id());
    (by_name.get(main).copied().unwrap_or(0), by_name.get("sluice-delivery").copied().unwrap_or(0))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ab <templates A> <templates B> [rounds] [hits per round]";
    // Absolute: the container's config resolves a relative `wasm` path from its own directory.
    let mut dir = || std::path::absolute(args.next().expect(usage)).expect("a template directory");
    let dirs: [PathBuf; 2] = [dir(), dir()];
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let hits: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let sink = sluice_benches::load::spawn_sink();
    let main = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default().trim().to_string();
    let sides: Vec<Arc<Container>> = dirs.iter().map(|d| sluice_benches::container_with_sink_from(Some(d), 3, sink)).collect();
    let query = sluice_benches::ga4_hit_query();
    let mut next_hit = 0usize;
    let mut run = |side: &Arc<Container>| {
        let (request0, delivery0) = cpu(&main);
        for _ in 0..hits {
            next_hit += 1;
            let (response, _) = rt.block_on(side.handle(sluice_benches::request(&format!("{query}&_s={next_hit}"))));
            assert_eq!(response.status, 204, "the GA4 client accepted the hit");
        }
        let request1 = cpu(&main).0;
        while side.outbox_status().iter().map(|s| s.pending).sum::<usize>() > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let delivery1 = cpu(&main).1;
        let per_hit = |ns: u64| ns as f64 / 1e3 / hits as f64;
        (per_hit(request1 - request0), per_hit(delivery1 - delivery0))
    };
    // One round each first, unmeasured: caches, pools and connections warm.
    for side in &sides {
        run(side);
    }
    let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // A then B in even rounds, B then A in odd ones: neither always goes first.
        for i in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            results[i].push(run(&sides[i]));
        }
    }
    println!("{rounds} rounds of {hits} hits per side, interleaved; CPU µs per hit, median over rounds (mean):");
    for (label, (dir, r)) in ["A", "B"].iter().zip(dirs.iter().zip(&results)) {
        let request: Vec<f64> = r.iter().map(|x| x.0).collect();
        let delivery: Vec<f64> = r.iter().map(|x| x.1).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "  {label} {}: request path {:.1} ({:.1}), delivery {:.1} ({:.1})",
            dir.display(),
            median(request.clone()),
            mean(&request),
            median(delivery.clone()),
            mean(&delivery)
        );
    }
}
