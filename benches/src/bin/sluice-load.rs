//! The whole-server load run. Start it with `cargo xtask load` (it builds the release binaries
//! and the templates, pins this process to CPU 1 and passes the paths); see BENCHMARKS.md.
//!
//! For each server — the minimal hyper server answering 204 (the ceiling), then `sluice serve`
//! with the GA4 client and 1, 3 and 10 vendor tags — started pinned to CPU 0, and for each corpus
//! hit (single, batched):
//! 1. the maximum rate, closed loop over 64 keep-alive connections (median of three runs): what
//!    the request path takes while delivery, at a lower priority, falls behind;
//! 2. hits per CPU-second of the server, delivery included: its CPU time from the start of
//!    those runs until its outboxes are empty again (polled with `sluice outbox status`), over
//!    the hits they sent — what one core sustains;
//! 3. p50/p99 latency at 50% and 90% of the smaller of the two, open loop;
//! 4. vendor calls per hit, counted by the fake vendor sink this process serves on loopback,
//!    and bytes the server wrote to storage per event (`/proc/<pid>/io` `write_bytes`: the
//!    outbox's files and the log file), both until the outboxes were empty;
//! 5. where a hit's CPU went over the same span, per thread (`/proc/<pid>/task/*/schedstat`,
//!    nanoseconds): the request path (`tokio-rt-worker`), delivery (`sluice-delivery`), the
//!    outbox's commits (`sluice-outbox-commit`) and the rest, in µs per hit.
//!
//! Then, for the 3-tag server, a vendor outage: the sink answers 503 for `--outage` seconds
//! (default 60) while single hits arrive at half the sustained rate, then 200 again; reported are
//! the p99 during the outage, the backlog, and how long the outbox takes to drain it (pending
//! items polled with `sluice outbox status`) while the load goes on.
//!
//! Then, per server, 1,000 connections opened at once, one hit each, held open while the
//! server's resident memory is read; and its peak RSS over the whole run.
//!
//! `sluice-load ceiling --listen ADDR` is the 204 server itself (the run starts it as a child).
//! `SLUICE_LOAD_EXTRA` (TOML, `\n` for newlines) is put at the top of each server's config, to
//! measure a setting (e.g. `[outbox]\ncommit_ms = 20`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use sluice_benches::load::{self, Hit};
use sluice_benches::procfs::{cpu_seconds, io_bytes, status_kb, thread_cpu_ns};
use tokio::net::TcpListener;

const CONNECTIONS: usize = 64;
const HELD_CONNECTIONS: usize = 1000;

struct Options {
    sluice: PathBuf,
    templates: PathBuf,
    out: PathBuf,
    seconds: u64,
    tag_counts: Vec<usize>,
    /// Seconds of vendor outage for the drain measurement (0: skip it).
    outage: u64,
    /// Pin each server to CPU 0 (`cargo xtask load` passes `--pin` when it pinned this process
    /// to CPU 1).
    pin: bool,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if args.first().map(String::as_str) == Some("ceiling") {
        let addr: SocketAddr = flag("--listen").and_then(|a| a.parse().ok()).expect("ceiling --listen ADDR");
        // Like `sluice serve`: tokio's multi-thread runtime, one worker per CPU it may use.
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        rt.block_on(async {
            let listener = TcpListener::bind(addr).await.expect("bind");
            load::answer_everything(listener, 204, "", Arc::default()).await;
        });
        return std::process::ExitCode::SUCCESS;
    }
    let (Some(sluice), Some(templates)) = (flag("--sluice"), flag("--templates")) else {
        eprintln!("usage: sluice-load --sluice PATH --templates DIR [--out DIR] [--seconds N] [--tags 1,3,10] [--pin]\n(run it with `cargo xtask load`)");
        return std::process::ExitCode::from(2);
    };
    let options = Options {
        sluice: sluice.into(),
        // The server resolves `wasm` paths relative to its config file, which lives in `--out`.
        templates: std::path::absolute(&templates).unwrap_or_else(|_| templates.into()),
        out: flag("--out").unwrap_or_else(|| "target/load".into()).into(),
        seconds: flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5),
        tag_counts: flag("--tags")
            .map(|t| t.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 3, 10]),
        outage: flag("--outage").and_then(|s| s.parse().ok()).unwrap_or(60),
        pin: args.iter().any(|a| a == "--pin"),
    };
    rt.block_on(run(options))
}

/// CPU µs per hit between two [`thread_cpu_ns`] readings, as `request / delivery / commit /
/// other` (threads by name: the tokio workers, the delivery runtime, the outbox's commit
/// threads, everything else).
fn per_hit_by_thread(before: &std::collections::BTreeMap<String, u64>, after: &std::collections::BTreeMap<String, u64>, hits: f64) -> String {
    let mut parts = [0u64; 4];
    for (name, ns) in after {
        let spent = ns.saturating_sub(before.get(name).copied().unwrap_or(0));
        let part = match name.as_str() {
            n if n.starts_with("tokio-rt-worker") => 0,
            n if n.starts_with("sluice-delivery") => 1,
            n if n.starts_with("sluice-outbox") => 2,
            _ => 3,
        };
        parts[part] += spent;
    }
    let us = |ns: u64| ns as f64 / 1e3 / hits.max(1.0);
    format!("{:.0} / {:.0} / {:.0} / {:.0}", us(parts[0]), us(parts[1]), us(parts[2]), us(parts[3]))
}

/// A server under test: the child process and where it listens.
struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    /// Its container config (none for the ceiling).
    config: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(options: Options) -> std::process::ExitCode {
    if let Err(e) = std::fs::create_dir_all(&options.out) {
        eprintln!("cannot create {}: {e}", options.out.display());
        return std::process::ExitCode::FAILURE;
    }
    let pinned = options.pin;
    let sink_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the sink");
    let sink_addr = sink_listener.local_addr().expect("sink address");
    let vendor_calls = Arc::new(AtomicU64::new(0));
    let sink_status = Arc::new(AtomicU16::new(200));
    tokio::spawn(load::answer_switchable(sink_listener, sink_status.clone(), load::SINK_ANSWER, vendor_calls.clone()));

    let hits = Hit::corpus();
    let seconds = Duration::from_secs(options.seconds);
    println!(
        "Load run: {} s per measurement, {CONNECTIONS} keep-alive connections, server {}, load generator and vendor sink on CPU 1.",
        options.seconds,
        if pinned { "pinned to CPU 0" } else { "NOT pinned (no taskset or one CPU): figures are not per-core" }
    );
    println!("Single hit: 1 event (ga4_03 add_to_cart). Batched hit: {} events (ga4_17).\n", hits[1].events);
    println!(
        "| server | hit | max hits/s | server CPU at max | hits per CPU-second, delivery included | of ceiling | outbox drained after | \
         at 50%: p50 / p99 (achieved/s) | at 90%: p50 / p99 (achieved/s) | vendor calls / hit | written / event | \
         CPU µs / hit: request / delivery / commit / other | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");

    let mut servers: Vec<(String, Option<usize>)> = vec![("hyper 204 (ceiling)".into(), None)];
    servers.extend(options.tag_counts.iter().map(|&n| (format!("sluice, {n} tag{}", if n == 1 { "" } else { "s" }), Some(n))));
    let mut ceiling = [0.0f64; 2];
    // Per hit, the rate the last server sustained (its half load is the outage's load).
    let mut sustained = [0.0f64; 2];
    let mut memory = Vec::new();
    let mut outage = None;
    for (name, tags) in servers {
        let server = match start(&options, &name, tags, sink_addr, pinned).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let idle = status_kb(server.child.id(), "VmRSS:");
        for (i, hit) in hits.iter().enumerate() {
            // Warm-up: connections, pools and caches, the vendor connections of the server.
            load::closed_loop(server.addr, hit, CONNECTIONS, Duration::from_secs(1)).await;
            drained(&options, &server).await;
            let cpu_before = cpu_seconds(server.child.id());
            let threads_before = thread_cpu_ns(server.child.id());
            let written_before = io_bytes(server.child.id(), "write_bytes:");
            let calls_before = vendor_calls.load(Ordering::Relaxed);
            // The maximum is the median of three closed-loop runs: on a shared machine one run
            // can be lucky, and 90% of a lucky maximum is an overload, not a latency figure.
            let started = std::time::Instant::now();
            let mut runs = Vec::new();
            for _ in 0..3 {
                runs.push(load::closed_loop(server.addr, hit, CONNECTIONS, seconds.div_f64(3.0)).await);
            }
            runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
            let max = load::Throughput { per_sec: runs[1].per_sec, errors: runs.iter().map(|r| r.errors).sum() };
            let total = runs.iter().map(|r| r.per_sec).sum::<f64>() * seconds.as_secs_f64() / 3.0;
            let cpu_at_max = (cpu_seconds(server.child.id()) - cpu_before) / started.elapsed().as_secs_f64();
            // Delivery runs below the request path's priority: under full load it falls behind
            // and catches up after. The server's capacity is what the hits cost once every one
            // of them reached its vendors: CPU seconds until the outbox is empty again.
            let drain = drained(&options, &server).await;
            let per_core = total / (cpu_seconds(server.child.id()) - cpu_before).max(1e-9);
            let by_thread = per_hit_by_thread(&threads_before, &thread_cpu_ns(server.child.id()), total);
            let calls = (vendor_calls.load(Ordering::Relaxed) - calls_before) as f64 / total.max(1.0);
            let written = (io_bytes(server.child.id(), "write_bytes:") - written_before) as f64 / (total * hit.events as f64).max(1.0);
            if tags.is_none() {
                ceiling[i] = per_core;
            }
            // Half and 90% of what the server sustains (the ceiling's load generator saturates
            // before its server does, so there it is of what the generator reached).
            let rate = per_core.min(max.per_sec);
            sustained[i] = rate;
            let half = load::open_loop(server.addr, hit, CONNECTIONS, rate * 0.5, seconds).await;
            let most = load::open_loop(server.addr, hit, CONNECTIONS, rate * 0.9, seconds).await;
            println!(
                "| {name} | {} | {:.0} | {:.0}% | {:.0} | {} | {} | {} / {} ({:.0}) | {} / {} ({:.0}) | {calls:.2} | {written:.0} B | {by_thread} | {} |",
                hit.label,
                max.per_sec,
                cpu_at_max * 100.0,
                per_core,
                if ceiling[i] > 0.0 { format!("{:.1}%", 100.0 * per_core / ceiling[i]) } else { "—".into() },
                drain.map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                ms(half.p50),
                ms(half.p99),
                half.per_sec,
                ms(most.p50),
                ms(most.p99),
                most.per_sec,
                max.errors + half.errors + most.errors,
            );
        }
        if tags == Some(3) && options.outage > 0 {
            outage = Some(vendor_outage(&options, &server, &hits[0], sustained[0] * 0.5, &sink_status).await);
        }
        let (held, failed) = load::open_many(server.addr, &hits[0], HELD_CONNECTIONS).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = status_kb(server.child.id(), "VmRSS:");
        let peak = status_kb(server.child.id(), "VmHWM:");
        drop(held);
        memory.push((server.name.clone(), idle, rss, peak, failed));
    }
    let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
    println!("\n| server | RSS at start | RSS with {HELD_CONNECTIONS} connections open | peak RSS over the run | hits failed of the {HELD_CONNECTIONS} sent at once |");
    println!("|---|---|---|---|---|");
    for (name, idle, rss, peak, failed) in memory {
        println!("| {name} | {} | {} | {} | {failed} |", mb(idle), mb(rss), mb(peak));
    }
    if let Some(o) = outage {
        println!("\n{o}");
    }
    println!("\nServer logs and configs: {}", options.out.display());
    std::process::ExitCode::SUCCESS
}

/// Starts one server pinned to CPU 0 and waits until it accepts connections.
async fn start(options: &Options, name: &str, tags: Option<usize>, sink: SocketAddr, pinned: bool) -> Result<Server, String> {
    let addr = free_port().await?;
    let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let log = std::fs::File::create(options.out.join(format!("{slug}.log"))).map_err(|e| e.to_string())?;
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]);
        c
    } else {
        Command::new("env")
    };
    match tags {
        None => {
            let me = std::env::current_exe().map_err(|e| e.to_string())?;
            command.arg(me).args(["ceiling", "--listen", &addr.to_string()]);
        }
        Some(n) => {
            let config = options.out.join(format!("{slug}.toml"));
            // Each run starts with empty queues: a backlog left by an earlier run is not this run's work.
            let _ = std::fs::remove_dir_all(options.out.join(format!("{slug}.toml.outbox")));
            std::fs::write(&config, sluice_config(&options.templates, n, sink)).map_err(|e| e.to_string())?;
            command.arg(&options.sluice).args(["serve", "--config"]).arg(&config).args(["--listen", &addr.to_string()]);
            command.env("LOAD_VENDOR_TOKEN", "load-token");
        }
    }
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let child = command.stdout(log).stderr(stderr).stdin(Stdio::null()).spawn().map_err(|e| format!("cannot start: {e}"))?;
    let config = tags.map(|_| options.out.join(format!("{slug}.toml")));
    let mut server = Server { name: name.to_string(), child, addr, config };
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("exited with {status}; see its log in {}", options.out.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("did not start listening within 60 s".into())
}

/// The container under load: the GA4 client and `n` vendor tags (Meta, TikTok, GA4, repeated,
/// plus a webhook as the tenth), all pointed at the sink. Logging and the consent audit stay on,
/// as in production (they go to the log file). Unset consent counts as granted — a site without
/// a consent banner outside the EEA — so every tag runs for every event of both hits (the batched
/// capture carries no consent signal): the heaviest load a hit can cause.
fn sluice_config(templates: &Path, n: usize, sink: SocketAddr) -> String {
    let wasm = |name: &str| templates.join(format!("{name}.wasm")).display().to_string();
    let base = format!("http://{sink}");
    let mut config = format!(
        "{}[consent]\nunset = \"grant\"\n\n[outbound]\nallow_http = [\"{base}\"]\nallow_private = [\"127.0.0.1/32\"]\n\n\
         [[client]]\nname = \"ga4\"\nwasm = \"{}\"\n{}\n",
        std::env::var("SLUICE_LOAD_EXTRA").map(|e| e.replace("\\n", "\n") + "\n\n").unwrap_or_default(),
        wasm("ga4-client"),
        sluice_benches::GA4_CLIENT_GRANTS
    );
    // What each template declares, as an operator would grant it (the Meta tag sets its cookies).
    let grant = |cookies: &str, response_cookies: &str| {
        format!("grants = {{ event_data = [\"*\"], cookies = [{cookies}], response_cookies = [{response_cookies}], outbound = [\"{base}/\"] }}")
    };
    for i in 0..n {
        let round = i / 3 + 1;
        let tag = match (i, i % 3) {
            (9, _) => format!("name = \"webhook\"\nwasm = \"{}\"\nparams = {{ url = \"{base}/webhook\" }}\ngrants = {{ event_data = [\"*\"], outbound = [\"{base}/\"] }}", wasm("webhook-tag")),
            (_, 0) => format!(
                "name = \"meta-{round}\"\nwasm = \"{}\"\nparams = {{ pixel_id = \"1{round}\", access_token = \"${{LOAD_VENDOR_TOKEN}}\", endpoint = \"{base}\" }}\n{}",
                wasm("meta-capi-tag"),
                grant("\"_fbp\", \"_fbc\"", "\"_fbp\", \"_fbc\"")
            ),
            (_, 1) => format!(
                "name = \"tiktok-{round}\"\nwasm = \"{}\"\nparams = {{ pixel_code = \"C{round}\", access_token = \"${{LOAD_VENDOR_TOKEN}}\", endpoint = \"{base}\" }}\n{}",
                wasm("tiktok-events-tag"),
                grant("\"ttclid\", \"_ttp\"", "")
            ),
            _ => format!("name = \"ga4-{round}\"\nwasm = \"{}\"\nparams = {{ endpoint = \"{base}\" }}\n{}", wasm("ga4-tag"), grant("", "")),
        };
        config.push_str(&format!("\n[[tag]]\n{tag}\ntrigger = {{ events = [\"*\"] }}\n"));
    }
    config
}

/// A vendor outage under half the sustained load of single hits (`rate`): the sink answers 503
/// for `options.outage` seconds, then 200; the load goes on until the outbox has drained.
async fn vendor_outage(options: &Options, server: &Server, hit: &load::Hit, rate: f64, sink: &AtomicU16) -> String {
    let Some(config) = &server.config else { return String::new() };
    sink.store(503, Ordering::Relaxed);
    let during = load::open_loop(server.addr, hit, CONNECTIONS, rate, Duration::from_secs(options.outage)).await;
    sink.store(200, Ordering::Relaxed);
    let (backlog, _) = outbox_state(&options.sluice, config);
    let restored = std::time::Instant::now();
    let mut after = Vec::new();
    // With the load going on something is always pending (batches filling); the backlog is
    // gone when no queue's oldest item is older than a few seconds.
    let drained = loop {
        after.push(load::open_loop(server.addr, hit, CONNECTIONS, rate, Duration::from_secs(1)).await);
        if outbox_state(&options.sluice, config).1 <= 3 {
            break Some(restored.elapsed());
        }
        if restored.elapsed() > Duration::from_secs(600) {
            break None;
        }
    };
    let worst_after = after.iter().map(|l| l.p99).max().unwrap_or_default();
    format!(
        "Vendor outage on {}: {} s of 503 at {rate:.0} single hits/s (half the sustained rate): p50 / p99 during it {} / {} ({} errors); \
         backlog when it ended {backlog} items; drained in {} with the load going on (worst per-second p99 meanwhile {}).",
        server.name,
        options.outage,
        ms(during.p50),
        ms(during.p99),
        during.errors,
        drained.map_or("more than 600 s".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        ms(worst_after),
    )
}

/// Waits (no load) until the server's outboxes hold nothing, up to 300 s; how long that took,
/// `None` for a server without an outbox (the ceiling) or one that did not drain.
async fn drained(options: &Options, server: &Server) -> Option<Duration> {
    let config = server.config.as_ref()?;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        if outbox_state(&options.sluice, config).0 == 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Items pending in every outbox of `config`, and the oldest one's age in seconds, as
/// `sluice outbox status` reports them.
fn outbox_state(sluice: &Path, config: &Path) -> (u64, u64) {
    let out = Command::new(sluice).args(["outbox", "--config"]).arg(config).arg("status").env("LOAD_VENDOR_TOKEN", "load-token").output();
    let Ok(out) = out else { return (u64::MAX, u64::MAX) };
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |line: &str, name: &str| line.split_whitespace().skip_while(|w| *w != name).nth(1).and_then(|v| v.parse::<u64>().ok());
    let pending = text.lines().filter_map(|l| field(l, "pending")).sum();
    let oldest = text.lines().filter_map(|l| field(l, "oldest")).max().unwrap_or(0);
    (pending, oldest)
}

async fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
