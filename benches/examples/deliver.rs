//! Delivery alone, in process: the GA4 client queues `hits` single-event hits for the three
//! vendor tags (Meta, TikTok, GA4), whose outboxes deliver them to a loopback sink; once every
//! outbox is empty it prints the delivery thread's CPU per hit and the vendor requests sent.
//! `cargo build --release -p sluice-benches --example deliver`, then
//! `target/release/examples/deliver 20000` (`SLUICE_TEMPLATES=dir` for other template builds).
//!
//! The load generator's figure for delivery (`cargo xtask load`, CPU µs per hit by thread) has
//! the whole server's noise in it; this one has only delivery's: what a change to a tag's
//! `deliver` or to the delivery path bought, in a run of a few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_benches::procfs::{minor_faults, thread_cpu_ns};

fn main() {
    let hits: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the sink");
    let addr = listener.local_addr().expect("sink address");
    let requests = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        let sink_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        sink_rt.block_on(sluice_benches::load::answer_everything(listener, 200, sluice_benches::load::SINK_ANSWER, counted));
    });
    let container = sluice_benches::container_with_sink(3, addr);
    let query = sluice_benches::ga4_hit_query();
    let faults = minor_faults();
    for n in 0..hits {
        // Each its own browser hit (a hit counter `_s` of its own), as the load generator sends
        // them: the GA4 tag sends one web hit per request, as Google takes them.
        let (response, _) = rt.block_on(container.handle(sluice_benches::request(&format!("{query}&_s={n}"))));
        assert_eq!(response.status, 204, "the GA4 client accepted the hit");
    }
    // Every queued item delivered: no outbox holds anything.
    loop {
        let pending: usize = container.outbox_status().iter().map(|s| s.pending).sum();
        if pending == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cpu = thread_cpu_ns(std::process::id());
    let delivery_ns = cpu.get("sluice-delivery").copied().unwrap_or(0);
    let dead: usize = container.outbox_status().iter().map(|s| s.dead).sum();
    println!(
        "deliver: {:.1} µs of the delivery thread per hit over {hits} hits (3 tags), {:.2} vendor requests per hit, {dead} dead letters, {:.1} minor faults per hit (whole process)",
        delivery_ns as f64 / 1e3 / hits as f64,
        requests.load(Ordering::Relaxed) as f64 / hits as f64,
        (minor_faults() - faults) as f64 / hits as f64,
    );
}
