//! Delivery as a user sees it: every accepted event reaches its vendor through the tag's
//! durable outbox, whatever the vendor does — an outage, throttling, a batch refused for one
//! bad event — and a damaged queue file at start costs only what is damaged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::time::{Duration, Instant};

use sluice::Container;
use sluice_tests::{FakeVendor, Received, ga4_client_entry, hit_request, loopback_outbound, parse_config, scratch_dir, template};

/// The GA4 client and the bundled webhook, batching up to 10 events, retrying fast.
fn config(origin: &str, outbox: &std::path::Path, tag_extra: &str) -> String {
    format!(
        "{outbound}[outbox]\ndir = \"{dir}\"\nretry_base_ms = 50\nretry_max_ms = 200\ncommit_ms = 2\ndrain_ms = 100\n\n[consent]\naudit = \"off\"\n\n{client}\n\
         [[tag]]\nname = \"hook\"\nwasm = \"{wasm}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ url = \"{origin}/hook\" }}\n\
         grants = {{ event_data = [\"*\"], outbound = [\"{origin}/\"], logging = true }}\ndelivery = {{ max_items = 10, max_wait_ms = 20 }}\n{tag_extra}",
        outbound = loopback_outbound(),
        dir = outbox.display(),
        client = ga4_client_entry(),
        wasm = template("webhook-tag").display(),
    )
}

fn load(text: &str) -> Arc<Container> {
    Arc::new(Container::load(&parse_config(text).unwrap_or_else(|e| panic!("config: {e}"))).unwrap_or_else(|e| panic!("load: {e}")))
}

/// A GA4 page view carrying `event_id` = `id`.
fn hit(id: &str) -> sluice::RequestData {
    hit_request(&format!("v=2&tid=G-TEST&cid=1.2&en=page_view&ep.event_id={id}&dl=https%3A%2F%2Fshop.example%2F"))
}

/// Every event id the vendor received, with how many times.
fn ids(received: &[Received]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in received {
        for event in r.json().as_array().cloned().unwrap_or_default() {
            *seen.entry(event["x-sluice-event-id"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
        }
    }
    seen
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_events_and_loses_none() {
    let vendor = FakeVendor::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicUsize::new(0));
    let (d, r) = (down.clone(), refused.clone());
    vendor.judge(
        "/hook",
        Arc::new(move |_: &Received| {
            if d.load(Ordering::SeqCst) {
                r.fetch_add(1, Ordering::SeqCst);
                (503, "deploying".into())
            } else {
                (200, "{}".into())
            }
        }),
    );
    // A second webhook, to a vendor that stays up: one vendor's outage is not another's.
    let other = format!(
        "\n[[tag]]\nname = \"other\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ url = \"{origin}/other\" }}\n\
         grants = {{ event_data = [\"*\"], outbound = [\"{origin}/\"] }}\n",
        template("webhook-tag").display(),
        origin = vendor.origin()
    );
    let container = load(&(config(&vendor.origin(), &scratch_dir("outage"), "") + &other));
    let expected: Vec<String> = (0..60).map(|n| format!("ev-{n}")).collect();
    for id in &expected {
        let (response, trace) = container.handle(hit(id)).await;
        assert_eq!(response.status, 204, "the visitor's request never waits for the vendor");
        assert_eq!(trace.tag_run(0, "hook").expect("ran").outcome, sluice::Outcome::Queued);
    }
    wait_until("the vendor refused a few retries", || refused.load(Ordering::SeqCst) >= 3).await;
    // Between attempts (not while one is in flight) the backlog shows as retrying; nothing left.
    let hook = || container.outbox_status().into_iter().find(|s| s.template == "hook").expect("hook's outbox");
    wait_until("the backlog shows as retrying", || hook().retrying.is_some_and(|n| n > 0)).await;
    assert_eq!(hook().pending, expected.len(), "the backlog is visible, nothing lost: {:?}", hook());
    wait_until("the other vendor got every event meanwhile", || ids(&vendor.received_at("/other")).len() == expected.len()).await;
    down.store(false, Ordering::SeqCst);
    // What the vendor answered 503 to was not taken; only the requests after it came back count.
    let back_at = vendor.received_at("/hook").len();

    wait_until("the queue is empty", || container.outbox_status()[0].pending == 0).await;
    wait_until("nothing is retrying", || container.outbox_status()[0].retrying == Some(0)).await;
    let taken = ids(&vendor.received_at("/hook")[back_at..]);
    let status = &container.outbox_status()[0];
    assert_eq!((status.template.as_str(), status.dead, status.retrying), ("hook", 0, Some(0)));
    for id in &expected {
        assert_eq!(taken.get(id), Some(&1), "{id} reached the vendor once after the outage: {taken:?}");
    }
    assert_eq!(taken.len(), expected.len(), "exactly the accepted events, no others: {taken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_a_slow_vendor_holds_leaves_visitors_requests_their_sandboxes() {
    let vendor = FakeVendor::start().await;
    // One instance slot per pool, and a vendor that holds what it is sent (paths under
    // `/gated`) until the test lets it answer, with time limits far beyond the test's: were
    // delivery to share the request path's slots, the held batch would hold the only one, and
    // every visitor's request would wait for the vendor.
    let text = config(&format!("{}/gated", vendor.origin()), &scratch_dir("held-batch"), "")
        .replace("[outbound]\n", "[outbound]\ntimeout_ms = 60000\n")
        .replace("[consent]", "[limits]\nmax_concurrent = 1\nwall_ms = 60000\nrequest_ms = 60000\n\n[consent]");
    let container = load(&text);
    let (response, _) = container.handle(hit("first")).await;
    assert_eq!(response.status, 204);
    assert_eq!(vendor.wait_for("/gated/hook", 1).await.len(), 1, "the batch reached the vendor, which holds it");

    let (response, trace) = tokio::time::timeout(Duration::from_secs(5), container.handle(hit("second")))
        .await
        .expect("a visitor's request is answered while the vendor holds a batch");
    assert_eq!(response.status, 204);
    assert_eq!(trace.tag_run(0, "hook").expect("ran").outcome, sluice::Outcome::Queued);

    vendor.release(10);
    wait_until("both events are delivered", || ids(&vendor.received_at("/gated/hook")).len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_pauses_the_tag_for_retry_after_and_a_batch_refused_for_one_event_isolates_it() {
    let vendor = FakeVendor::start().await;
    let calls = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let c = calls.clone();
    // First answer: 429 (Retry-After: 1). Then any batch holding "ev-bad" is refused whole,
    // as Meta and TikTok do; the rest are taken.
    vendor.judge(
        "/hook",
        Arc::new(move |r: &Received| {
            let mut at = c.lock().expect("calls");
            at.push(Instant::now());
            if at.len() == 1 {
                return (429, "slow down".into());
            }
            if String::from_utf8_lossy(&r.body).contains("ev-bad") { (400, "invalid event in batch".into()) } else { (200, "{}".into()) }
        }),
    );
    let container = load(&config(&vendor.origin(), &scratch_dir("throttle"), ""));
    let expected: Vec<String> = ["ev-0", "ev-1", "ev-bad", "ev-3", "ev-4", "ev-5"].map(String::from).to_vec();
    for id in &expected {
        container.handle(hit(id)).await;
    }
    wait_until("the bad event is dead-lettered", || container.outbox_status()[0].dead == 1).await;
    wait_until("the rest is delivered", || container.outbox_status()[0].pending == 0).await;

    let at = calls.lock().expect("calls").clone();
    assert!(at[1] - at[0] >= Duration::from_millis(900), "the tag waited out Retry-After: 1 (next try after {:?})", at[1] - at[0]);
    let received = vendor.received_at("/hook");
    assert!(received.len() >= 3, "throttled, then the halving: {}", received.len());
    let taken: HashMap<String, usize> = ids(&received[1..].iter().filter(|r| !String::from_utf8_lossy(&r.body).contains("ev-bad")).cloned().collect::<Vec<_>>());
    for id in expected.iter().filter(|id| *id != "ev-bad") {
        assert!(taken.contains_key(id), "{id} was delivered: {taken:?}");
    }
    let dead = container.dead_letters("hook");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "ev-bad");
    assert!(dead[0].reason.contains("HTTP 400: invalid event in batch"), "{}", dead[0].reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_replays_and_purges_dead_letters() {
    let vendor = FakeVendor::start().await;
    let refuse = Arc::new(AtomicBool::new(true));
    let r = refuse.clone();
    vendor.judge("/hook", Arc::new(move |_: &Received| if r.load(Ordering::SeqCst) { (400, "no".into()) } else { (200, "{}".into()) }));
    let dir = scratch_dir("operator");
    let text = config(&vendor.origin(), &dir, "");
    let container = load(&text);
    // The visitor's email travels in the event (the operator's view must not show it).
    container.handle(hit_request("v=2&tid=G-TEST&cid=1.2&en=sign_up&ep.event_id=ev-1&ep.email=jane.doe%40example.com")).await;
    wait_until("the refused event is dead-lettered", || container.outbox_status()[0].dead == 1).await;
    container.drain().await;
    drop(container);

    let config = parse_config(&text).unwrap();
    let outboxes = config.outboxes();
    let status = outboxes.status().unwrap();
    assert_eq!((status[0].template.as_str(), status[0].pending, status[0].dead), ("hook", 0, 1), "{status:?}");
    let dead = outboxes.dead_letters("hook").unwrap();
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("ev-1", 0));
    assert!(dead[0].reason.contains("HTTP 400: no"), "{dead:?}");
    assert!(dead[0].data.contains("sign_up") && !dead[0].data.contains("jane.doe"), "personal data removed: {}", dead[0].data);
    assert!(outboxes.dead_letters("nope").unwrap_err().to_string().contains("no outbox for \"nope\""));

    // Fixed on the vendor's side: replayed, delivered.
    refuse.store(false, Ordering::SeqCst);
    assert_eq!(outboxes.replay("hook").unwrap(), 1);
    let container = load(&text);
    container.start_delivery();
    wait_until("the replayed event is delivered", || ids(&vendor.received_at("/hook")).contains_key("ev-1") && container.outbox_status()[0].pending == 0).await;
    assert!(outboxes.replay("hook").unwrap_err().to_string().contains("in use by another sluice process"), "replay needs the server stopped");
    container.drain().await;
    drop(container);
    assert_eq!(outboxes.purge("hook").unwrap(), 0, "nothing left to purge");
}

/// What a run left: 20 events (`ev-0`..`ev-19`) queued for the webhook while its vendor was
/// down, the container gone.
struct Backlog {
    vendor: FakeVendor,
    /// The vendor answers 503 while this is set.
    down: Arc<AtomicBool>,
    /// The outbox directory.
    dir: std::path::PathBuf,
    /// The container config, for the next run.
    text: String,
}

async fn backlog(name: &str) -> Backlog {
    let vendor = FakeVendor::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let d = down.clone();
    vendor.judge("/hook", Arc::new(move |_: &Received| if d.load(Ordering::SeqCst) { (503, String::new()) } else { (200, "{}".into()) }));
    let dir = scratch_dir(name);
    let text = config(&vendor.origin(), &dir, "");
    let first = load(&text);
    for n in 0..20 {
        first.handle(hit(&format!("ev-{n}"))).await;
    }
    first.drain().await;
    Backlog { vendor, down, dir, text }
}

/// The queue's segment files (`seg-*.log`) in `queue`, in order.
fn segments(queue: &std::path::Path) -> Vec<std::path::PathBuf> {
    let is_segment = |p: &std::path::Path| p.extension().is_some_and(|e| e == "log") && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seg-"));
    let mut all: Vec<_> = std::fs::read_dir(queue).unwrap().filter_map(Result::ok).map(|e| e.path()).filter(|p| is_segment(p)).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_queue_file_is_reported_and_skipped_and_the_rest_is_delivered_after_restart() {
    let Backlog { vendor, down, dir, text } = backlog("damaged").await;

    // Cut the last segment mid-record, as a crash mid-write or a bad disk would.
    let last = segments(&dir.join("hook")).pop().expect("a segment");
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 7).unwrap();

    // `sluice outbox status` reports the damage before the server starts again.
    let report = parse_config(&text).unwrap().outboxes().status().unwrap();
    assert_eq!(report[0].pending, 19, "{report:?}");
    assert!(report[0].problems.iter().any(|p| p.contains(&last.file_name().unwrap().to_string_lossy().to_string())), "{report:?}");

    down.store(false, Ordering::SeqCst);
    let back_at = vendor.received_at("/hook").len();
    let second = load(&text);
    second.start_delivery();
    wait_until("the intact events are delivered", || second.outbox_status()[0].pending == 0 && ids(&vendor.received_at("/hook")[back_at..]).len() >= 19).await;
    let seen = ids(&vendor.received_at("/hook")[back_at..]);
    assert_eq!(seen.len(), 19, "all but the cut record: {seen:?}");
    assert!(!seen.contains_key("ev-19"), "the damaged record is the last one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_file_unreadable_for_a_moment_delays_delivery_and_loses_nothing() {
    let Backlog { vendor, down, dir, text } = backlog("unreadable").await;

    // The next run opens the queue, then its files cannot be read for a moment (a disk that
    // went away, a full file table) just as delivery starts.
    down.store(false, Ordering::SeqCst);
    let back_at = vendor.received_at("/hook").len();
    let second = load(&text);
    let aside = dir.join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let segments = segments(&dir.join("hook"));
    assert!(!segments.is_empty());
    let moved = |file: &std::path::PathBuf| aside.join(file.file_name().unwrap());
    for file in &segments {
        std::fs::rename(file, moved(file)).unwrap();
    }
    second.start_delivery();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vendor.received_at("/hook").len(), back_at, "nothing could be read, so nothing was sent");
    assert_eq!(second.outbox_status()[0].pending, 20, "and nothing was given up on");
    for file in &segments {
        std::fs::rename(moved(file), file).unwrap();
    }
    wait_until("every event is delivered", || second.outbox_status()[0].pending == 0).await;
    let seen = ids(&vendor.received_at("/hook")[back_at..]);
    assert_eq!(seen.len(), 20, "every event, once the files read again: {seen:?}");
    assert_eq!(second.outbox_status()[0].damaged, 0);
}

/// Set in a child process of the test binary: serve the container config at this path until
/// killed, writing the port to `<config>.port` (and the admin listener's, if the config has
/// one, to `<config>.admin-port`).
const CHILD_ENV: &str = "SLUICE_E2E_SERVE";

/// Not a test of its own: in a child process started by [`spawn_server`], the real server as
/// `sluice serve` runs it — reloading on `SIGHUP`, with its admin listener.
#[test]
fn serve_in_child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    // Its log goes to stderr, which the test shows when it fails.
    let _ = tracing::subscriber::set_global_default(sluice::output::subscriber(sluice::output::LogFormat::Text, "warn", std::io::stderr, false));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let config = sluice::ContainerConfig::load(std::path::Path::new(&path)).expect("config");
        let admin = config.admin.clone();
        let live = sluice::Live::load(config).expect("load");
        let mut admin_listener = None;
        if let Some(admin) = admin {
            let listener = tokio::net::TcpListener::bind(admin.listen).await.expect("bind admin");
            let port = listener.local_addr().expect("addr").port();
            std::fs::write(format!("{path}.admin-port"), port.to_string()).expect("admin port file");
            admin_listener = Some(listener);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::fs::write(format!("{path}.port"), port.to_string()).expect("port file");
        sluice::server::serve_all(live, listener, admin_listener, std::future::pending()).await;
    });
}

/// The server in a child process, SIGKILLed and reaped when dropped (a failing test leaves no
/// server behind).
pub(crate) struct ChildServer(std::process::Child);

impl ChildServer {
    /// The child's process id (to signal it).
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `kill -9` and reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the server in a child process; its address once it listens.
pub(crate) async fn spawn_server(config: &std::path::Path) -> (ChildServer, String) {
    let port_file = format!("{}.port", config.display());
    let _ = std::fs::remove_file(&port_file);
    let _ = std::fs::remove_file(format!("{}.admin-port", config.display()));
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "delivery::serve_in_child_process", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, config)
        .env("TEST_SECRET", "s3cr3t-value")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the server");
    let child = ChildServer(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            return (child, format!("http://127.0.0.1:{}", port.trim()));
        }
        assert!(Instant::now() < deadline, "the child server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_load_delivers_every_accepted_event_after_restart() {
    let vendor = FakeVendor::start().await;
    // The vendor is slow (each request held until released), so at the kill some batches are
    // in flight, some queued, and some delivered.
    let taken = Arc::new(AtomicUsize::new(0));
    let t = taken.clone();
    vendor.judge("/hook", Arc::new(move |_: &Received| {
        t.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        (200, "{}".into())
    }));
    let dir = scratch_dir("kill");
    let path = dir.join("container.toml");
    // answer_after_commit: an event the browser got 204 for is on disk, so none may be lost.
    let text = config(&vendor.origin(), &dir.join("outbox"), "").replace("commit_ms = 2\n", "commit_ms = 2\nanswer_after_commit = true\n");
    std::fs::write(&path, text).expect("write the config");

    let (mut first, base) = spawn_server(&path).await;
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0..300 {
        let id = format!("ev-{n}");
        let url = format!("{base}/g/collect?v=2&tid=G-TEST&cid=1.2&en=page_view&ep.event_id={id}&dl=https%3A%2F%2Fshop.example%2F");
        let Ok(response) = http.post(url).send().await else { break };
        if response.status() == 204 {
            accepted.push(id);
        }
        if n == 150 {
            // Mid-load, mid-delivery: SIGKILL, no chance to drain or flush.
            assert!(taken.load(Ordering::SeqCst) > 0, "some batches were being delivered");
            first.kill();
            break;
        }
    }
    assert!(accepted.len() >= 150, "the load was accepted until the kill: {}", accepted.len());
    let before_restart = vendor.received_at("/hook").len();

    let (mut second, _) = spawn_server(&path).await;
    wait_until("every accepted event reached the vendor", || {
        let seen = ids(&vendor.received_at("/hook"));
        accepted.iter().all(|id| seen.contains_key(id))
    })
    .await;
    second.kill();

    let seen = ids(&vendor.received_at("/hook"));
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill test: {} accepted, {} vendor requests before the restart, {} after; {duplicates} redelivered (same event id) after the kill",
        accepted.len(),
        before_restart,
        vendor.received_at("/hook").len() - before_restart
    );
    assert!(seen.keys().all(|id| accepted.contains(id)), "nothing the server did not accept reached the vendor");
    assert!(duplicates <= 2 * 10 * 2, "only batches in flight at the kill (2 × 10 items) may come twice: {duplicates}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_request_queued_with_send_later_is_retried_until_taken_and_refusals_are_dead_lettered() {
    let vendor = FakeVendor::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Down for the first two requests; then it takes everything but the event it does not know.
    vendor.judge(
        "/later",
        Arc::new(move |r: &Received| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            match r.headers.get("x-event-id").and_then(|v| v.to_str().ok()) {
                _ if n < 2 => (503, String::new()),
                Some("ev-unknown") => (404, "no such thing".into()),
                _ => (200, String::new()),
            }
        }),
    );
    let origin = vendor.origin();
    let text = format!(
        "{outbound}[outbox]\nretry_base_ms = 50\nretry_max_ms = 200\n\n[consent]\naudit = \"off\"\n\n{client}\n\
         [[tag]]\nname = \"probe\"\nwasm = \"{wasm}\"\ntrigger = {{ events = [\"*\"] }}\n\
         params = {{ sink = \"{origin}/sink\", label = \"p\", mode = \"send_later\", extra_url = \"{origin}/later\" }}\n\
         grants = {{ event_data = [\"*\"], outbound = [\"{origin}/later\"] }}\n",
        outbound = loopback_outbound(),
        client = ga4_client_entry(),
        wasm = template("probe-tag").display(),
    );
    let container = load(&text);
    for id in ["ev-a", "ev-unknown", "ev-b"] {
        let (_, trace) = container.handle(hit(id)).await;
        let run = trace.tag_run(0, "probe").expect("ran");
        assert!(run.outcome.is_ok() && run.queued == 1, "queued from fire, not sent: {run:?}");
    }
    wait_until("everything is delivered or dead", || {
        let s = &container.outbox_status()[0];
        s.pending == 0 && s.dead == 1
    })
    .await;
    let taken: Vec<String> = vendor
        .received_at("/later")
        .iter()
        .filter_map(|r| r.headers.get("x-event-id").and_then(|v| v.to_str().ok()).map(str::to_string))
        .collect();
    assert!(calls.load(Ordering::SeqCst) >= 5, "two refused tries, then each of the three: {taken:?}");
    for id in ["ev-a", "ev-b"] {
        assert!(taken.iter().any(|t| t == id), "{id} reached the vendor: {taken:?}");
    }
    let dead = container.dead_letters("probe");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "ev-unknown");
    assert!(dead[0].reason.contains("HTTP 404"), "{}", dead[0].reason);
}
