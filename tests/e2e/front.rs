//! The HTTP front end under bad input: too much, or too slow. Each gets a clear answer (or a
//! closed connection) and costs the host nothing more.

use std::time::{Duration, Instant};

use sluice_tests::{TestServer, template};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> String {
    format!(
        "[server]\nmax_body_bytes = 1000\nread_timeout_ms = 300\n\n[[client]]\nname = \"collect\"\nwasm = \"{}\"\ngrants = {{ body = true }}\n",
        template("json-collect-client").display()
    )
}

/// What the server sends back before closing, within five seconds.
async fn answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await.expect("the server closes in time");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let server = TestServer::start(&config()).await;
    let res = server.http.post(server.url("/collect")).body(vec![b'['; 2000]).send().await.expect("request");
    assert_eq!(res.status(), 413);
    assert!(res.text().await.expect("body").contains("larger than 1000 bytes"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408_after_the_read_timeout() {
    let server = TestServer::start(&config()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let started = Instant::now();
    stream.write_all(b"POST /collect HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n[{\"event_name\"").await.expect("write");
    let reply = answer(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(300), "not before the timeout");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_get_the_connection_closed() {
    let server = TestServer::start(&config()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(b"POST /collect HTTP/1.1\r\nhost: x\r\n").await.expect("write");
    let reply = answer(&mut stream).await;
    assert!(!reply.contains("200"), "no request was handled: {reply}");
    server.stop().await;
}
