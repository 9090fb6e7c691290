//! The single egress choke point: every byte a template sends leaves through [`Outbound::send`].
//!
//! Checks, in order, for the first URL and again for every redirect hop:
//! 1. the template's effective grant covers the URL (sGTM-style patterns, `sluice-manifest`);
//! 2. the scheme is https, or http to an origin the operator listed in `allow_http`
//!    ([`sluice_policy::egress`], the rules the mock host applies too);
//! 3. the address is public: IP literals are checked there, host names in `GuardedResolver` (below),
//!    which filters every resolved address and hands the connector only the survivors, so the
//!    connection goes to an address that was checked (no DNS-rebinding gap). Loopback, private,
//!    link-local (cloud metadata), CGNAT, ULA and unspecified addresses are refused unless the
//!    operator listed them in `allow_private`.
//!
//! Redirects are followed here, not by the HTTP client (one client serves all templates), so
//! each hop is checked against the *template's* grant, and a hop to another origin drops the
//! credential headers (`authorization`, `cookie`...). One shared client (hyper-util's pooled
//! client over rustls with the webpki roots) keeps connections alive per vendor origin. It is
//! hyper-util directly rather than reqwest: this is the host's hottest outbound path (GA4 sends
//! a request per event), and reqwest's layers above it cost ~20 µs of CPU per request here
//! (BENCHMARKS.md, `examples/http_client`) for features the choke point does itself (redirects,
//! timeouts, body limits). Timeouts and a response-size cap bound what a slow or hostile vendor
//! can cost.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_manifest::{Denial, EffectiveGrant, Url};
use serde::Deserialize;
use sluice_policy::egress::{EgressConfigError, EgressRefusal, EgressRules};

/// `[outbound]`: the network policy, applied to every template on top of its own grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Default (and maximum) per-request timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body a template may receive.
    pub max_response_bytes: usize,
    /// Redirects followed per request (each hop re-checked).
    pub max_redirects: u8,
    /// Origins (`http://host[:port]`) that may be reached over plain http.
    pub allow_http: Vec<String>,
    /// CIDRs exempt from the private/loopback/link-local address guard.
    pub allow_private: Vec<String>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            timeout_ms: 5_000,
            max_response_bytes: 1 << 20,
            max_redirects: 5,
            allow_http: Vec::new(),
            allow_private: Vec::new(),
        }
    }
}

impl OutboundConfig {
    /// The allow lists, parsed: load-time validation of this section.
    pub fn rules(&self) -> Result<EgressRules, EgressConfigError> {
        EgressRules::new(&self.allow_http, &self.allow_private)
    }
}

/// A request a template asked to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Requested timeout (capped by the operator's).
    pub timeout: Option<Duration>,
}

impl OutboundRequest {
    /// A request as templates describe it (the WIT record, or one queued with `send-later`):
    /// the timeout in milliseconds.
    pub fn new(method: String, url: String, headers: Vec<(String, String)>, body: Vec<u8>, timeout_ms: Option<u32>) -> Self {
        OutboundRequest { method, url, headers, body, timeout: timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))) }
    }
}

/// The vendor's answer.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body (at most the configured cap).
    pub body: Vec<u8>,
}

/// Why a request was not sent, or failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The template's grant does not cover the URL.
    #[error("{0}")]
    Denied(Denial),
    /// The operator's network policy refuses it (plain http, private address).
    #[error("{0}")]
    Policy(#[from] EgressRefusal),
    /// Malformed request.
    #[error("{0}")]
    Invalid(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Connection or protocol failure.
    #[error("{0}")]
    Failed(String),
}

/// Resolves names and keeps only the addresses the policy allows: the connector's resolver.
#[derive(Debug, Clone)]
struct GuardedResolver {
    policy: Arc<EgressRules>,
}

/// The resolver's refusal, found again in the client's error chain to report it as policy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BlockedName(String);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| policy.address_allowed(a.ip())).collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(Box::new(BlockedName(host)) as BoxError);
            }
            Ok(allowed.into_iter())
        })
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The choke point. One per host process.
#[derive(Debug)]
pub struct Outbound {
    client: Client<Connector, Full<Bytes>>,
    policy: Arc<EgressRules>,
    timeout: Duration,
    max_response_bytes: usize,
    max_redirects: u8,
}

/// Headers dropped when a redirect leaves the origin they were sent to.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization", "x-api-key", "x-auth-token"];

/// Headers a template may not set: the host owns framing and routing.
const FORBIDDEN_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive", "proxy-authorization", "proxy-connection"];

impl Outbound {
    /// The `[outbound]` rules every request is held to (`sluice check` holds grants to them).
    pub(crate) fn policy(&self) -> &EgressRules {
        &self.policy
    }

    /// Builds the shared client from the `[outbound]` section.
    pub fn new(cfg: &OutboundConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.rules().map_err(|e| format!("[outbound]: {e}"))?);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { policy: policy.clone() });
        // The scheme is the policy's to decide (https, or http where `allow_http` lists it).
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("cannot set up TLS for outbound requests: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Outbound {
            client,
            policy,
            timeout: Duration::from_millis(cfg.timeout_ms),
            max_response_bytes: cfg.max_response_bytes,
            max_redirects: cfg.max_redirects,
        })
    }

    /// Checks and sends `request` for a template holding `grant`, following redirects. The
    /// timeout covers the whole exchange: every hop, connecting, and reading the answer.
    pub async fn send(&self, grant: &EffectiveGrant, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let timeout = request.timeout.map_or(self.timeout, |t| t.min(self.timeout));
        tokio::time::timeout(timeout, self.exchange(grant, request)).await.map_err(|_| OutboundError::Timeout)?
    }

    async fn exchange(&self, grant: &EffectiveGrant, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let mut url = Url::parse(&request.url).map_err(|e| OutboundError::Invalid(format!("URL {:?}: {e}", without_query(&request.url))))?;
        let mut method = method(&request.method)?;
        let mut headers = build_headers(&request.headers)?;
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(http::header::USER_AGENT, HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))));
        }
        let mut body = Bytes::from(request.body);

        for _hop in 0..=self.max_redirects {
            self.check(grant, &url)?;
            let uri: http::Uri = url.as_str().parse().map_err(|_| OutboundError::Invalid(format!("URL {:?} is not a valid request target", without_query(url.as_str()))))?;
            let mut outgoing = http::Request::builder().method(method.clone()).uri(uri).body(Full::new(body.clone())).map_err(|e| OutboundError::Invalid(e.to_string()))?;
            *outgoing.headers_mut() = headers.clone();
            let response = self.client.request(outgoing).await.map_err(|e| classify(&e, &url))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(http::header::LOCATION)
            {
                let location = location.to_str().map_err(|_| OutboundError::Failed("redirect Location is not text".into()))?;
                let next = url.join(location).map_err(|_| OutboundError::Failed("redirect Location is not a URL".into()))?;
                // As browsers do: credentials go only to the origin they were written for.
                if next.origin() != url.origin() {
                    for name in CREDENTIAL_HEADERS {
                        headers.remove(*name);
                    }
                }
                url = next;
                // As browsers do: 303 always, and 301/302 after a POST, become GET.
                if status == StatusCode::SEE_OTHER || (method == Method::POST && matches!(status.as_u16(), 301 | 302)) {
                    method = Method::GET;
                    body = Bytes::new();
                }
                continue;
            }
            return self.read(response, &url).await;
        }
        Err(OutboundError::Failed(format!("more than {} redirects", self.max_redirects)))
    }

    /// For a `record_only` template: every check `send` makes before connecting (URL, method,
    /// headers, grant, `[outbound]` rules), then `200 {}` instead of the network. What would
    /// have been sent is shown in the preview.
    pub fn record(&self, grant: &EffectiveGrant, request: &OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        method(&request.method)?;
        build_headers(&request.headers)?;
        self.check_url(grant, &request.url)?;
        Ok(OutboundResponse { status: 200, headers: vec![("content-type".into(), "application/json".into())], body: b"{}".to_vec() })
    }

    /// The checks `send` makes before connecting (grant, scheme, literal addresses), for a
    /// request queued to be sent later: a mistake is reported to the template at once, not
    /// found by the delivery worker hours later. `send` checks again.
    pub fn check_url(&self, grant: &EffectiveGrant, url: &str) -> Result<(), OutboundError> {
        let url = Url::parse(url).map_err(|e| OutboundError::Invalid(format!("URL {:?}: {e}", without_query(url))))?;
        self.check(grant, &url)
    }

    fn check(&self, grant: &EffectiveGrant, url: &Url) -> Result<(), OutboundError> {
        grant.check_outbound(url).map_err(OutboundError::Denied)?;
        Ok(self.policy.check_url(url)?)
    }

    async fn read(&self, response: http::Response<hyper::body::Incoming>, url: &Url) -> Result<OutboundResponse, OutboundError> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| classify(&e, url))?;
            let Ok(chunk) = frame.into_data() else { continue };
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(OutboundError::Failed(format!(
                    "response larger than {} bytes ([outbound] max_response_bytes)",
                    self.max_response_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(OutboundResponse { status, headers, body })
    }
}

/// The request method, as HTTP spells it.
fn method(name: &str) -> Result<Method, OutboundError> {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).map_err(|_| OutboundError::Invalid(format!("method {name:?} is not valid")))
}

fn build_headers(list: &[(String, String)]) -> Result<HeaderMap, OutboundError> {
    let mut headers = HeaderMap::new();
    for (name, value) in list {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| OutboundError::Invalid(format!("header name {name:?} is not valid")))?;
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            return Err(OutboundError::Invalid(format!("header {name:?} is set by the host, not by templates")));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| OutboundError::Invalid(format!("value of header {name:?} has characters HTTP does not allow")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A URL as it may be logged: without its query string, where vendors take credentials (Meta's
/// `access_token`, GA4's `api_secret`).
pub(crate) fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or_default()
}

/// A failed exchange as the template and the log see it: a refused name as policy, a connect
/// timeout as a timeout, anything else named by the URL without its query string (where vendors take credentials: this
/// message reaches logs and traces), with the error's whole chain of causes.
fn classify(e: &(dyn std::error::Error + 'static), url: &Url) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut msg = String::new();
    while let Some(s) = source {
        if let Some(BlockedName(host)) = s.downcast_ref::<BlockedName>() {
            return OutboundError::Policy(EgressRefusal::PrivateName(host.clone()));
        }
        // The connector's own connect timeout, like the exchange's.
        if s.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) {
            return OutboundError::Timeout;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s.to_string());
        source = s.source();
    }
    OutboundError::Failed(format!("{msg} ({}{})", url.origin().ascii_serialization(), url.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_request_is_described_without_its_query_string() {
        // Vendors take credentials in the query (Meta's access_token); failures are logged.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = OutboundConfig { allow_http: vec![format!("http://127.0.0.1:{port}")], allow_private: vec!["127.0.0.1/32".into()], ..Default::default() };
        let outbound = Outbound::new(&cfg).unwrap();
        let any = sluice_manifest::PermissionSet { outbound: vec!["*".into()], ..Default::default() };
        let grant = EffectiveGrant::new(sluice_manifest::Kind::Tag, &any, &any).unwrap();
        let request = |url: String| OutboundRequest { method: "POST".into(), url, headers: Vec::new(), body: Vec::new(), timeout: None };

        let refused = outbound.send(&grant, request(format!("http://127.0.0.1:{port}/v1/events?access_token=tok3n"))).await.unwrap_err();
        let msg = refused.to_string();
        assert!(matches!(refused, OutboundError::Failed(_)) && msg.contains(&format!("127.0.0.1:{port}/v1/events")), "{msg}");
        assert!(!msg.contains("tok3n"), "{msg}");

        let malformed = outbound.send(&grant, request("http://[::1/x?access_token=tok3n".into())).await.unwrap_err().to_string();
        assert!(malformed.contains("http://[::1/x") && !malformed.contains("tok3n"), "{malformed}");
    }

    fn any_grant() -> EffectiveGrant {
        let any = sluice_manifest::PermissionSet { outbound: vec!["*".into()], ..Default::default() };
        EffectiveGrant::new(sluice_manifest::Kind::Tag, &any, &any).unwrap()
    }

    /// Answers one request per connection with `answer`, and hands the request's head back.
    async fn answering(answer: &'static str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (heads, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (port, received)
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_private_address_is_refused_before_connecting() {
        // The URL passes the scheme rules (allow_http), but `localhost` resolves to loopback,
        // which allow_private does not list: the resolver refuses it, nothing connects.
        let (port, mut received) = answering("HTTP/1.1 204 No Content\r\n\r\n").await;
        let cfg = OutboundConfig { allow_http: vec![format!("http://localhost:{port}")], ..Default::default() };
        let outbound = Outbound::new(&cfg).unwrap();
        let request = OutboundRequest { method: "POST".into(), url: format!("http://localhost:{port}/x"), headers: Vec::new(), body: Vec::new(), timeout: None };
        let refused = outbound.send(&any_grant(), request).await.unwrap_err();
        assert!(matches!(&refused, OutboundError::Policy(EgressRefusal::PrivateName(host)) if host == "localhost"), "{refused:?}");
        assert!(received.try_recv().is_err(), "no request reached the listener");
    }

    #[tokio::test]
    async fn https_goes_through_tls_and_a_peer_that_does_not_speak_it_is_a_clear_failure() {
        // Production traffic is https: the request must start a TLS handshake (a plain-HTTP
        // peer sees the ClientHello, not a request line) and fail as a described error.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (first_bytes, mut received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let _ = first_bytes.send(buf[..n].to_vec());
            let _ = socket.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        });
        let cfg = OutboundConfig { allow_private: vec!["127.0.0.1/32".into()], ..Default::default() };
        let outbound = Outbound::new(&cfg).unwrap();
        let request = OutboundRequest { method: "POST".into(), url: format!("https://127.0.0.1:{port}/v1?access_token=tok3n"), headers: Vec::new(), body: Vec::new(), timeout: None };
        let failed = outbound.send(&any_grant(), request).await.unwrap_err();
        let msg = failed.to_string();
        assert!(matches!(failed, OutboundError::Failed(_)) && msg.contains(&format!("https://127.0.0.1:{port}/v1")) && !msg.contains("tok3n"), "{msg}");
        let first = received.recv().await.unwrap();
        assert_eq!(first.first(), Some(&0x16), "a TLS handshake record, not plain HTTP: {first:?}");
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_leaves_the_credentials_behind() {
        let (target, mut at_target) = answering("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
        let redirect: &'static str =
            Box::leak(format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{target}/landing\r\ncontent-length: 0\r\n\r\n").into_boxed_str());
        let (first, mut at_first) = answering(redirect).await;
        let cfg = OutboundConfig { allow_http: vec!["http://127.0.0.1:*".into()], allow_private: vec!["127.0.0.1/32".into()], ..Default::default() };
        let outbound = Outbound::new(&cfg).unwrap();
        let headers = vec![("authorization".into(), "Bearer vendor-key".into()), ("x-note".into(), "kept".into())];
        let request = OutboundRequest { method: "POST".into(), url: format!("http://127.0.0.1:{first}/start"), headers, body: b"{}".to_vec(), timeout: None };
        let answer = outbound.send(&any_grant(), request).await.unwrap();
        assert_eq!(answer.status, 204);
        let first_head = at_first.recv().await.unwrap().to_ascii_lowercase();
        assert!(first_head.contains("authorization: bearer vendor-key") && first_head.contains("user-agent: sluice/"), "{first_head}");
        let target_head = at_target.recv().await.unwrap().to_ascii_lowercase();
        assert!(target_head.starts_with("post /landing") && target_head.contains("x-note: kept"), "{target_head}");
        assert!(!target_head.contains("authorization"), "the credential stayed with its origin: {target_head}");
    }
}
