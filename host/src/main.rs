//! The `sluice` binary: `serve`, `check`, `inspect` and `outbox`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::{Container, ContainerConfig, authoring};
use sluice_manifest::PermissionSet;

/// mimalloc instead of glibc's malloc: a hit allocates and frees hundreds of small buffers
/// across the request, delivery and commit threads, and glibc's arenas spent ~8% of the
/// server's CPU on it under load (`_int_malloc`, `malloc_consolidate`...; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints a line of CLI output through the output masker, like every line the process writes.
/// A closed stdout (`sluice inspect x.wasm | head -3`) ends the output, not the process with a
/// panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{}", sluice::output::mask(&format!($($arg)*)));
    }};
}

/// Sluice: a server-side tag host running sandboxed WebAssembly templates.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a container until SIGTERM or Ctrl-C (in-flight requests finish first).
    Serve {
        /// The container config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Override the config's listen address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Exit 0 when the server's health endpoint answers 200 (a container's HEALTHCHECK).
    Healthcheck {
        /// The endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Validate a container config and show, per template, what it asks for and what it gets.
    Check {
        /// The container config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the delivery queues: depth, oldest item, dead letters; inspect, replay or purge
    /// dead letters. Reading works beside a running server; replay and purge need it stopped.
    Outbox {
        /// The container config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Show a template's kind, name, version, declared permissions and parameters.
    Inspect {
        /// The template `.wasm`.
        file: PathBuf,
    },
    /// Create a template crate: a working client or tag with a mock-host test, ready for
    /// `cargo test` and `sluice build`.
    New {
        /// `tag` or `client`.
        kind: NewKind,
        /// The template's name, also the crate's (lowercase, digits, `-`).
        name: String,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Depend on the SDK in this directory (a checkout's `sdk/`) instead of the repository.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build the template crate in DIR as a component (checked before and after) and print
    /// where the `.wasm` is.
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Summarise the consent audit over a time window: per tag, events allowed, stripped of
    /// personal data and blocked; per purpose, granted and missing; the keys removed.
    Audit {
        /// The container config (TOML): its `[consent] audit` file is read.
        #[arg(long, short, required_unless_present = "file")]
        config: Option<PathBuf>,
        /// Read this audit file instead (`-`: standard input, e.g. a server's captured output).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Records from this time on (inclusive): RFC 3339 UTC (`2026-12-01T10:00:00Z`) or a
        /// duration ago (`30m`, `24h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Records before this time (exclusive), in the same forms.
        #[arg(long)]
        until: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NewKind {
    Tag,
    Client,
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Per template: pending items, disk space, oldest item's age, dead letters (the default).
    Status,
    /// List a template's dead letters (personal data removed, secrets masked).
    Dead {
        /// The template's name in the config.
        template: String,
    },
    /// Put a template's dead letters back in its queue, to be delivered again.
    Replay {
        /// The template's name in the config.
        template: String,
    },
    /// Delete a template's dead letters.
    Purge {
        /// The template's name in the config.
        template: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, matches!(cli.command, Command::Serve { .. }));
    let result = run(cli.command);
    // Batched output (the consent audit, a served log) is written out before the process ends.
    sluice::output::flush_batched();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Error messages can quote configuration (a URL, a header): masked like every line.
            eprintln!("error: {}", sluice::output::mask(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Installs the log. `sluice serve` writing to a file or a collector (not a terminal) logs in
/// batches ([`sluice::output::Batched`]: a line per request was one `write` each); a panic
/// writes them out before its own message.
fn init_logging(format: LogFormat, serving: bool) {
    let filter = std::env::var("SLUICE_LOG").unwrap_or_else(|_| "info".into());
    let format = match format {
        LogFormat::Text => sluice::output::LogFormat::Text,
        LogFormat::Json => sluice::output::LogFormat::Json,
    };
    // Colours only for a terminal: escape codes in a log file or a collector are noise (and
    // writing them showed in the server's profile under load).
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let subscriber = if serving && !terminal {
        let sink = sluice::output::Batched::new("log", Box::new(std::io::stderr()));
        let panic = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            sluice::output::flush_batched_on_panic();
            panic(info);
        }));
        sluice::output::subscriber(format, &filter, sluice::output::BatchedLines(sink), false)
    } else {
        sluice::output::subscriber(format, &filter, std::io::stderr, terminal)
    };
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::Check { config } => check(config),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Inspect { file } => inspect(file),
        Command::New { kind, name, dir, sdk_path } => {
            let kind = match kind {
                NewKind::Tag => authoring::TemplateKind::Tag,
                NewKind::Client => authoring::TemplateKind::Client,
            };
            let sdk = match sdk_path {
                Some(p) => authoring::SdkSource::Path(std::path::absolute(&p).with_context(|| format!("cannot resolve {}", p.display()))?),
                None => authoring::SdkSource::upstream(),
            };
            let root = authoring::create(kind, &name, &dir, &sdk)?;
            out!("created {}: `cargo test` runs its mock-host test, `sluice build {}` makes the component", root.display(), root.display());
            Ok(())
        }
        Command::Build { dir } => {
            let wasm = authoring::build(&dir)?;
            // The component must load as the host will load it: manifest embedded, world exported.
            let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let d = sluice::read_declaration(&wasm, &bytes)?;
            out!("built {} template {:?}: {}", d.kind, d.name, wasm.display());
            Ok(())
        }
        Command::Outbox { config, action } => outbox(config, action.unwrap_or(OutboxAction::Status)),
        Command::Audit { config, file, since, until, json } => audit(config, file, (since, until), json),
    }
}

fn audit(config: Option<PathBuf>, file: Option<PathBuf>, (since, until): (Option<String>, Option<String>), json: bool) -> anyhow::Result<()> {
    use sluice::audit::{Summary, Window, configured_file};
    let window = Window::from_args(since.as_deref(), until.as_deref(), std::time::SystemTime::now())?;
    let summary = match (file, config) {
        (Some(file), _) if file.as_os_str() == "-" => Summary::read("standard input", std::io::stdin().lock(), window)?,
        (Some(file), _) => Summary::read_file(&file, window)?,
        (None, Some(config)) => Summary::read_file(&configured_file(&ContainerConfig::load(&config)?)?, window)?,
        (None, None) => anyhow::bail!("pass --config FILE (its [consent] audit file is read) or --file PATH"),
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        out!("{summary}");
    }
    Ok(())
}

fn outbox(path: PathBuf, action: OutboxAction) -> anyhow::Result<()> {
    let config = ContainerConfig::load(&path)?;
    let dir = config.outboxes();
    match action {
        OutboxAction::Status => {
            out!("{}: outboxes in {}", path.display(), config.outbox_dir.display());
            for s in dir.status()? {
                let age = s.oldest_age_secs.map_or("-".to_string(), |a| format!("{a} s"));
                out!("{:<24} pending {:>8}  oldest {:>10}  dead {:>6}  on disk {:>10} B", s.template, s.pending, age, s.dead, s.bytes_on_disk);
                for problem in s.problems {
                    out!("  damaged, skipped: {problem}");
                }
            }
        }
        OutboxAction::Dead { template } => {
            for d in dir.dead_letters(&template)? {
                out!("{}  attempts {}  queued {}  dead {}\n  reason: {}\n  data: {}", d.id, d.attempts, d.created_ms, d.dead_ms, d.reason, d.data);
            }
        }
        OutboxAction::Replay { template } => out!("{template}: {} dead letters queued again", dir.replay(&template)?),
        OutboxAction::Purge { template } => out!("{template}: {} dead letters deleted", dir.purge(&template)?),
    }
    Ok(())
}

fn serve(path: PathBuf, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let config = ContainerConfig::load(&path)?;
    let admin = config.admin.clone();
    let addr = listen.unwrap_or(config.listen);
    let live = sluice::Live::load(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!("sluice listening on http://{bound} with {} templates", live.current().templates().count());
        let admin_listener = match admin {
            Some(admin) => {
                let admin_listener = tokio::net::TcpListener::bind(admin.listen).await.with_context(|| format!("cannot listen on {} ([admin] listen)", admin.listen))?;
                let admin_bound = admin_listener.local_addr().unwrap_or(admin.listen);
                tracing::info!("admin listener (preview UI, /metrics, reload) on http://{admin_bound}");
                // The one line that is not masked: the operator needs the URL with its token to
                // open the UI. It goes to stdout only, never to the log.
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout(), "preview UI: {}", admin.ui_url(admin_bound));
                Some(admin_listener)
            }
            None => None,
        };
        sluice::server::serve_all(live, listener, admin_listener, shutdown_signal()).await;
        Ok(())
    })
}

/// `sluice healthcheck`: exit 0 when `url` answers 200 (for a container's HEALTHCHECK, with no
/// curl in the image).
fn healthcheck(url: &str) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    anyhow::ensure!(parsed.scheme() == "http", "only http:// URLs can be checked (got {url:?})");
    let host = parsed.host_str().context("the URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.next().with_context(|| format!("{host} does not resolve"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    // One write: a server may answer (and close) as soon as it has the request line.
    stream.write_all(format!("GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", parsed.path()).as_bytes())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(status == "200", "{url} answered {:?}", line.lines().next().unwrap_or(""));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let config = ContainerConfig::load(&path)?;
    let container = Container::load(&config)?;
    out!("{}: OK, listen {}", path.display(), config.listen);
    if let Some(admin) = &config.admin {
        out!("admin listener {} (preview UI, /metrics, reload), token {}", admin.listen, admin.token_source());
    }
    for t in container.templates() {
        let d = &t.declaration;
        out!("\n{} {:?} (template {} {}, priority {})", d.kind, t.name, d.name, d.version, t.priority);
        print_set("  asks for", &d.permissions);
        print_set("  gets    ", &t.grant.summary());
        for note in t.grant.notes() {
            out!("  note: {note}");
        }
        for (name, p) in &t.params {
            out!("  param {name} = {p:?}");
        }
    }
    // What loads but will fail on live traffic, each with its fix; a warning does not fail
    // the check (the container does serve), it saves finding it one live event at a time.
    let warnings = container.warnings();
    if !warnings.is_empty() {
        out!("\n{} warning(s):", warnings.len());
        for w in &warnings {
            out!("  warning: {}: {}", w.template, w.message);
        }
    }
    Ok(())
}

fn inspect(path: PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let d = sluice::read_declaration(&path, &bytes)?;
    out!("{} template {:?} version {}", d.kind, d.name, d.version);
    if !d.description.is_empty() {
        out!("  {}", d.description);
    }
    print_set("  permissions", &d.permissions);
    if d.kind == sluice_manifest::Kind::Tag {
        out!("  delivery: {}", d.delivery);
    }
    if d.permissions.outbound.iter().any(|p| p.starts_with('{')) {
        // What it reaches when the operator keeps the defaults.
        let defaults = d.resolved_permissions(|name| d.parameter(name).and_then(|p| p.default.as_ref()?.as_str().map(str::to_string)));
        match defaults {
            Ok(set) => out!("  outbound with the default parameters: {:?}", set.outbound),
            Err(e) => out!("  outbound needs its parameters set: {e}"),
        }
    }
    for p in &d.parameters {
        let default = p.default.as_ref().map(|v| format!("default {v}"));
        let flags = [p.required.then(|| "required".to_string()), p.secret.then(|| "secret".to_string()), default]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        out!("  param {}{}: {}", p.name, if flags.is_empty() { String::new() } else { format!(" ({flags})") }, p.description);
    }
    Ok(())
}

fn print_set(label: &str, p: &PermissionSet) {
    let mut parts = Vec::new();
    let mut list = |name: &str, v: &[String]| {
        if !v.is_empty() {
            parts.push(format!("{name}={v:?}"));
        }
    };
    list("request_headers", &p.request_headers);
    list("cookies", &p.cookies);
    list("event_data", &p.event_data);
    list("response_headers", &p.response_headers);
    list("response_cookies", &p.response_cookies);
    list("outbound", &p.outbound);
    for (name, on) in [
        ("query", p.query),
        ("body", p.body),
        ("remote_address", p.remote_address),
        ("consent", p.consent),
        ("storage", p.storage),
        ("logging", p.logging),
    ] {
        if on {
            parts.push(name.to_string());
        }
    }
    out!("{label}: {}", if parts.is_empty() { "nothing".into() } else { parts.join(" ") });
}

