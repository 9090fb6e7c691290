//! What bounds one invocation: a CPU budget counted in epoch ticks of guest execution plus the
//! time of the host calls it makes, and a linear-memory cap enforced by our own
//! [`wasmtime::ResourceLimiter`]. Both end the
//! invocation with a typed error ([`CpuLimitExceeded`], [`MemoryLimitExceeded`]), so the
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

/// The CPU budget of one invocation, in [`TICK`]s: ticks of guest execution, plus the ticks
/// long host calls spanned.
///
/// Ticks count wall time while the store runs, host calls included: the epoch callback fires
/// when the guest next checks the epoch after a tick, and wasmtime re-arms the deadline only
/// after the guest resumes from its yield, so time spent queued behind other work is not
/// counted. That is what makes this a CPU budget rather than a wall-clock one (which
/// `[limits] wall_ms` is). Short host calls are paid for by the ticks they fall in.
///
/// But one long host call is charged one tick however long it ran, since the guest checks
/// the epoch only when it runs again: a guest that passes a 16 MiB string to a host call in a
/// loop makes the host copy and check it each time while its budget barely moves. So the
/// store's call hook notes the [`Epoch`] when a host call starts and charges, when it returns,
/// the ticks it spanned beyond the one the callback counts — minus those it spent waiting on
/// the network ([`CpuClock::waited_since`]: outbound HTTP is paid for by `wall_ms`) and those
/// spent in guest code nested in the call (a result lowered through the guest's allocator,
/// which may yield). Over budget, the call's return traps with [`CpuLimitExceeded`].
///
/// wasmtime also wraps its libcalls in the call hook, the epoch callback's among them: the
/// callback marks its yield ([`CpuClock::yielding`]) so the time queued behind other tasks is
/// not charged as a host call (under load it was, and stopped templates that had run 2 ms).
#[derive(Debug)]
pub struct CpuClock {
    epoch: Epoch,
    /// Ticks charged so far (guest ticks and host-call ticks).
    ticks: u64,
    limit: u64,
    /// Host calls in progress: lowering a result into the guest calls its allocator (guest
    /// code, which may call the host again); the outermost call is what is charged.
    depth: u32,
    /// The epoch host code (re)started at; `None` while guest code runs.
    running: Option<u64>,
    /// Ticks of host code in the outermost call in progress, and of network waits in it.
    call: u64,
    waited: u64,
    /// Of `ticks`, those charged for host calls (the rest are the epoch callback's).
    host_ticks: u64,
}

impl CpuClock {
    /// A clock allowing `limit` of guest execution and host work (at least one tick).
    pub fn new(limit: Duration, epoch: Epoch) -> Self {
        let limit = (limit.as_micros() / TICK.as_micros().max(1)).max(1) as u64;
        CpuClock { epoch, ticks: 0, limit, depth: 0, running: None, call: 0, waited: 0, host_ticks: 0 }
    }

    /// Counts one tick of guest execution; `false` once the budget is spent.
    pub fn tick(&mut self) -> bool {
        self.ticks += 1;
        self.ticks <= self.limit
    }

    /// The epoch callback is about to yield to the executor. wasmtime runs the callback inside
    /// a libcall, which the call hook sees as a host call; the time queued behind other tasks
    /// until this one is polled again is not this template's CPU, so the call stops counting
    /// here (the tick that brought the callback was just counted by [`CpuClock::tick`]).
    pub fn yielding(&mut self) {
        self.running = None;
    }

    /// The epoch now, to pass to [`CpuClock::waited_since`] after a network wait.
    pub fn epoch(&self) -> u64 {
        self.epoch.now()
    }

    /// The host call in progress waited on the network since `epoch`; that part is not
    /// charged.
    pub fn waited_since(&mut self, epoch: u64) {
        self.waited += self.epoch.now().saturating_sub(epoch);
    }

    /// The guest called into the host.
    pub fn enter_host(&mut self) {
        self.depth += 1;
        if self.depth == 1 {
            self.call = 0;
            self.waited = 0;
        }
        self.running = Some(self.epoch.now());
    }

    /// Host code calls into the guest (its allocator, while lowering a result).
    pub fn enter_guest(&mut self) {
        if let Some(started) = self.running.take() {
            self.call += self.epoch.now().saturating_sub(started);
        }
    }

    /// Guest code returns to the host.
    pub fn leave_guest(&mut self) {
        if self.depth > 0 {
            self.running = Some(self.epoch.now());
        }
    }

    /// A host call returns to the guest; the outermost one's ticks are charged. `false` once
    /// the budget is spent.
    pub fn leave_host(&mut self) -> bool {
        self.enter_guest();
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            // The epoch callback counts the call's first tick when the guest resumes.
            let charged = self.call.saturating_sub(self.waited).saturating_sub(1);
            self.ticks += charged;
            self.host_ticks += charged;
        }
        self.ticks <= self.limit
    }

    /// Where the spent budget went, in ticks: (guest, host calls).
    pub fn split(&self) -> (u64, u64) {
        (self.ticks - self.host_ticks, self.host_ticks)
    }
}

#[cfg(test)]
mod cpu_clock_tests {
    use super::*;

    fn clock(ms: u64) -> (CpuClock, Epoch) {
        let epoch = Epoch::default();
        (CpuClock::new(Duration::from_millis(ms), epoch.clone()), epoch)
    }

    fn ticks(epoch: &Epoch, n: u64) {
        (0..n).for_each(|_| epoch.advance());
    }

    #[test]
    fn a_long_host_call_is_charged_the_ticks_it_spanned() {
        let (mut clock, epoch) = clock(20); // 10 ticks
        clock.enter_host();
        ticks(&epoch, 4);
        assert!(clock.leave_host());
        assert!(clock.tick(), "the callback's tick on resuming");
        assert_eq!(clock.ticks, 4);
        clock.enter_host();
        ticks(&epoch, 6);
        assert!(clock.leave_host(), "4 + 5 of 10 ticks");
        clock.enter_host();
        ticks(&epoch, 3);
        assert!(!clock.leave_host(), "past the budget: the call's return traps");
    }

    #[test]
    fn the_epoch_yield_is_not_charged_however_long_the_task_waits_to_run_again() {
        // Found under load: wasmtime wraps libcalls, the epoch callback's among them, in the
        // call hook, so a yield queued behind other tasks for 60 ms was charged as a host call
        // and stopped templates that had run for 2 ms.
        let (mut clock, epoch) = clock(50);
        for _ in 0..10 {
            clock.enter_host(); // the epoch libcall
            assert!(clock.tick(), "the tick that fired the callback");
            clock.yielding();
            ticks(&epoch, 30); // queued behind other tasks
            assert!(clock.leave_host());
        }
        assert_eq!(clock.split(), (10, 0), "ten ticks of guest code, nothing for the waits");
        // Inside a host call, through guest code it runs (a result lowered by the guest's
        // allocator), the outer call is not charged for the yield either.
        clock.enter_host();
        clock.enter_guest();
        clock.enter_host();
        assert!(clock.tick());
        clock.yielding();
        ticks(&epoch, 30);
        assert!(clock.leave_host());
        clock.leave_guest();
        assert!(clock.leave_host());
        assert_eq!(clock.split(), (11, 0));
    }

    #[test]
    fn short_calls_network_waits_and_nested_guest_code_are_not_charged_as_host_work() {
        let (mut clock, epoch) = clock(50);
        for _ in 0..100 {
            clock.enter_host();
            assert!(clock.leave_host(), "a call within one tick is the ticks' to count");
        }
        clock.enter_host();
        let sent = clock.epoch();
        ticks(&epoch, 10);
        clock.waited_since(sent);
        // Lowering the result runs the guest's allocator, which may yield for a long time.
        clock.enter_guest();
        ticks(&epoch, 10);
        clock.leave_guest();
        assert!(clock.leave_host());
        assert_eq!(clock.ticks, 0);
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
