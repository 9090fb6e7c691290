//! The HTTP front end (hyper, HTTP/1.1): reads each request within limits, hands it to the
//! [`Container`] current when it arrived ([`Live`]), writes the response. `/healthz` answers
//! while serving. On shutdown it stops accepting, lets in-flight requests finish, then waits
//! for background tags. The admin routes are never served here ([`crate::admin`]).

mod admin;
pub use admin::serve_admin;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::pipeline::Container;
use crate::reload::Live;
use crate::request::{RequestData, ResponseDraft};

/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `container` on `listener` until `shutdown` resolves, then drains gracefully.
pub async fn serve(container: Arc<Container>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_live(Live::fixed(container), listener, shutdown).await;
}

/// What `sluice serve` runs: the public listener ([`serve_live`]) and, when given, the admin
/// listener ([`serve_admin`]), both stopping at `shutdown`; `SIGHUP` reloads
/// ([`crate::reload::on_sighup`]).
pub async fn serve_all(live: Arc<Live>, listener: TcpListener, admin: Option<TcpListener>, shutdown: impl Future<Output = ()>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(admin) = admin {
        let mut stopped = stopped.clone();
        tokio::spawn(serve_admin(live.clone(), admin, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    tokio::spawn(crate::reload::on_sighup(live.clone()));
    serve_live(live, listener, shutdown).await;
    let _ = stop.send(true);
}

/// Serves whatever container `live` holds (each request on the one current when it arrived,
/// so a reload never cuts one off) until `shutdown` resolves, then drains gracefully.
pub async fn serve_live(live: Arc<Live>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    // A backlog left by the previous run is delivered without waiting for traffic.
    live.current().start_delivery();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let read_timeout = live.current().server_config().read_timeout();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let live = live.clone();
                let service = service_fn(move |req| {
                    let container = live.current();
                    async move { Ok::<_, Infallible>(handle(&container, req, peer).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(read_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection from {peer} ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections did not finish within {SHUTDOWN_GRACE:?}");
    }
    live.current().drain().await;
    tracing::info!("stopped");
}

/// Handles one HTTP request.
pub async fn handle(container: &Arc<Container>, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if req.uri().path() == "/healthz" && req.method() == http::Method::GET {
        return plain(StatusCode::OK, "ok");
    }
    let (parts, body) = req.into_parts();
    let limit = container.server_config().max_body_bytes;
    let read_timeout = container.server_config().read_timeout();
    let Ok(body) = tokio::time::timeout(read_timeout, Limited::new(body, limit).collect()).await else {
        tracing::warn!(method = %parts.method, path = %parts.uri.path(), "request body not received within {read_timeout:?}");
        return plain(StatusCode::REQUEST_TIMEOUT, "request body not received in time");
    };
    let body = match body {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            tracing::warn!(method = %parts.method, path = %parts.uri.path(), "request body rejected: {e}");
            return if too_large {
                plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {limit} bytes"))
            } else {
                plain(StatusCode::BAD_REQUEST, "could not read the request body")
            };
        }
    };
    let remote_addr = remote_address(&parts.headers, peer, container.server_config().trusted_proxies);
    let request = RequestData {
        id: container.next_request_id(),
        method: parts.method.as_str().to_ascii_uppercase(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        remote_addr,
    };
    let (draft, _trace) = container.handle(request).await;
    to_response(draft)
}

/// The visitor's IP, as reverse proxies find it: with no trusted proxy, the peer. Behind
/// `trusted_proxies` = N proxies that each append the address they saw to `X-Forwarded-For`
/// (all such headers read as one list, in order), the entry N places from the right — what the
/// outermost trusted proxy saw. Everything left of it came from the visitor, who can write
/// anything there, so it is never used. A list shorter than N holds only proxies' entries: its
/// leftmost is taken. An entry that is not an address (`unknown`, a name) means the peer.
fn remote_address(headers: &http::HeaderMap, peer: SocketAddr, trusted_proxies: usize) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return Some(peer.ip());
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let chosen = entries.len().checked_sub(trusted_proxies).and_then(|i| entries.get(i)).or(entries.first());
    chosen.and_then(|entry| forwarded_address(entry)).or(Some(peer.ip()))
}

/// An `X-Forwarded-For` entry as an address: `203.0.113.7`, `2001:db8::1`, or with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn to_response(draft: ResponseDraft) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(draft.body)));
    *r.status_mut() = StatusCode::from_u16(draft.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = r.headers_mut();
    // Names and values were validated when the template set them.
    for (name, value) in draft.headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value)) {
            headers.insert(n, v);
        }
    }
    for cookie in draft.cookies {
        if let Ok(v) = http::HeaderValue::from_str(&cookie) {
            headers.append(http::header::SET_COOKIE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::remote_address;

    fn with_xff(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn the_visitor_is_the_entry_the_trusted_hops_away() {
        let peer = "10.0.0.9:5000".parse().expect("peer");
        let ip = |xff: &[&str], hops: usize| remote_address(&with_xff(xff), peer, hops).map(|a| a.to_string());
        // (X-Forwarded-For headers, trusted proxies, the visitor's address)
        for (xff, hops, visitor) in [
            (&["203.0.113.7"][..], 0, "10.0.0.9"),
            (&["203.0.113.7"], 1, "203.0.113.7"),
            // The visitor wrote a fake entry; one proxy appended the real address.
            (&["1.1.1.1, 203.0.113.7"], 1, "203.0.113.7"),
            (&["1.1.1.1", "203.0.113.7"], 1, "203.0.113.7"),
            // Two proxies: a CDN appended the visitor, the load balancer appended the CDN.
            (&["1.1.1.1, 203.0.113.7, 198.51.100.2"], 2, "203.0.113.7"),
            (&["1.1.1.1, 203.0.113.7", "198.51.100.2"], 2, "203.0.113.7"),
            (&["203.0.113.7"], 2, "203.0.113.7"),
            (&[], 1, "10.0.0.9"),
            (&["unknown"], 1, "10.0.0.9"),
            (&["1.1.1.1, not-an-ip"], 1, "10.0.0.9"),
            (&["203.0.113.7:4711"], 1, "203.0.113.7"),
            (&["[2001:db8::1]:4711"], 1, "2001:db8::1"),
            (&["2001:db8::1"], 1, "2001:db8::1"),
            (&["1.1.1.1,,203.0.113.7 , "], 1, "203.0.113.7"),
        ] {
            assert_eq!(ip(xff, hops).as_deref(), Some(visitor), "X-Forwarded-For {xff:?}, trusted_proxies = {hops}");
        }
    }
}
