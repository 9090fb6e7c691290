//! The single egress choke point: every byte a template sends leaves through [`Outbound::send`].
//!
//! Checks, in order, for the first URL and again for every redirect hop:
//! 1. the template's effective grant covers the URL (sGTM-style patterns, `sluice-manifest`);
//! 2. the scheme is https, or http to an origin the operator listed in `allow_http`
//!    ([`sluice_policy::egress`], the rules the mock host applies too);
//! 3. the address is public: IP literals are checked there, host names in `GuardedResolver` (below),
//!    which filters every resolved address and hands reqwest only the survivors, so the
//!    connection goes to an address that was checked (no DNS-rebinding gap). Loopback, private,
//!    link-local (cloud metadata), CGNAT, ULA and unspecified addresses are refused unless the
//!    operator listed them in `allow_private`.
//!
//! Redirects are followed here, not by reqwest (its policy is per client, and we have one
//! client for all templates), so each hop is checked against the *template's* grant, and a hop
//! to another origin drops the credential headers (`authorization`, `cookie`...). One shared
//! reqwest client keeps connections alive per vendor origin. Timeouts and a response-size cap
//! bound what a slow or hostile vendor can cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
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

/// Resolves names and keeps only the addresses the policy allows.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<EgressRules>,
}

/// The resolver's refusal, found again in reqwest's error chain to report it as policy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BlockedName(String);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| policy.address_allowed(a.ip())).collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(Box::new(BlockedName(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The choke point. One per host process.
#[derive(Debug)]
pub struct Outbound {
    client: reqwest::Client,
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
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        Ok(Outbound {
            client,
            policy,
            timeout: Duration::from_millis(cfg.timeout_ms),
            max_response_bytes: cfg.max_response_bytes,
            max_redirects: cfg.max_redirects,
        })
    }

    /// Checks and sends `request` for a template holding `grant`, following redirects.
    pub async fn send(&self, grant: &EffectiveGrant, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let mut url = Url::parse(&request.url).map_err(|e| OutboundError::Invalid(format!("URL {:?}: {e}", without_query(&request.url))))?;
        let mut method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| OutboundError::Invalid(format!("method {:?} is not valid", request.method)))?;
        let mut headers = build_headers(&request.headers)?;
        let mut body = request.body;
        let timeout = request.timeout.map_or(self.timeout, |t| t.min(self.timeout));

        for _hop in 0..=self.max_redirects {
            self.check(grant, &url)?;
            let response = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .body(body.clone())
                .timeout(timeout)
                .send()
                .await
                .map_err(classify)?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
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
                // As browsers and reqwest do: 303 always, and 301/302 after a POST, become GET.
                if status == reqwest::StatusCode::SEE_OTHER
                    || (method == reqwest::Method::POST && matches!(status.as_u16(), 301 | 302))
                {
                    method = reqwest::Method::GET;
                    body = Vec::new();
                }
                continue;
            }
            return self.read(response).await;
        }
        Err(OutboundError::Failed(format!("more than {} redirects", self.max_redirects)))
    }

    /// For a `record_only` template: every check `send` makes before connecting (URL, method,
    /// headers, grant, `[outbound]` rules), then `200 {}` instead of the network. What would
    /// have been sent is shown in the preview.
    pub fn record(&self, grant: &EffectiveGrant, request: &OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| OutboundError::Invalid(format!("method {:?} is not valid", request.method)))?;
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

    async fn read(&self, mut response: reqwest::Response) -> Result<OutboundResponse, OutboundError> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
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

fn build_headers(list: &[(String, String)]) -> Result<reqwest::header::HeaderMap, OutboundError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in list {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| OutboundError::Invalid(format!("header name {name:?} is not valid")))?;
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            return Err(OutboundError::Invalid(format!("header {name:?} is set by the host, not by templates")));
        }
        let value = reqwest::header::HeaderValue::from_str(value)
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

fn classify(e: reqwest::Error) -> OutboundError {
    if e.is_timeout() {
        return OutboundError::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(BlockedName(host)) = s.downcast_ref::<BlockedName>() {
            return OutboundError::Policy(EgressRefusal::PrivateName(host.clone()));
        }
        source = s.source();
    }
    // reqwest's Display names the URL, query string and all, and this message reaches logs and
    // traces: name it without the query instead. The Display omits the cause; include the chain.
    let url = e.url().map(|u| format!(" ({}{})", u.origin().ascii_serialization(), u.path()));
    let e = e.without_url();
    let mut msg = e.to_string() + url.as_deref().unwrap_or("");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    OutboundError::Failed(msg)
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
}
