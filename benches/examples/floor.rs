//! The sandbox's own floor per invocation: the empty tag (`benches/fixtures/empty-tag.wat`)
//! instantiated, called and dropped in a tight loop on Sluice's engine (same pooling, epoch and
//! memory settings, from `sluice::engine::Runtime`), with nothing of the pipeline around it.
//! Compare with the `empty` row of `cargo bench -p sluice-benches --bench pipeline`, where the
//! same tag runs inside a request after the GA4 client: the difference is the host's
//! per-invocation bookkeeping and a cache the client has just filled with its own data.
//!
//! Run: `cargo run --release -p sluice-benches --example floor [iterations]`.

use std::time::{Duration, Instant};

use sluice::config::Limits;
use sluice::Runtime;
use wasmtime::component::{Component, Linker, Val};
use wasmtime::Store;

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let runtime = Runtime::new(&Limits::default()).expect("engine");
    let engine = runtime.engine();
    let component = Component::new(engine, sluice_benches::empty_tag_bytes()).expect("the empty tag compiles");
    let mut linker: Linker<()> = Linker::new(engine);
    linker.instance("sluice:template/types@0.1.0").expect("types instance");
    let pre = linker.instantiate_pre(&component).expect("pre-instantiate");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    println!("| empty tag, {iterations} invocations, tight loop | instantiate µs | call µs | drop µs | total µs |");
    println!("|---|---|---|---|---|");
    for round in 0..2 {
        let mut spent = [Duration::ZERO; 3];
        rt.block_on(async {
            for _ in 0..iterations {
                let start = Instant::now();
                let mut store = Store::new(engine, ());
                store.set_epoch_deadline(1);
                store.epoch_deadline_async_yield_and_update(1);
                let instance = pre.instantiate_async(&mut store).await.expect("instantiate");
                let instantiated = Instant::now();
                let fire = instance.get_func(&mut store, "fire").expect("fire export");
                let mut result = [Val::Bool(false)];
                fire.call_async(&mut store, &[], &mut result).await.expect("call");
                let called = Instant::now();
                drop(store);
                spent[0] += instantiated - start;
                spent[1] += called - instantiated;
                spent[2] += called.elapsed();
            }
        });
        let us = spent.map(|d| d.as_secs_f64() * 1e6 / f64::from(iterations));
        let label = if round == 0 { "run 1" } else { "run 2" };
        println!("| {label} | {:.2} | {:.2} | {:.2} | {:.2} |", us[0], us[1], us[2], us.iter().sum::<f64>());
    }
}
