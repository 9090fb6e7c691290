//! The sandbox: two wasmtime pools (the visitor's request, outbox delivery), each an `Engine`
//! with its `Linker`s, and a fresh `Store` per invocation with a CPU budget and a memory cap.
//!
//! * **Pooling allocator**, sized from `[limits] max_concurrent`: instantiation reuses
//!   pre-reserved slots instead of mapping memory on every request. A semaphore with the same
//!   count keeps requests from asking for more instances than the pool holds (they wait
//!   instead of failing). One pool runs clients and `fire`, another `deliver`: what each
//!   keeps resident between instances suits its work ([`Runtime`]).
//! * **Epoch interruption** for CPU limits. A ticker thread advances the epoch every
//!   [`TICK`]; at each tick of guest execution the host checks the CPU budget ([`CpuClock`]:
//!   the thread CPU time the invocation used, host calls included) and the guest yields to
//!   tokio, so one busy template cannot starve the server. A call hook checks it again when a
//!   host call that spanned a tick returns. Over budget → trap.
//! * **Our own `ResourceLimiter`** for memory ([`crate::limits`]): growing past `memory_mb`
//!   traps with a typed error.
//! * **Minimal WASI**: only what a plain Rust `wasm32-wasip2` guest imports (io, clocks, random,
//!   cli stdio/env/exit). No filesystem, no sockets: a template asking for them fails to load.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::cli::WasiCliView;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::{WasiCtxBuilder, cli, clocks, random};

use crate::error::LoadError;
use crate::limits::{CpuClock, Epoch, Limits, MemoryLimiter};
use crate::state::{Invocation, Phase};

pub use crate::limits::{CpuLimitExceeded, TICK};

/// Upper bound of a freed linear memory kept resident for the next instance in its slot, in the
/// request-path pool: what every reset of that slot costs in `memset`/`memcpy` (see
/// [`pool_engine`]). A client's or a `fire`'s instance touches about this much. Kept small on
/// purpose: whatever a slot once held up to the bound stays resident and is reset on every
/// later use, so one large hit would otherwise tax every later request in that slot.
const KEEP_RESIDENT_REQUEST: usize = 256 << 10;

/// The same for the delivery pool. A `deliver` batch touches megabytes (25 to 1,000 events in,
/// the vendor requests out), and with the request path's bound each batch page-faulted most of
/// them in again: resetting resident pages costs a `memset` each, faulting them a kernel entry
/// each. Same-run A/B under load, delivery CPU µs per single hit: 256 KiB 108–135, 2 MiB 101–102,
/// 4 MiB 98, 8 MiB 95 (BENCHMARKS.md). What it costs is memory: up to this much stays
/// resident per slot a batch has used, and a tag's batches reuse a few slots (its
/// `concurrency`, 2 by default): peak RSS under load 116 → 123 MB with three tags. Batches come
/// from the outbox, whose items are capped, not straight from visitors.
const KEEP_RESIDENT_DELIVERY: usize = 8 << 20;

/// The same for tables (a Rust guest's function table is a few KiB).
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The engines, linkers and limits.
///
/// Two sandbox pools, one per kind of work, so each can keep what suits it resident (see the
/// constants above): `request` runs clients and tags' `fire` inside a visitor's request,
/// `delivery` runs tags' `deliver` on outbox batches. Each has its own engine (a pool belongs to
/// an engine) and its own `[limits] max_concurrent` instances, so a delivery backlog never takes
/// the instance slots requests need. One epoch ticker drives both.
pub struct Runtime {
    pub(crate) request: Sandbox,
    pub(crate) delivery: Sandbox,
    /// Clients run only in the request pool.
    pub(crate) client_linker: Linker<Invocation>,
    pub(crate) limits: Limits,
    epoch: Epoch,
    _ticker: Ticker,
}

/// One pool of sandboxes: its engine, the tag world's linker on it, and a permit per slot.
pub(crate) struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) tag_linker: Linker<Invocation>,
    /// As many as the pool has instance slots: requests wait for one instead of failing.
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

impl Sandbox {
    fn new(limits: &Limits, keep_resident: usize) -> Result<Self, LoadError> {
        let engine = pool_engine(limits, keep_resident).map_err(engine_err)?;
        let tag_linker = linker(&engine, |l| {
            crate::bindings::tag::Tag::add_to_linker::<_, HasSelf<_>>(l, |s| s)
        })
        .map_err(engine_err)?;
        Ok(Sandbox { engine, tag_linker, permits: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent as usize)) })
    }
}

fn engine_err(e: wasmtime::Error) -> LoadError {
    LoadError::Engine(e.to_string())
}

/// An engine whose pooling allocator keeps at most `keep_resident` bytes of a freed linear
/// memory resident.
fn pool_engine(limits: &Limits, keep_resident: usize) -> wasmtime::Result<Engine> {
    let memory_bytes = limits.memory_bytes();
    let n = limits.max_concurrent;
    let mut config = Config::new();
    config.epoch_interruption(true);
    #[cfg(feature = "profiling")]
    if std::env::var("SLUICE_PROFILER").as_deref() == Ok("perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        // A Rust wasip2 component holds a handful of core instances (the program, its
        // adapter shims) and tables; one linear memory.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(memory_bytes);
    // Reuse a slot's pages instead of handing them back to the kernel. By default wasmtime
    // resets a freed linear memory with `madvise(DONTNEED)`, so the next instance of the
    // template page-faults its stack, data and heap in again (12–17 faults per instance
    // measured, each with TLB shoot-downs). With the PAGEMAP_SCAN ioctl (Linux ≥ 6.7) it
    // finds the resident pages and restores them with `memset`/`memcpy`: no syscall storm,
    // no faults — 25–28% less time per hit (BENCHMARKS.md). "Resident", not "dirtied by
    // this instance": without userfaultfd write-protection the kernel reports every present
    // page as written, so a reset costs what the slot ever held, up to the bound. Without the
    // ioctl, keeping pages resident means memset-ing the whole kept range on every reuse,
    // which measured slower than madvise, so it stays off there.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(memory_bytes.min(keep_resident))
            .table_keep_resident(KEEP_RESIDENT_TABLE);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

impl Runtime {
    /// Builds the engines and linkers for these limits.
    pub fn new(limits: &Limits) -> Result<Self, LoadError> {
        let request = Sandbox::new(limits, KEEP_RESIDENT_REQUEST)?;
        let delivery = Sandbox::new(limits, KEEP_RESIDENT_DELIVERY)?;
        let epoch = Epoch::default();
        let client_linker = linker(&request.engine, |l| {
            crate::bindings::client::Client::add_to_linker::<_, HasSelf<_>>(l, |s| s)
        })
        .map_err(engine_err)?;
        Ok(Runtime {
            _ticker: Ticker::start([request.engine.clone(), delivery.engine.clone()], epoch.clone()),
            epoch,
            request,
            delivery,
            client_linker,
            limits: limits.clone(),
        })
    }

    /// The request pool's engine, configured as above. For benchmarks that measure the sandbox
    /// apart from the pipeline (`benches/examples/floor.rs`); the pipeline needs nothing else
    /// from it.
    pub fn engine(&self) -> &Engine {
        &self.request.engine
    }

    /// The pool that runs this phase: `deliver` in the delivery pool, the rest in the request
    /// pool.
    pub(crate) fn sandbox(&self, phase: Phase) -> &Sandbox {
        match phase {
            Phase::InRequest => &self.request,
            Phase::Deliver(_) => &self.delivery,
        }
    }

    /// A fresh store in `sandbox` for one invocation, with its CPU clock, memory cap and epoch
    /// callback. `cpu_scale` multiplies `[limits] cpu_ms` (see [`Phase::cpu_scale`]).
    pub(crate) fn store(&self, sandbox: &Sandbox, cpu_scale: u32, data: impl FnOnce(InvocationParts) -> Invocation) -> Store<Invocation> {
        let parts = InvocationParts {
            wasi: WasiCtxBuilder::new().build(),
            limits: MemoryLimiter::new(self.limits.memory_bytes()),
            cpu: CpuClock::new(Duration::from_millis(self.limits.cpu_ms.saturating_mul(u64::from(cpu_scale))), self.epoch.clone()),
        };
        let mut store = Store::new(&sandbox.engine, data(parts));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            if !ctx.data_mut().cpu.tick() {
                tracing::debug!(spent = ?ctx.data().cpu.spent(), "CPU budget spent");
                Err(wasmtime::Error::new(CpuLimitExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        // A host call that spanned a tick is checked when it returns ([`CpuClock`]).
        store.call_hook(|mut ctx, hook| {
            let cpu = &mut ctx.data_mut().cpu;
            match hook {
                CallHook::CallingHost => cpu.enter_host(),
                CallHook::ReturningFromHost if !cpu.leave_host() => {
                    tracing::debug!(spent = ?cpu.spent(), "CPU budget spent");
                    return Err(wasmtime::Error::new(CpuLimitExceeded));
                }
                CallHook::ReturningFromHost | CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
        store
    }
}

/// The parts of an [`Invocation`] the runtime provides.
pub(crate) struct InvocationParts {
    pub(crate) wasi: wasmtime_wasi::WasiCtx,
    pub(crate) limits: MemoryLimiter,
    pub(crate) cpu: CpuClock,
}

/// A linker with the minimal WASI set plus one world's imports.
fn linker(
    engine: &Engine,
    add_world: impl FnOnce(&mut Linker<Invocation>) -> wasmtime::Result<()>,
) -> wasmtime::Result<Linker<Invocation>> {
    use wasmtime_wasi::p2::bindings::{cli as p2cli, clocks as p2clocks, random as p2random};
    let mut l: Linker<Invocation> = Linker::new(engine);
    wasmtime_wasi_io::add_to_linker_async(&mut l)?;
    p2clocks::wall_clock::add_to_linker::<_, clocks::WasiClocks>(&mut l, |t| t.clocks())?;
    p2clocks::monotonic_clock::add_to_linker::<_, clocks::WasiClocks>(&mut l, |t| t.clocks())?;
    p2random::random::add_to_linker::<_, random::WasiRandom>(&mut l, |t| t.wasi.random())?;
    p2random::insecure::add_to_linker::<_, random::WasiRandom>(&mut l, |t| t.wasi.random())?;
    p2random::insecure_seed::add_to_linker::<_, random::WasiRandom>(&mut l, |t| t.wasi.random())?;
    p2cli::exit::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::environment::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::stdin::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::stdout::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::stderr::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::terminal_input::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::terminal_output::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::terminal_stdin::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::terminal_stdout::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    p2cli::terminal_stderr::add_to_linker::<_, cli::WasiCli>(&mut l, |t| t.cli())?;
    add_world(&mut l)?;
    Ok(l)
}

/// Advances the engines' epochs every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Ticker {
    fn start(engines: [Engine; 2], epoch: Epoch) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                    epoch.advance();
                }
            })
            .ok();
        Ticker { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
