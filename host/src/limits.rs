//! What bounds one invocation: a CPU budget counted in epoch ticks of guest execution, and a
//! linear-memory cap enforced by our own [`wasmtime::ResourceLimiter`]. Both end the
//! invocation with a typed error ([`CpuLimitExceeded`], [`MemoryLimitExceeded`]), so the
//! pipeline recognises them by type, not by matching wasmtime's message text.

use std::time::Duration;

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
    /// Linear memory per invocation, in MiB.
    pub memory_mb: u64,
    /// Invocations in flight at once (sizes the instance pool).
    pub max_concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { cpu_ms: 50, wall_ms: 10_000, memory_mb: 64, max_concurrent: 256 }
    }
}

impl Limits {
    /// Load-time validation: every budget must be above zero.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_concurrent == 0 || self.cpu_ms == 0 || self.memory_mb == 0 {
            return Err("cpu_ms, memory_mb and max_concurrent must be above 0");
        }
        Ok(())
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

/// Guest CPU budget, counted in epoch ticks during which the guest was executing.
///
/// The epoch callback fires once per [`TICK`] of guest execution; wasmtime re-arms the
/// deadline only after the guest resumes from its yield, so time spent queued behind other work
/// or waiting in an async host call (outbound HTTP) is not counted. That is what makes this a
/// CPU budget rather than a wall-clock one (which `[limits] wall_ms` is).
#[derive(Debug)]
pub struct CpuClock {
    ticks: u64,
    limit: u64,
}

impl CpuClock {
    /// A clock allowing `limit` of guest execution (at least one tick).
    pub fn new(limit: Duration) -> Self {
        let tick = TICK.as_micros().max(1);
        CpuClock { ticks: 0, limit: (limit.as_micros() / tick).max(1) as u64 }
    }

    /// Counts one tick of execution; `false` once the budget is spent.
    pub fn tick(&mut self) -> bool {
        self.ticks += 1;
        self.ticks <= self.limit
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
