//! For template authors' tests: run the `.wasm` you ship in the real engine, against a
//! scripted vendor on loopback.
//!
//! The SDK's mock host runs a template's Rust code natively and applies the host's rules; this
//! runs the built component as `sluice serve` would — its embedded manifest, the permission
//! checks, consent, the sandbox's limits, `fire`, the outbox and `deliver` — so what the mock
//! cannot show (a manifest that does not say what the code needs, a component that traps, a
//! batch the vendor refuses) shows here. Add `sluice` as a dev-dependency and:
//!
//! ```no_run
//! # async fn demo() {
//! use sluice::testing::TagTest;
//! let run = TagTest::new("target/wasm32-wasip2/release/slack_tag.wasm")
//!     .param("endpoint", "{vendor}/hook")       // {vendor}: the scripted vendor's origin
//!     .answer(200, "ok")                        // its answers, in order; the last repeats
//!     .run(serde_json::json!({ "event_name": "purchase" }))
//!     .await
//!     .expect("the component loads");
//! assert!(run.outcome.is_ok(), "{}", run.outcome);
//! assert_eq!(run.sent[0].path, "/hook");
//! # }
//! ```
//!
//! The tag is granted what its manifest declares (outbound patterns filled in from the
//! parameters) unless [`TagTest::grants`] narrows it, may reach the vendor over plain http on
//! loopback, fires on every event, and runs with unset consent counted as granted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice_manifest::PermissionSet;
use sluice_policy::params::Param;

use crate::delivery::DeadLetterView;
use crate::{Container, ContainerConfig, Outcome, RequestData};

/// How long [`TagTest::run`] waits for queued items to be delivered or dead-lettered.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// Why a [`TagTest`] could not run (the template's own failures are in [`TagTestRun::outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum TagTestError {
    /// The scripted vendor could not listen on loopback.
    #[error("the scripted vendor cannot listen on 127.0.0.1: {0}")]
    Vendor(std::io::Error),
    /// The container (the component, its parameters or grant) does not load.
    #[error("{0}")]
    Load(String),
}

/// One run of a built tag on an event (see the module docs).
#[derive(Debug, Clone)]
pub struct TagTest {
    wasm: PathBuf,
    params: Vec<(String, String, bool)>,
    grants: Option<PermissionSet>,
    answers: Vec<(u16, String)>,
}

/// What the tag did.
#[derive(Debug, Clone)]
pub struct TagTestRun {
    /// How its `fire` ended (`queued` for a tag without one).
    pub outcome: Outcome,
    /// Host calls it was refused.
    pub denials: Vec<String>,
    /// What the vendor received, in order (from `fire` and from `deliver`).
    pub sent: Vec<SentRequest>,
    /// Items the host gave up on (the vendor refused them, or they aged out).
    pub dead_letters: Vec<DeadLetterView>,
    /// Items still queued when the wait ended (the vendor kept asking for a retry).
    pub still_pending: usize,
}

/// A request the scripted vendor received.
#[derive(Debug, Clone)]
pub struct SentRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SentRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl TagTest {
    /// A run of the tag component at `wasm`.
    pub fn new(wasm: impl Into<PathBuf>) -> Self {
        TagTest { wasm: wasm.into(), params: Vec::new(), grants: None, answers: Vec::new() }
    }

    /// Sets a parameter; `{vendor}` in the value is replaced by the scripted vendor's origin
    /// (`http://127.0.0.1:PORT`).
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.params.retain(|(n, _, _)| n != name);
        self.params.push((name.into(), value.into(), false));
        self
    }

    /// Sets a secret parameter (given to the host as `${ENV_VAR}` would give it, so it is
    /// masked in logs and traces as in production).
    pub fn secret_param(mut self, name: &str, value: &str) -> Self {
        self.params.retain(|(n, _, _)| n != name);
        self.params.push((name.into(), value.into(), true));
        self
    }

    /// The operator's grant, instead of everything the manifest declares; `{vendor}` in an
    /// outbound entry is the scripted vendor's origin.
    pub fn grants(mut self, grants: PermissionSet) -> Self {
        self.grants = Some(grants);
        self
    }

    /// The vendor's next answer (status and body); the last one repeats. Without any, it
    /// answers `200` with an empty body.
    pub fn answer(mut self, status: u16, body: &str) -> Self {
        self.answers.push((status, body.into()));
        self
    }

    /// Loads the tag into a container of its own, runs it on `event`, and waits (up to 10 s)
    /// for what it queued to be delivered or dead-lettered.
    pub async fn run(&self, event: serde_json::Value) -> Result<TagTestRun, TagTestError> {
        let vendor = Vendor::start(self.answers.clone()).await.map_err(TagTestError::Vendor)?;
        let origin = format!("http://{}", vendor.addr);
        let container = Arc::new(self.container(&origin)?);
        let request = RequestData {
            id: "tag-test".into(),
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
            remote_addr: Some([203, 0, 113, 7].into()),
        };
        let (_, trace) = container.handle_event(request, event).await;
        let run = trace.events.first().and_then(|e| e.tags.first()).cloned();
        let (outcome, denials) = match run {
            Some(run) => (run.outcome, run.denials),
            None => (Outcome::Failed("the event was not admitted (not a JSON object, or over the caps)".into()), Vec::new()),
        };
        let waited = Instant::now();
        let mut still_pending = pending(&container);
        while still_pending > 0 && waited.elapsed() < DELIVERY_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
            still_pending = pending(&container);
        }
        Ok(TagTestRun { outcome, denials, sent: vendor.received(), dead_letters: container.dead_letters("tag"), still_pending })
    }

    fn container(&self, origin: &str) -> Result<Container, TagTestError> {
        let load = |e: String| TagTestError::Load(e);
        let bytes = std::fs::read(&self.wasm).map_err(|e| load(format!("{}: {e}", self.wasm.display())))?;
        let declaration = crate::read_declaration(&self.wasm, &bytes).map_err(|e| load(e.to_string()))?;
        let scratch = std::env::temp_dir().join(format!("sluice-tag-test-{}-{}", std::process::id(), next_run()));
        let _ = std::fs::remove_dir_all(&scratch);
        // The parse wants a client; this container has none (the event is handed in), so the
        // placeholder entry is dropped before load and its file never read.
        let text = format!(
            "[consent]\nunset = \"grant\"\naudit = \"off\"\n\n[outbound]\nallow_http = [{origin:?}]\nallow_private = [\"127.0.0.1/32\"]\n\n\
             [outbox]\ndir = {dir:?}\nretry_base_ms = 50\n\n[[client]]\nname = \"none\"\nwasm = \"none.wasm\"\n\n\
             [[tag]]\nname = \"tag\"\nwasm = {wasm:?}\ntrigger = {{ events = [\"*\"] }}\n",
            dir = scratch.display().to_string(),
            wasm = self.wasm.display().to_string(),
        );
        let mut config = ContainerConfig::parse(&text, &scratch.join("tag-test.toml"), &|_| None).map_err(|e| load(e.to_string()))?;
        config.clients.clear();
        let tag = config.tags.first_mut().ok_or_else(|| load("no tag entry".into()))?;
        // Set as the config's `${ENV_VAR}` substitution would set them: a secret is masked.
        tag.template.params = self
            .params
            .iter()
            .map(|(name, value, secret)| {
                let value = value.replace("{vendor}", origin);
                let param = if *secret { Param::secret(&value) } else { Param::plain(value.into()) };
                (name.clone(), param)
            })
            .collect();
        tag.template.grants = match &self.grants {
            Some(g) => {
                let mut g = g.clone();
                for p in &mut g.outbound {
                    *p = p.replace("{vendor}", origin);
                }
                g
            }
            None => {
                let params = sluice_policy::params::check(&declaration, &tag.template.params).map_err(|e| load(e.to_string()))?;
                sluice_policy::params::resolved_permissions(&declaration, &params).map_err(|e| load(e.to_string()))?
            }
        };
        Container::load(&config).map_err(|e| load(e.to_string()))
    }
}

fn pending(container: &Container) -> usize {
    container.outbox_status().iter().map(|s| s.pending).sum()
}

fn next_run() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The scripted vendor: answers in order (the last repeats) and records every request.
struct Vendor {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<SentRequest>>>,
}

impl Vendor {
    async fn start(answers: Vec<(u16, String)>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (log, answers) = (log.clone(), answers.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let headers = parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
                            lock(&log).push(SentRequest {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or_default().to_string(),
                                headers,
                                body,
                            });
                            let (status, text) = {
                                let mut a = lock(&answers);
                                if a.len() > 1 { a.pop_front() } else { a.front().cloned() }
                            }
                            .unwrap_or((200, String::new()));
                            let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Vendor { addr, received })
    }

    fn received(&self) -> Vec<SentRequest> {
        lock(&self.received).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
