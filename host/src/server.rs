//! The HTTP front end (hyper, HTTP/1.1): reads each request within limits, hands it to the
//! [`Container`], writes the response. `/healthz` answers while serving. On shutdown it stops
//! accepting, lets in-flight requests finish, then waits for background tags.

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
use crate::state::{RequestData, ResponseDraft};

/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `container` on `listener` until `shutdown` resolves, then drains gracefully.
pub async fn serve(container: Arc<Container>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let read_timeout = container.server_config().read_timeout();
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
                let container = container.clone();
                let service = service_fn(move |req| {
                    let container = container.clone();
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
    container.drain().await;
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
    let remote_addr = remote_address(&parts.headers, peer, container.server_config().trust_forwarded_for);
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

/// The visitor's IP: the first valid `X-Forwarded-For` entry when trusted, else the peer.
fn remote_address(headers: &http::HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
    {
        return Some(ip);
    }
    Some(peer.ip())
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
