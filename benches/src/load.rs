//! The parts of the whole-server load run (`cargo xtask load`, driven by `src/bin/sluice-load.rs`):
//! a load generator speaking HTTP/1.1 keep-alive, a fast fake vendor sink, and the minimal hyper
//! server that answers 204 — the ceiling any server on this machine could reach.
//!
//! Two ways to drive load, as the load-testing literature separates them:
//! * [`closed_loop`]: each connection sends its next request as soon as the previous answer
//!   arrives. It finds the maximum rate; its latencies are meaningless (the load adapts to them).
//! * [`open_loop`]: requests are due on a fixed schedule, whatever the server does. Latency is
//!   measured from when a request was *due* whenever the connection was still busy with an
//!   earlier one at that moment, so a stalled server shows up in the percentiles instead of
//!   silently lowering the load ("coordinated omission"). When the connection was idle, latency
//!   starts at the actual send, so the timer's millisecond granularity adds nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// One request the load generator sends: a GA4 hit as gtag.js posts it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Label for the table.
    pub label: &'static str,
    /// Query string (the hit's shared parameters).
    pub query: String,
    /// Body (empty for a single hit; one event per line for a batched one).
    pub body: Bytes,
    /// Events the hit carries.
    pub events: u32,
}

impl Hit {
    /// The single hit the in-process benchmarks use and the batched capture, both from the corpus.
    pub fn corpus() -> [Hit; 2] {
        let (query, body) = sluice_tests::corpus_batched_hit();
        [
            Hit { label: "single", query: crate::ga4_hit_query(), body: Bytes::new(), events: 1 },
            Hit { label: "batched", query, events: body.lines().count() as u32, body: Bytes::from(body) },
        ]
    }

    /// The hit as the next browser request: each one its own hit, with a hit counter (`_s`) no
    /// other request has. gtag counts a page's hits in `_s`, and the GA4 tag sends the events of
    /// one hit back together, so replaying one identical hit would look like one hit re-sent.
    fn request(&self, addr: SocketAddr) -> hyper::Request<Full<Bytes>> {
        static HITS: AtomicU64 = AtomicU64::new(1);
        hyper::Request::post(format!("/g/collect?{}&_s={}", self.query, HITS.fetch_add(1, Ordering::Relaxed)))
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .header(
                http::header::USER_AGENT,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/147.0.0.0 Safari/537.36",
            )
            .header(http::header::COOKIE, "_fbp=fb.1.1763900000000.1234567890; _ttp=abc123")
            .body(Full::new(self.body.clone()))
            .expect("a valid request")
    }
}

/// An open keep-alive connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects (HTTP/1.1, no pipelining).
    pub async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }

    /// Sends one hit and reads the whole answer; `true` for a 2xx.
    pub async fn send(&mut self, hit: &Hit, addr: SocketAddr) -> bool {
        if self.sender.ready().await.is_err() {
            return false;
        }
        match self.sender.send_request(hit.request(addr)).await {
            Ok(response) => {
                let ok = response.status().is_success();
                ok && response.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        }
    }
}

/// What a closed-loop run achieved.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Successful requests per second.
    pub per_sec: f64,
    /// Failed requests (non-2xx or transport errors).
    pub errors: u64,
}

/// Drives `addr` as fast as `connections` keep-alive connections allow, for `duration`.
pub async fn closed_loop(addr: SocketAddr, hit: &Hit, connections: usize, duration: Duration) -> Throughput {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (hit, ok, errors) = (hit.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = Connection::open(addr).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            while Instant::now() < deadline {
                let counter = if conn.send(&hit, addr).await { &ok } else { &errors };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Throughput { per_sec: ok.load(Ordering::Relaxed) as f64 / elapsed, errors: errors.load(Ordering::Relaxed) }
}

/// What an open-loop run measured.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Requests answered per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Failed requests.
    pub errors: u64,
}

/// Offers `rate` requests per second, spread evenly over `connections`, for `duration`.
pub async fn open_loop(addr: SocketAddr, hit: &Hit, connections: usize, rate: f64, duration: Duration) -> Latency {
    let start = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    let per_connection = (duration.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let hit = hit.clone();
        // Connections are staggered so requests arrive evenly, not in bursts.
        let offset = interval.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_connection as usize);
            let mut errors = 0u64;
            let Ok(mut conn) = Connection::open(addr).await else {
                return (samples, per_connection);
            };
            for k in 0..per_connection {
                let due = start + offset + interval.mul_f64(k as f64);
                let now = Instant::now();
                let from = if now < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                if conn.send(&hit, addr).await {
                    samples.push(from.elapsed());
                } else {
                    errors += 1;
                }
            }
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((samples, e)) = t.await {
            all.extend(samples);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or_default();
    Latency { per_sec: all.len() as f64 / elapsed, p50: at(0.50), p99: at(0.99), errors }
}

/// Opens `n` connections and sends one hit on each, all at once; returns the open connections
/// (to be held while the server's memory is read) and how many hits failed.
pub async fn open_many(addr: SocketAddr, hit: &Hit, n: usize) -> (Vec<Connection>, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let hit = hit.clone();
            tokio::spawn(async move {
                let mut conn = Connection::open(addr).await.ok()?;
                conn.send(&hit, addr).await.then_some(conn)
            })
        })
        .collect();
    let mut open = Vec::new();
    for t in tasks {
        if let Ok(Some(conn)) = t.await {
            open.push(conn);
        }
    }
    let failed = n - open.len();
    (open, failed)
}

/// Serves `listener` forever, answering every request with `status` and `body` after reading it,
/// and counting requests in `count`.
pub async fn answer_everything(listener: TcpListener, status: u16, body: &'static str, count: Arc<AtomicU64>) {
    answer_switchable(listener, Arc::new(AtomicU16::new(status)), body, count).await
}

/// [`answer_everything`] with a status the caller can change while it serves (a vendor outage:
/// 503 for a while, then 200 again).
pub async fn answer_switchable(listener: TcpListener, status: Arc<AtomicU16>, body: &'static str, count: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let count = count.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let count = count.clone();
                let status = status.load(Ordering::Relaxed);
                async move {
                    let _ = req.into_body().collect().await;
                    count.fetch_add(1, Ordering::Relaxed);
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A loopback vendor sink on a thread (`sink`) and runtime of its own, answering every request
/// [`SINK_ANSWER`], for the in-process examples whose tags really send: its address.
pub fn spawn_sink() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let addr = listener.local_addr().expect("sink address");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("the sink's listener");
                answer_everything(listener, 200, SINK_ANSWER, Arc::default()).await
            });
        })
        .expect("the sink's thread");
    addr
}

/// The fake vendor sink's answer: accepted by every bundled tag (Meta and webhooks want a 2xx,
/// TikTok `code` 0, GA4 a 2xx).
pub const SINK_ANSWER: &str = r#"{"code":0,"message":"OK","events_received":1}"#;
