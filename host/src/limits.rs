//! What bounds one invocation: a CPU budget measured with the thread's CPU clock ([`CpuClock`]:
//! guest code and the host calls it makes, not the time it waits), and a linear-memory cap
//! enforced by our own [`wasmtime::ResourceLimiter`]. Both end the invocation with a typed error ([`CpuLimitExceeded`], [`MemoryLimitExceeded`]), so the
//! pipeline recognises them by type, not by matching wasmtime's message text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

/// How often the epoch advances (and a running guest yields).
pub const TICK: Duration = Duration::from_millis(2);

/// `[limits]`: per-invocation sandbox limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Guest CPU time per invocation, in milliseconds.
    pub cpu_ms: u64,
    /// Wall-clock time per invocation (outbound waits included), in milliseconds.
    pub wall_ms: u64,
    /// Wall-clock time for a whole request, in milliseconds: every client and every event's
    /// tags, however many events a batched hit carries. An invocation gets the smaller of
    /// `wall_ms` and what is left of this; tags the deadline leaves no time for do not run and
    /// are traced as such.
    pub request_ms: u64,
    /// Linear memory per invocation, in MiB.
    pub memory_mb: u64,
    /// Invocations in flight at once in each pool, the request path's and delivery's (sizes
    /// each instance pool; [`crate::engine::Runtime`]).
    pub max_concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { cpu_ms: 50, wall_ms: 10_000, request_ms: 15_000, memory_mb: 64, max_concurrent: 256 }
    }
}

impl Limits {
    /// Load-time validation: every budget must be above zero, and a request's deadline at
    /// least one invocation's.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_concurrent == 0 || self.cpu_ms == 0 || self.memory_mb == 0 || self.wall_ms == 0 {
            return Err("cpu_ms, wall_ms, memory_mb and max_concurrent must be above 0");
        }
        if self.request_ms < self.wall_ms {
            return Err("request_ms (the whole request) must be at least wall_ms (one invocation)");
        }
        Ok(())
    }

    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// The guest ran past its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit exceeded")]
pub struct CpuLimitExceeded;

/// The guest tried to grow a memory or table past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: {wanted} bytes asked for, {cap} allowed")]
pub struct MemoryLimitExceeded {
    /// The size the guest asked for.
    pub wanted: usize,
    /// `[limits] memory_mb`, in bytes.
    pub cap: usize,
}

/// The engine's epoch as the host reads it: the ticker thread advances it every [`TICK`]
/// together with wasmtime's own, so host code can tell how many ticks passed without a clock
/// read (an atomic load; host calls are frequent — a vendor tag makes dozens).
#[derive(Debug, Clone, Default)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    /// The current epoch.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Advances it by one tick.
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The CPU budget of one invocation: the CPU time its thread spent running it — guest code,
/// the host calls it made, instantiating it — measured with the thread's own CPU clock
/// (`CLOCK_THREAD_CPUTIME_ID`), not counted in wall-clock ticks.
///
/// Why not ticks: a tick counts wall time, and under contention wall time is not the
/// template's. On a busy core (the delivery thread runs at a lower priority, see
/// `pipeline::deliver`) a template that needs 2 ms of CPU can take 20 ms of wall time, and a
/// tick-counted budget stopped such templates for CPU twice in this project's history (a
/// yield queued behind other tasks; every template recompiled at reload on a loaded machine).
/// The thread's CPU clock counts only what ran.
///
/// How: the pipeline polls the invocation's future through [`CpuMeter::charged`], which reads
/// the thread's CPU clock around each poll and adds the difference. Time the invocation does
/// not run is outside any poll: queued behind other tasks after an epoch yield, waiting on the
/// network (outbound HTTP is paid for by `wall_ms`), or preempted by the OS. Inside a poll the
/// budget is checked where wasmtime gives control back to the host: on each epoch tick (the
/// callback, every [`TICK`] of guest execution) and when a host call returns after spanning a
/// tick, so one long host call — a guest passing a 16 MiB string in a loop — is caught on its
/// return. Over budget, the invocation traps with [`CpuLimitExceeded`].
///
/// A clock read is a system call (about half a microsecond here); there are two per poll, one
/// per tick and one per host call that spanned a tick, not one per host call.
#[derive(Debug)]
pub struct CpuClock {
    meter: CpuMeter,
    epoch: Epoch,
    limit_ns: u64,
    /// The epoch the outermost host call in progress started at.
    call_started: Option<u64>,
    /// Host calls in progress (lowering a result can call the guest, which calls the host).
    depth: u32,
}

impl CpuClock {
    /// A clock allowing `limit` of CPU time.
    pub fn new(limit: Duration, epoch: Epoch) -> Self {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        CpuClock { meter: CpuMeter::default(), epoch, limit_ns, call_started: None, depth: 0 }
    }

    /// The meter to poll the invocation through ([`CpuMeter::charged`]).
    pub fn meter(&self) -> CpuMeter {
        self.meter.clone()
    }

    /// The epoch callback: a tick of guest execution passed; `false` once the budget is spent.
    pub fn tick(&mut self) -> bool {
        self.within_budget()
    }

    /// The guest called into the host.
    pub fn enter_host(&mut self) {
        self.depth += 1;
        if self.depth == 1 {
            self.call_started = Some(self.epoch.now());
        }
    }

    /// A host call returns to the guest; `false` once the budget is spent. Checked only when
    /// the outermost call spanned a tick (an atomic load otherwise): short calls are caught by
    /// the next tick.
    pub fn leave_host(&mut self) -> bool {
        self.depth = self.depth.saturating_sub(1);
        if self.depth > 0 {
            return true;
        }
        match self.call_started.take() {
            Some(started) if self.epoch.now() != started => self.within_budget(),
            _ => true,
        }
    }

    /// CPU time spent so far.
    pub fn spent(&self) -> Duration {
        Duration::from_nanos(self.meter.spent_ns())
    }

    fn within_budget(&self) -> bool {
        self.meter.spent_ns() <= self.limit_ns
    }
}

/// CPU time charged to one invocation, shared by its [`CpuClock`] (inside the store) and the
/// pipeline that polls it ([`CpuMeter::charged`]).
#[derive(Debug, Clone, Default)]
pub struct CpuMeter(Arc<MeterState>);

#[derive(Debug, Default)]
struct MeterState {
    /// CPU time of the polls that finished, nanoseconds.
    done: AtomicU64,
    /// The thread's CPU clock when the poll in progress started, plus one (0: none).
    polling_since: AtomicU64,
}

impl CpuMeter {
    /// Runs `future`, charging the CPU time of each of its polls to this meter.
    pub async fn charged<F: std::future::Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let started = thread_cpu_ns();
            self.0.polling_since.store(started + 1, Ordering::Relaxed);
            let polled = future.as_mut().poll(cx);
            self.0.polling_since.store(0, Ordering::Relaxed);
            self.0.done.fetch_add(thread_cpu_ns().saturating_sub(started), Ordering::Relaxed);
            polled
        })
        .await
    }

    /// CPU time so far, the poll in progress included.
    fn spent_ns(&self) -> u64 {
        let done = self.0.done.load(Ordering::Relaxed);
        match self.0.polling_since.load(Ordering::Relaxed) {
            0 => done,
            since => done + thread_cpu_ns().saturating_sub(since - 1),
        }
    }
}

/// This thread's CPU time, nanoseconds.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000).saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod cpu_clock_tests {
    use super::*;

    fn clock(ms: u64) -> (CpuClock, Epoch) {
        let epoch = Epoch::default();
        (CpuClock::new(Duration::from_millis(ms), epoch.clone()), epoch)
    }

    fn spin(d: Duration) {
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < d.as_nanos() as u64 {
            std::hint::black_box(());
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn cpu_used_inside_a_poll_is_charged_and_stops_the_invocation_past_the_budget() {
        let (mut clock, _) = clock(20);
        let meter = clock.meter();
        block_on(meter.charged(async {
            spin(Duration::from_millis(5));
        }));
        assert!(clock.tick(), "5 of 20 ms");
        assert!(clock.spent() >= Duration::from_millis(5), "{:?}", clock.spent());
        block_on(meter.charged(async {
            spin(Duration::from_millis(20));
            assert!(!clock.tick(), "25 of 20 ms, seen by the callback while the poll runs");
        }));
    }

    #[test]
    fn time_the_invocation_does_not_run_is_not_charged() {
        // Waiting (the network, a sleep inside a host call, another task holding the thread,
        // the OS running another thread) uses no CPU of this thread: only wall_ms pays for it.
        let (clock, _) = clock(10);
        let meter = clock.meter();
        block_on(meter.charged(async {
            tokio::time::sleep(Duration::from_millis(30)).await; // Pending: outside any poll
            std::thread::sleep(Duration::from_millis(30)); // inside a poll, but not running
        }));
        assert!(clock.spent() < Duration::from_millis(5), "{:?}", clock.spent());
        assert!(clock.within_budget());
    }

    #[test]
    fn a_long_host_call_is_checked_on_its_return_and_short_ones_wait_for_the_tick() {
        let (mut clock, epoch) = clock(10);
        let meter = clock.meter();
        block_on(meter.charged(async {
            clock.enter_host();
            spin(Duration::from_millis(15));
            assert!(clock.leave_host(), "within one tick: not checked here (the next tick is)");
            clock.enter_host();
            clock.enter_host(); // nested: a result lowered through the guest's allocator
            epoch.advance();
            assert!(clock.leave_host(), "the inner return is not the call's end");
            assert!(!clock.leave_host(), "spanned a tick: checked, over budget");
        }));
    }
}

/// Caps an instance's linear memories at `memory_mb` and fails growth past it with
/// [`MemoryLimitExceeded`] (a trap the pipeline reports as `MemoryLimit`).
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
}

/// Tables: a Rust guest's function table holds a few thousand entries; this bounds a hostile one.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    /// A limiter for `cap` bytes of linear memory per memory.
    pub fn new(cap: usize) -> Self {
        MemoryLimiter { cap }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { wanted: desired, cap: self.cap }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { wanted: desired, cap: MAX_TABLE_ELEMENTS }));
        }
        Ok(true)
    }
}
