//! What one outbound request costs the thread that sends it: the GA4 web hit of the corpus
//! (`ga4_03`, a 1.4 kB query) POSTed to a loopback server answering 204, over one keep-alive
//! connection, through reqwest as `sluice::outbound` configured it until 2026-12-07 (redirects
//! off, a timeout per request), through hyper-util's pooled client (what `sluice::outbound`
//! sends with now), and through a bare hyper connection. The GA4 tag sends one such request per
//! event, so this is the largest part of delivering a GA4 event.
//! CPU time of the sending thread (`CLOCK_THREAD_CPUTIME_ID`), the server on another thread.
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

/// Runs `send` `n` times; CPU microseconds per request.
async fn per_request<F: Future<Output = ()>>(n: u32, mut send: impl FnMut() -> F) -> f64 {
    let start = thread_cpu();
    for _ in 0..n {
        send().await;
    }
    (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5_000);
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
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), answer).await;
                });
            }
        });
    });
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
    });
}
