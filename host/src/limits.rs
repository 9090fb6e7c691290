//! What bounds one invocation: a CPU budget counted in epoch ticks of guest execution plus the
//! time of the host calls it makes, and a linear-memory cap enforced by our own
//! [`wasmtime::ResourceLimiter`]. Both end the
//! invocation with a typed error ([`CpuLimitExceeded`], [`MemoryLimitExceeded`]), so the
//! pipeline recognises them by type, not by matching wasmtime's message text.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// How often the epoch advances (and a running guest yields).
pub const TICK: Duration = Duration::from_millis(2);

/// `[limits]`: per-invocation sandbox limits.
#[derive(Debug, Clone, Deserialize)]
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
    /// Invocations in flight at once (sizes the instance pool).
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

/// The CPU budget of one invocation: epoch ticks of guest execution plus the measured time of
/// every host call the guest made.
///
/// The epoch callback fires once per [`TICK`] of guest execution; wasmtime re-arms the
/// deadline only after the guest resumes from its yield, so time spent queued behind other work
/// is not counted. That is what makes this a CPU budget rather than a wall-clock one (which
/// `[limits] wall_ms` is).
///
/// Ticks count wall time while the store runs, host calls included, in [`TICK`] steps: short
/// host calls are paid for by the ticks they span. But the callback runs only when the guest
/// checks the epoch, so one long host call is charged one tick however long it ran: a guest
/// that passes a 16 MiB string to a host call in a loop makes the host copy and check it each
/// time while its budget barely moves. So the store's call hook times every host call (the
/// lifting and lowering of its arguments and results included) and charges what it took
/// beyond the one tick, minus what it spent waiting on the network ([`CpuClock::waited`]:
/// outbound HTTP is paid for by `wall_ms`). Over budget, the call's return traps with
/// [`CpuLimitExceeded`].
#[derive(Debug)]
pub struct CpuClock {
    ticks: u64,
    limit: Duration,
    /// Host-call time charged so far.
    host: Duration,
    /// Host calls in progress: lowering a result into the guest calls its allocator (guest
    /// code, which may call the host again); the outermost call is what is charged.
    depth: u32,
    /// Running while host code runs, paused while guest code nested in a host call runs
    /// (that is counted in ticks, and may yield to other tasks for any length of time).
    timer: Option<Instant>,
    /// Host time of the outermost call in progress, and what it waited on the network.
    call: Duration,
    waited: Duration,
}

impl CpuClock {
    /// A clock allowing `limit` of guest execution and host work (at least one tick).
    pub fn new(limit: Duration) -> Self {
        CpuClock {
            ticks: 0,
            limit: limit.max(TICK),
            host: Duration::ZERO,
            depth: 0,
            timer: None,
            call: Duration::ZERO,
            waited: Duration::ZERO,
        }
    }

    /// What has been charged so far.
    pub fn spent(&self) -> Duration {
        TICK.saturating_mul(u32::try_from(self.ticks).unwrap_or(u32::MAX)).saturating_add(self.host)
    }

    /// Counts one tick of guest execution; `false` once the budget is spent.
    pub fn tick(&mut self) -> bool {
        self.ticks += 1;
        self.spent() <= self.limit
    }

    /// The guest called into the host.
    pub fn enter_host(&mut self) {
        self.depth += 1;
        if self.depth == 1 {
            self.call = Duration::ZERO;
            self.waited = Duration::ZERO;
        }
        self.timer = Some(Instant::now());
    }

    /// The host call in progress waited `d` on the network; that part is not charged.
    pub fn waited(&mut self, d: Duration) {
        self.waited += d;
    }

    /// Host code calls into the guest (its allocator, while lowering a result).
    pub fn enter_guest(&mut self) {
        if let Some(started) = self.timer.take() {
            self.call += started.elapsed();
        }
    }

    /// Guest code returns to the host.
    pub fn leave_guest(&mut self) {
        if self.depth > 0 {
            self.timer = Some(Instant::now());
        }
    }

    /// A host call returns to the guest; the outermost one's time is charged. `false` once
    /// the budget is spent.
    pub fn leave_host(&mut self) -> bool {
        self.enter_guest();
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            // The epoch counts the first tick of the call when the guest resumes.
            self.host += self.call.saturating_sub(self.waited).saturating_sub(TICK);
        }
        self.spent() <= self.limit
    }
}

#[cfg(test)]
mod cpu_clock_tests {
    use super::*;

    fn busy(d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_long_host_call_is_charged_what_it_took_beyond_its_first_tick() {
        let mut clock = CpuClock::new(Duration::from_millis(20));
        clock.enter_host();
        busy(Duration::from_millis(8));
        assert!(clock.leave_host(), "8 ms of a 20 ms budget");
        assert!(clock.spent() >= Duration::from_millis(6), "{:?}", clock.spent());
        clock.enter_host();
        busy(Duration::from_millis(18));
        assert!(!clock.leave_host(), "past the budget: the call's return traps");
    }

    #[test]
    fn network_waits_and_guest_code_nested_in_a_host_call_are_not_host_time() {
        let mut clock = CpuClock::new(Duration::from_millis(50));
        clock.enter_host();
        let network = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        clock.waited(network.elapsed());
        // Lowering the result runs the guest's allocator, which may yield for a long time.
        clock.enter_guest();
        std::thread::sleep(Duration::from_millis(30));
        clock.leave_guest();
        assert!(clock.leave_host());
        assert_eq!(clock.spent(), Duration::ZERO, "only the host's own microseconds, within the first tick");
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
