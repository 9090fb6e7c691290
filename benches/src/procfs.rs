//! Process counters from Linux's `/proc`, for the benchmarks. Counts (page faults, CPU ticks)
//! are not disturbed by the other tenants of a shared machine the way wall-clock times are.
//! Every reader returns 0 where `/proc` is unavailable.

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces), so
/// field N of proc(5) is at index N - 3.
fn stat_fields(pid: &str) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect()
}

/// Minor page faults of this process so far (proc(5) field 10).
pub fn minor_faults() -> u64 {
    stat_fields("self").get(7).copied().unwrap_or(0)
}

/// User + system CPU time of process `pid`, in seconds (fields 14 and 15, in clock ticks of
/// 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(&pid.to_string());
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)).sum();
    ticks as f64 / 100.0
}

/// A `/proc/<pid>/status` line's value in kB, e.g. `VmRSS:`.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `/proc/<pid>/io` counter in bytes: `write_bytes:` (what reached the storage layer: the
/// outbox's files and the log file) or `wchar:` (everything written through `write(2)`).
pub fn io_bytes(pid: u32, key: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// CPU time of process `pid`'s threads so far, in nanoseconds, summed by thread name
/// (`/proc/<pid>/task/*/comm`; `schedstat`'s first field, the time on a CPU). Nanoseconds
/// rather than the 10 ms ticks of [`cpu_seconds`], and per thread, so the request path
/// (`tokio-rt-worker`), delivery (`sluice-delivery`) and the outbox's commits
/// (`sluice-outbox-c…`) can be told apart. A thread that ended before the call is not counted.
pub fn thread_cpu_ns(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        let ns: u64 = std::fs::read_to_string(dir.join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        *by_name.entry(name).or_default() += ns;
    }
    by_name
}
