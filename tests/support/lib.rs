//! Helpers for the end-to-end tests: the real Sluice server on loopback with real template
//! components, and a fake vendor that records what it receives.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice::{Container, ContainerConfig};
use tokio::net::TcpListener;

pub mod meta;
pub mod tiktok;
pub mod ga4;

/// Path of a built template component (`cargo test` builds them via `tests/build.rs`).
/// `SLUICE_TEMPLATES` at run time points elsewhere (an A/B benchmark of two template builds).
pub fn template(package: &str) -> PathBuf {
    let dir = std::env::var_os("SLUICE_TEMPLATES").map_or_else(|| PathBuf::from(env!("SLUICE_TEMPLATES")), PathBuf::from);
    dir.join(format!("{package}.wasm"))
}

/// A file from `shared/corpus/` (beside the repository).
pub fn corpus(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The query string of a single-line corpus hit (`ga4/<file>`), whether it was captured as a
/// bare query or as a full URL.
pub fn corpus_hit_query(file: &str) -> String {
    let text = corpus(&format!("ga4/{file}"));
    let line = text.lines().find(|l| !l.starts_with('#') && l.contains("v=2")).expect("a hit line");
    line.split_once('?').map_or(line, |(_, q)| q).to_string()
}

/// The GA4 batched capture (`ga4/ga4_17_...`): its query string and its body, two events
/// separated by CRLF as gtag.js sends them.
pub fn corpus_batched_hit() -> (String, String) {
    let capture = corpus("ga4/ga4_17_batched_post_scroll_page_view.txt");
    let url = capture.split("curl '").nth(1).and_then(|r| r.split('\'').next()).expect("url");
    let query = url.split_once('?').expect("query").1.to_string();
    let body = capture.split("--data-raw $'").nth(1).and_then(|r| r.split('\'').next()).expect("body").replace("\\r\\n", "\r\n");
    (query, body)
}

/// One request a fake vendor received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("vendor received JSON")
    }
}

type Route = (String, u16, Vec<(String, String)>, String);

/// A vendor's judgement of one request: status and body to answer with.
pub type Judge = Arc<dyn Fn(&Received) -> (u16, String) + Send + Sync>;

/// A loopback HTTP server that records every request and answers per path prefix.
#[derive(Clone)]
pub struct FakeVendor {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    routes: Arc<Mutex<Vec<Route>>>,
    judges: Arc<Mutex<Vec<(String, Judge)>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl FakeVendor {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake vendor");
        let vendor = FakeVendor {
            addr: listener.local_addr().expect("addr"),
            received: Default::default(),
            routes: Default::default(),
            judges: Default::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let v = vendor.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let v = v.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let v = v.clone();
                        async move { Ok::<_, Infallible>(v.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        vendor
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers requests whose path starts with `prefix`.
    pub fn route(&self, prefix: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.routes.lock().expect("routes").push((
            prefix.into(),
            status,
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body.into(),
        ));
    }

    /// Answers requests whose path starts with `prefix` as `judge` decides (a fake vendor that
    /// enforces the vendor's documented rules).
    pub fn judge(&self, prefix: &str, judge: Judge) {
        self.judges.lock().expect("judges").push((prefix.into(), judge));
    }

    /// Lets `n` held requests (paths starting with `/gated`) be answered.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    /// Waits (up to 20 s) until at least `n` requests reached paths starting with `path`, and
    /// returns them all: delivery from the outbox happens after the request that queued it.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got: Vec<Received> = self.received().into_iter().filter(|r| r.path.starts_with(path)).collect();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    async fn answer(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let path = parts.uri.path().to_string();
        let received = Received {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().unwrap_or("").into(),
            headers: parts.headers,
            body,
        };
        self.received.lock().expect("received").push(received.clone());
        let judge = self.judges.lock().expect("judges").iter().find(|(p, _)| path.starts_with(p.as_str())).map(|(_, j)| j.clone());
        if let Some(judge) = judge {
            let (status, body) = judge(&received);
            let mut resp = http::Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
            if status == 429 {
                // As throttling vendors do: say when to come back.
                resp.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
            }
            return resp;
        }
        if path.starts_with("/gated") {
            // Recorded on arrival, answered only once the test calls `release`.
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
        }
        let route = self.routes.lock().expect("routes").iter().find(|r| path.starts_with(&r.0)).cloned();
        let (status, headers, body) = match route {
            Some((_, s, h, b)) => (s, h, b),
            None => (200, vec![], "{}".into()),
        };
        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
        for (k, v) in headers {
            resp.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        resp
    }
}

/// Network policy letting templates reach fake vendors on loopback (plain http, 127.0.0.1).
pub fn loopback_outbound() -> String {
    "[outbound]\nallow_http = [\"http://127.0.0.1:*\"]\nallow_private = [\"127.0.0.1/32\"]\n".to_string()
}

/// The GA4 client as the end-to-end containers configure it (a `[[client]]` entry).
pub fn ga4_client_entry() -> String {
    format!(
        "[[client]]\nname = \"ga4\"\nwasm = \"{}\"\n\
         grants = {{ query = true, body = true, remote_address = true, request_headers = [\"user-agent\"] }}\n",
        template("ga4-client").display()
    )
}

/// Parses a container config (as if from `/test/container.toml`). Unless the text sets
/// `[outbox] dir`, each container gets outbox directories of its own under the system's
/// temporary directory, so tests running at once never share a queue.
pub fn parse_config(text: &str) -> Result<ContainerConfig, sluice::ConfigError> {
    let mut config = ContainerConfig::parse(text, Path::new("/test/container.toml"), &|name| {
        (name == "TEST_SECRET").then(|| "s3cr3t-value".to_string())
    })?;
    if config.outbox.dir.is_none() {
        config.outbox_dir = scratch_dir("outbox");
    }
    Ok(config)
}

/// A fresh, empty directory for one test (removed by the OS's temp cleaning, not by us: a
/// failing test's files are worth a look).
pub fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-test-{}-{n}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A request for [`Container::handle`], to read the trace of what happened.
pub fn request(method: &str, path: &str, body: &[u8]) -> sluice::RequestData {
    sluice::RequestData {
        id: "test".into(),
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers: http::HeaderMap::new(),
        body: Bytes::copy_from_slice(body),
        remote_addr: Some("203.0.113.7".parse().expect("ip")),
    }
}

/// A GA4 hit (`POST /g/collect?{query}`) for [`Container::handle`].
pub fn hit_request(query: &str) -> sluice::RequestData {
    let mut r = request("POST", "/g/collect", b"");
    r.query = query.to_string();
    r
}

/// The real server, serving a container on a loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub container: Arc<Container>,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config_text: &str) -> Self {
        let mut config = parse_config(config_text).unwrap_or_else(|e| panic!("config: {e}"));
        // Audit lines on stdout would interleave with the test report; tests that check them
        // configure a file.
        if config.consent.audit == "stdout" {
            config.consent.audit = "off".into();
        }
        let container = Arc::new(Container::load(&config).unwrap_or_else(|e| panic!("load: {e}")));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sluice::server::serve(container.clone(), listener, async {
            let _ = rx.await;
        }));
        TestServer { addr, container, http: reqwest::Client::new(), shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a GA4 hit (`POST /g/collect?{query}`) with these headers, as a browser would.
    pub async fn post_hit(&self, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(self.url(&format!("/g/collect?{query}")));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.expect("request")
    }

    /// Stops accepting, waits for in-flight requests and background tags.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Log output captured in memory, through the subscriber the binary installs (masking
/// included): what an operator would see.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Captures everything logged on this thread at `filter` (`SLUICE_LOG` syntax) in `format`,
    /// until the guard is dropped.
    pub fn start(format: sluice::output::LogFormat, filter: &str) -> (Capture, tracing::subscriber::DefaultGuard) {
        let logs = Capture::default();
        let subscriber = sluice::output::subscriber(format, filter, logs.clone(), false);
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture")).into_owned()
    }
}
