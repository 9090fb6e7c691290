//! What one outbound request costs the thread that sends it: the GA4 web hit of the corpus
//! (`ga4_03`, a 1.4 kB query) POSTed to a loopback server answering 204, over one keep-alive
//! connection, through reqwest as `sluice::outbound` configured it until 2026-12-07 (redirects
//! off, a timeout per request), through hyper-util's pooled client (what `sluice::outbound`
//! sends with now), and through a bare hyper connection. The GA4 tag sends one such request per
//! event, so this is the largest part of delivering a GA4 event.
//! CPU time of the sending thread (`CLOCK_THREAD_CPUTIME_ID`), the server on another thread.
//!
//! A second table sends them as the GA4 tag's `deliver` does, 25 at once (a batch's web hits
//! through `send-all`): hyper-util's pooled HTTP/1.1 client (a connection per request in
//! flight) against one HTTP/2 connection carrying all 25 (the server speaking h2c here; a
//! vendor would negotiate it over TLS). What HTTP/2 to vendors would save is the difference.
//!
//! Run: `cargo run --release -p sluice-benches --example http_client [requests]`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// Runs `send` `n` times; CPU microseconds per call.
async fn per_request<F: Future>(n: u32, mut send: impl FnMut() -> F) -> f64 {
    let start = thread_cpu();
    for _ in 0..n {
        let _ = send().await;
    }
    (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(n)
}

/// Requests in flight at once in the concurrent table: a GA4 batch's web hits.
const AT_ONCE: u32 = 25;

/// A loopback server answering 204 to everything, on its own thread, over HTTP/1.1 or (`h2`)
/// HTTP/2 with prior knowledge.
fn serve_204(h2: bool) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("non-blocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(|_: hyper::Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(hyper::Response::builder().status(204).body(Full::new(Bytes::new())).expect("response"))
                    });
                    let io = TokioIo::new(stream);
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, answer).await
                    } else {
                        hyper::server::conn::http1::Builder::new().serve_connection(io, answer).await
                    };
                });
            }
        });
    });
    addr
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let addr = serve_204(false);
    let h2_addr = serve_204(true);
    let url = format!("http://{addr}/g/collect?{}", sluice_benches::ga4_hit_query());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let reqwest = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("reqwest client");
        let pooled: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut bare, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        let uri: http::Uri = url.parse().expect("URI");

        println!("| {n} requests, CPU µs per request | reqwest | hyper-util pooled client | bare hyper connection |");
        println!("|---|---|---|---|");
        for round in 1..=3 {
            let a = per_request(n, || async {
                let url = url::Url::parse(&url).expect("URL"); // as the egress check parses it
                let response = reqwest.post(url).timeout(Duration::from_secs(5)).send().await.expect("reqwest");
                response.bytes().await.expect("body");
            })
            .await;
            let b = per_request(n, || async {
                let request = hyper::Request::post(url.parse::<http::Uri>().expect("URI")).body(Full::new(Bytes::new())).expect("request");
                let response = tokio::time::timeout(Duration::from_secs(5), pooled.request(request)).await.expect("in time").expect("sent");
                response.into_body().collect().await.expect("body");
            })
            .await;
            let c = per_request(n, || {
                let request = hyper::Request::post(uri.clone()).header("host", addr.to_string()).body(Full::new(Bytes::new())).expect("request");
                let sent = bare.send_request(request);
                async move {
                    sent.await.expect("sent").into_body().collect().await.expect("body");
                }
            })
            .await;
            println!("| run {round} | {a:.1} | {b:.1} | {c:.1} |");
        }

        // 25 at once, as `send-all` sends a GA4 batch's web hits.
        let stream = tokio::net::TcpStream::connect(h2_addr).await.expect("connect");
        let (h2, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
        tokio::spawn(connection);
        let h2_uri: http::Uri = format!("http://{h2_addr}/g/collect?{}", sluice_benches::ga4_hit_query()).parse().expect("URI");
        let batches = (n / AT_ONCE).max(1);
        println!();
        println!("| {} requests, {AT_ONCE} at once, CPU µs per request | hyper-util pooled client (HTTP/1.1) | one HTTP/2 connection |", batches * AT_ONCE);
        println!("|---|---|---|");
        for round in 1..=3 {
            let pooled_batch = per_request(batches, || {
                futures::future::join_all((0..AT_ONCE).map(|_| async {
                    let request = hyper::Request::post(url.parse::<http::Uri>().expect("URI")).body(Full::new(Bytes::new())).expect("request");
                    let response = tokio::time::timeout(Duration::from_secs(5), pooled.request(request)).await.expect("in time").expect("sent");
                    response.into_body().collect().await.expect("body");
                }))
            })
            .await
                / f64::from(AT_ONCE);
            let h2_batch = per_request(batches, || {
                futures::future::join_all((0..AT_ONCE).map(|_| {
                    let request = hyper::Request::post(h2_uri.clone()).body(Full::new(Bytes::new())).expect("request");
                    let sent = h2.clone().send_request(request);
                    async move {
                        sent.await.expect("sent").into_body().collect().await.expect("body");
                    }
                }))
            })
            .await
                / f64::from(AT_ONCE);
            println!("| run {round} | {pooled_batch:.1} | {h2_batch:.1} |");
        }
    });
}
