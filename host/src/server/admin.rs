//! The admin listener: the preview UI, `/metrics` and reload, on an address of its own
//! (`[admin]`, [`crate::admin`]). Never served on the public listener.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the preview UI (one page, no external resources) |
//! | `GET /metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /api/requests?after=SEQ` | recorded requests, newest first |
//! | `GET /api/requests/{id}` | one recorded request in full |
//! | `POST /api/sessions` | start a debug session: a token for the `x-sluice-preview` header or `sluice_preview` cookie |
//! | `GET /api/status` | templates, outboxes, record-only destinations |
//! | `POST /api/reload` | reload the container ([`crate::reload`]) |
//! | `GET /healthz` | `ok` |

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::reload::Live;

/// The preview UI: one self-contained page.
const UI: &str = include_str!("preview.html");

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve_admin(live: Arc<Live>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let live = live.clone();
                let service = service_fn(move |req| {
                    let live = live.clone();
                    async move { Ok::<_, Infallible>(handle(&live, req).await) }
                });
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!("admin connection from {peer} ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
}

/// One admin request.
pub async fn handle(live: &Live, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match (&method, path.as_str()) {
        (&Method::GET, "/") => return respond(StatusCode::OK, "text/html; charset=utf-8", UI.as_bytes().to_vec()),
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
        _ => {}
    }
    let Some(admin) = live.config().and_then(|c| c.admin) else {
        return text(StatusCode::NOT_FOUND, "the admin listener is not configured");
    };
    let auth = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !admin.authorises(auth) {
        tracing::warn!(%method, path = %crate::output::mask(&path), "admin request refused: missing or wrong token");
        let mut r = text(StatusCode::UNAUTHORIZED, "send the admin token as `Authorization: Bearer <token>` ([admin] token)");
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return r;
    }
    let telemetry = live.telemetry();
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => {
            let body = telemetry.metrics.encode(live.current().outbox_samples());
            respond(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", body.into_bytes())
        }
        (&Method::GET, "/api/requests") => {
            let after = query_param(req.uri().query(), "after");
            match after.map(|a| a.parse::<u64>()) {
                Some(Err(_)) => text(StatusCode::BAD_REQUEST, "after must be a whole number (the seq of the last request shown)"),
                after => json(StatusCode::OK, &telemetry.preview.list(after.and_then(Result::ok).unwrap_or(0))),
            }
        }
        (&Method::GET, p) if let Some(id) = p.strip_prefix("/api/requests/") => {
            match telemetry.preview.get(id) {
                Some(view) => json(StatusCode::OK, &view),
                None => text(StatusCode::NOT_FOUND, "no recorded request with this id (it may have left the buffer: [admin.preview] buffer)"),
            }
        }
        (&Method::POST, "/api/sessions") => json(StatusCode::CREATED, &telemetry.preview.start_session()),
        (&Method::GET, "/api/status") => json(StatusCode::OK, &live.current().status()),
        (&Method::POST, "/api/reload") => match live.reload().await {
            Ok(reloaded) => json(StatusCode::OK, &reloaded),
            Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, &crate::output::mask(&e.to_string())),
        },
        (_, "/metrics" | "/api/requests" | "/api/sessions" | "/api/status" | "/api/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "wrong method for this route (see the admin routes in the README)")
        }
        _ => text(StatusCode::NOT_FOUND, "no such admin route (see the admin routes in the README)"),
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    // The page loads nothing from elsewhere and cannot be framed.
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    r
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", message.as_bytes().to_vec())
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("could not encode the answer: {e}")),
    }
}
