//! The GA4 client: how nearly every site reaches a server-side tag host. The site's Google tag
//! sends its hits to this container instead of Google's, and this client turns them into event
//! data in sGTM's common event model, so tags written for that model work unchanged.
//!
//! * Claims GA4 web hits on `<path_prefix>/g/collect` (and on any `extra_paths`, for sites that
//!   serve the container under custom paths): `GET` with a query string, `POST` with the query
//!   and an empty body, and batched `POST`s with one event per body line ([`hit`]).
//! * Claims Measurement Protocol requests on `<path_prefix>/mp/collect` ([`mp`]).
//! * Answers like Google's endpoint: `204` with CORS headers for the requesting origin
//!   (credentials allowed), `204` to a CORS preflight. A request that is not a valid hit is
//!   claimed and answered `400` with the reason; no event reaches the tags.
//! * With `allowed_origins`, a browser request from any other origin is claimed and answered
//!   `403`, and none of its events reach the tags: other sites cannot make your visitors'
//!   browsers send hits (with their first-party cookies) into your container. Requests with no
//!   `Origin` header (servers, Measurement Protocol) are not affected.
//! * Optionally manages the client id server-side (`manage_client_id`): an HttpOnly, Secure
//!   first-party cookie (`FPID` by default, two years) becomes `client_id`, and the browser's
//!   `cid` is kept as `x-ga-js_client_id`.
//! * Adds `ip_override` (the host's view of the visitor IP, which honours the operator's proxy
//!   trust setting) and `user_agent` when the operator granted them and the hit did not set them.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

use sluice_sdk::prelude::*;
use sluice_sdk::{Claim, Client, Cookie, Error, Host, Kind, Manifest, Parameter, Permissions, SameSite, Value};

pub mod hit;
pub mod mp;

use hit::{Fields, Node};

/// The GA4 client.
pub struct Ga4Client;

impl Client for Ga4Client {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Client,
        name: "ga4-client",
        version: env!("CARGO_PKG_VERSION"),
        description: "Claims GA4 web hits and Measurement Protocol requests; emits sGTM event data.",
        permissions: Permissions {
            query: true,
            body: true,
            remote_address: true,
            request_headers: &[
                "user-agent",
                "origin",
                "access-control-request-headers",
                "sec-ch-ua",
                "sec-ch-ua-mobile",
                "sec-ch-ua-platform",
            ],
            cookies: &["*"],
            response_headers: &[
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "content-type",
            ],
            response_cookies: &["*"],
            ..Permissions::NONE
        },
        consent: &[],
        parameters: &[
            Parameter::optional("path_prefix", "Prefix before /g/collect and /mp/collect (default none)."),
            Parameter::optional("extra_paths", "More paths that receive GA4 web hits, e.g. [\"/collect\"]."),
            Parameter::optional("manage_client_id", "Keep the client id in a server-set HttpOnly cookie.").flag(false),
            Parameter::optional("cookie_name", "Name of that cookie.").default("FPID"),
            Parameter::optional("cookie_max_age_days", "Its lifetime in days (sGTM's 730 by default).").number(730),
            Parameter::optional("cookie_domain", "Its Domain attribute (default: the request host only)."),
            Parameter::optional(
                "allowed_origins",
                "Origins whose pages may send hits, e.g. [\"https://shop.example\"] (default: any, as Google's endpoint).",
            ),
        ],
        delivery: sluice_sdk::Delivery::IN_REQUEST,
    };

    fn run(host: &Host) -> Result<Claim, Error> {
        let request = host.request();
        let config = host.config();
        let path = request.path();
        let prefix = config.str("path_prefix").unwrap_or_default();
        let prefix = prefix.trim_end_matches('/');
        let extra: Vec<String> = config.get("extra_paths")?.unwrap_or_default();
        let is_web = path == format!("{prefix}/g/collect") || extra.contains(&path);
        let is_mp = path == format!("{prefix}/mp/collect");
        if !is_web && !is_mp {
            return Ok(Claim::Pass);
        }
        let origin = request.header("origin").unless_denied()?;
        if let (Some(origin), Some(allowed)) = (&origin, config.get::<Vec<String>>("allowed_origins")?)
            && !allowed.contains(origin)
        {
            return answer(host, 403, &format!("origin {origin} may not send hits here (allowed_origins)"));
        }
        let method = request.method();
        if method == "OPTIONS" {
            cors(host, origin.as_deref(), true)?;
            host.response().set_status(204)?;
            return Ok(Claim::Claimed(Vec::new()));
        }
        let (query, body);
        let parsed = match (is_mp, method.as_str()) {
            (false, "GET") => {
                query = request.query_string()?;
                hit::events(&query, b"")
            }
            (false, "POST") => {
                (query, body) = (request.query_string()?, request.body()?);
                hit::events(&query, &body)
            }
            (true, "POST") => {
                mp::parse(&request.body()?, request.query_param("measurement_id")?.as_deref()).map(|events| events.into_iter().map(Fields::from).collect())
            }
            _ => Err(hit::Invalid(format!("method {method} is not accepted here (use POST)"))),
        };
        let mut events = match parsed {
            Ok(events) => events,
            Err(hit::Invalid(reason)) => return answer(host, 400, &reason),
        };

        let ip = request.remote_address().unless_denied()?.map(|ip| ip.to_string());
        let user_agent = request.header("user-agent").unless_denied()?;
        let header_hints = header_client_hints(host)?;
        let server_client_id = if !is_mp && config.require::<bool>("manage_client_id")? {
            Some(client_id_cookie(host)?)
        } else {
            None
        };
        let text = |s: &String| Node::Text(Cow::Owned(s.clone()));
        for ev in &mut events {
            if let Some(ip) = &ip {
                ev.insert_if_absent("ip_override", text(ip));
            }
            if let Some(ua) = &user_agent {
                ev.insert_if_absent("user_agent", text(ua));
            }
            if !header_hints.is_empty() {
                ev.insert_if_absent("client_hints", Node::Object(Fields::default()));
                if let Some(Node::Object(hints)) = ev.get_mut("client_hints") {
                    for (k, v) in &header_hints {
                        hints.insert_if_absent(*k, v.clone());
                    }
                }
            }
            if let Some(id) = &server_client_id
                && let Some(browser_id) = ev.insert("client_id", text(id))
            {
                ev.insert("x-ga-js_client_id", browser_id);
            }
        }
        cors(host, origin.as_deref(), false)?;
        host.response().set_status(204)?;
        Ok(Claim::ClaimedJson(events.iter().map(Fields::to_json).collect()))
    }
}

/// Claims the request with no events, answering `status` and `reason` as plain text.
fn answer(host: &Host, status: u16, reason: &str) -> Result<Claim, Error> {
    host.response().set_status(status)?;
    let _ = host.response().set_header("content-type", "text/plain; charset=utf-8");
    host.response().set_body(reason.as_bytes())?;
    Ok(Claim::Claimed(Vec::new()))
}

/// Client hints from the `Sec-CH-UA*` request headers, as sGTM's GA4 client adds them: `brands`
/// from `Sec-CH-UA`, `mobile` from `Sec-CH-UA-Mobile`, and `platform` as the header's raw value
/// (quotes included, as in sGTM's event models). Hit parameters (`uap`, `uamb`) take precedence.
fn header_client_hints(host: &Host) -> Result<Vec<(&'static str, Node<'static>)>, Error> {
    let request = host.request();
    let mut hints = Vec::new();
    if let Some(ua) = request.header("sec-ch-ua").unless_denied()? {
        hints.push(("brands", Node::from(Value::Array(hit::brands(&ua)))));
    }
    if let Some(mobile) = request.header("sec-ch-ua-mobile").unless_denied()? {
        hints.push(("mobile", Node::Bool(mobile.trim() == "?1")));
    }
    if let Some(platform) = request.header("sec-ch-ua-platform").unless_denied()? {
        hints.push(("platform", Node::Text(Cow::Owned(platform))));
    }
    Ok(hints)
}

/// CORS for the requesting origin, credentials allowed (gtag sends cookies with its hits).
fn cors(host: &Host, origin: Option<&str>, preflight: bool) -> Result<(), Error> {
    let request = host.request();
    let Some(origin) = origin else { return Ok(()) };
    let response = host.response();
    response.set_header("access-control-allow-origin", origin)?;
    response.set_header("access-control-allow-credentials", "true")?;
    if preflight {
        response.set_header("access-control-allow-methods", "POST, GET, OPTIONS")?;
        let headers = request.header("access-control-request-headers").unless_denied()?.unwrap_or_else(|| "content-type".into());
        response.set_header("access-control-allow-headers", &headers)?;
    }
    Ok(())
}

/// The server-managed client id: the cookie's value, or a new random id set as the cookie.
fn client_id_cookie(host: &Host) -> Result<String, Error> {
    let config = host.config();
    let name = config.require_str("cookie_name")?;
    if let Some(existing) = host.request().cookie(&name)?.filter(|v| !v.is_empty()) {
        return Ok(existing);
    }
    let days: i64 = config.require("cookie_max_age_days")?;
    let id = new_client_id();
    let mut cookie = Cookie::new(name, id.clone());
    cookie.http_only = true;
    cookie.same_site = Some(SameSite::Lax);
    cookie.max_age = Some(days.saturating_mul(86_400));
    cookie.domain = config.str("cookie_domain");
    host.response().set_cookie(&cookie)?;
    Ok(id)
}

/// 128 random bits as hex (seeded from the host's WASI random source via `RandomState`).
fn new_client_id() -> String {
    let word = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", word(), word())
}

sluice_sdk::export_client!(Ga4Client);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{PermissionSet, json};

    const HIT: &str = "v=2&tid=G-TEST1&cid=111.222&en=page_view&dl=https%3A%2F%2Fshop.example%2F&_et=12";

    #[test]
    fn custom_parameters_cannot_rename_the_event_or_replace_protocol_fields() {
        let events = hit::parse("v=2&tid=G-1&ep.event_name=&en=purchase&cid=1.2&epn.client_id=5&ep.x-ga-measurement_id=G-2&ep.coupon=X", b"").unwrap();
        let ev = &events[0];
        assert_eq!((&ev["event_name"], &ev["client_id"], &ev["x-ga-measurement_id"]), (&json!("purchase"), &json!("1.2"), &json!("G-1")));
        assert_eq!(ev["coupon"], "X", "other custom parameters are kept");
    }

    fn hit(method: &str) -> MockHost {
        MockHost::new()
            .method(method)
            .path("/g/collect")
            .query(HIT)
            .header("origin", "https://shop.example")
            .header("user-agent", "Mozilla/5.0 test")
            .header("sec-ch-ua", r#""Chromium";v="116", "Not)A;Brand";v="24""#)
            .header("sec-ch-ua-mobile", "?0")
            .header("sec-ch-ua-platform", r#""Windows""#)
            .remote_address("198.51.100.23")
    }

    fn claimed(mock: &mut MockHost) -> Vec<Value> {
        match mock.run_client::<Ga4Client>() {
            Ok(Claim::Claimed(events)) => events,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn claims_get_and_post_hits_and_answers_204_with_cors() {
        for method in ["GET", "POST"] {
            let mut mock = hit(method);
            let events = claimed(&mut mock);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0]["event_name"], "page_view");
            assert_eq!(events[0]["ip_override"], "198.51.100.23");
            assert_eq!(events[0]["user_agent"], "Mozilla/5.0 test");
            assert_eq!(events[0]["client_hints"]["brands"][0], json!({"brand": "Chromium", "version": "116"}));
            assert_eq!(events[0]["client_hints"]["platform"], "\"Windows\"");
            assert_eq!(events[0]["client_hints"]["mobile"], false);
            let r = mock.response();
            assert_eq!(r.status, Some(204));
            assert_eq!(r.header("access-control-allow-origin"), Some("https://shop.example"));
            assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        }
    }

    #[test]
    fn answers_a_preflight_and_passes_other_paths() {
        let mut mock = hit("OPTIONS").header("access-control-request-headers", "content-type");
        assert!(claimed(&mut mock).is_empty());
        assert_eq!(mock.response().status, Some(204));
        assert_eq!(mock.response().header("access-control-allow-methods"), Some("POST, GET, OPTIONS"));

        let mut other = hit("GET").path("/something-else");
        assert_eq!(other.run_client::<Ga4Client>(), Ok(Claim::Pass));
    }

    #[test]
    fn allowed_origins_keeps_other_sites_out() {
        let allow = |mock: MockHost| mock.param("allowed_origins", ["https://shop.example"]);
        let mut evil = allow(hit("POST").header("origin", "https://evil.example"));
        assert!(claimed(&mut evil).is_empty(), "no events from another site");
        assert_eq!(evil.response().status, Some(403));
        assert_eq!(evil.response().header("access-control-allow-origin"), None);
        let mut evil_preflight = allow(hit("OPTIONS").header("origin", "https://evil.example"));
        assert!(claimed(&mut evil_preflight).is_empty());
        assert_eq!(evil_preflight.response().status, Some(403));

        let mut own = allow(hit("POST"));
        assert_eq!(claimed(&mut own).len(), 1);
        assert_eq!(own.response().header("access-control-allow-origin"), Some("https://shop.example"));
        let mut server_side = allow(MockHost::new().method("POST").path("/g/collect").query(HIT));
        assert_eq!(claimed(&mut server_side).len(), 1, "no Origin header: not a browser, not filtered");
    }

    #[test]
    fn custom_paths_via_prefix_and_extra_paths() {
        let mut prefixed = hit("POST").path("/metrics/g/collect").param("path_prefix", "/metrics/");
        assert_eq!(claimed(&mut prefixed).len(), 1);
        let mut extra = hit("POST").path("/collect").param("extra_paths", ["/collect"]);
        assert_eq!(claimed(&mut extra).len(), 1);
        let mut plain = hit("POST").path("/g/collect").param("path_prefix", "/metrics");
        assert_eq!(plain.run_client::<Ga4Client>(), Ok(Claim::Pass));
    }

    #[test]
    fn an_invalid_hit_gets_400_with_the_reason_and_no_events() {
        let mut mock = hit("POST").query("v=2&tid=G-TEST1&cid=1.2");
        assert!(claimed(&mut mock).is_empty());
        assert_eq!(mock.response().status, Some(400));
        let body = String::from_utf8(mock.response().body.clone().unwrap_or_default()).unwrap_or_default();
        assert!(body.contains("no event name"), "{body}");
    }

    #[test]
    fn manages_the_client_id_in_an_http_only_cookie() {
        let mut first = hit("POST").param("manage_client_id", true).param("cookie_domain", "shop.example");
        let event = &claimed(&mut first)[0];
        let cookie = first.response().cookie("FPID").expect("FPID set").clone();
        assert!(cookie.http_only && cookie.secure);
        assert_eq!(cookie.max_age, Some(730 * 86_400));
        assert_eq!(cookie.domain.as_deref(), Some("shop.example"));
        assert_eq!(event["client_id"], cookie.value.as_str());
        assert_eq!(event["x-ga-js_client_id"], "111.222");

        let mut returning = hit("POST").param("manage_client_id", true).cookie("FPID", "known-id");
        let event = &claimed(&mut returning)[0];
        assert_eq!(event["client_id"], "known-id");
        assert!(returning.response().cookies.is_empty(), "an existing id is not re-set");
    }

    #[test]
    fn measurement_protocol_requests_become_events() {
        let body = json!({
            "client_id": "123.456", "user_id": "u-1",
            "user_properties": {"tier": {"value": "gold"}},
            "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
            "events": [{"name": "purchase", "params": {"currency": "EUR", "value": 30.03, "transaction_id": "T1"}},
                       {"name": "login"}]
        });
        let mut mock = MockHost::new()
            .method("POST")
            .path("/mp/collect")
            .query("measurement_id=G-TEST1&api_secret=shh")
            .body(body.to_string());
        let events = claimed(&mut mock);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["event_name"], "purchase");
        assert_eq!(events[0]["value"], 30.03);
        assert_eq!(events[0]["client_id"], "123.456");
        assert_eq!(events[0]["x-ga-measurement_id"], "G-TEST1");
        assert_eq!(events[0]["x-ga-mp2-user_properties"], json!({"tier": "gold"}));
        assert_eq!(events[0]["x-ga-mp2-consent"]["ad_user_data"], "GRANTED");
        assert!(!events[0].to_string().contains("shh"), "the api_secret never enters event data");

        let mut bad = MockHost::new().method("POST").path("/mp/collect").body(r#"{"events":[]}"#);
        assert!(claimed(&mut bad).is_empty());
        assert_eq!(bad.response().status, Some(400));
    }

    #[test]
    fn without_ip_and_user_agent_grants_the_hit_still_goes_through() {
        let grant = PermissionSet { query: true, body: true, ..Default::default() };
        let mut mock = hit("POST").grant(grant);
        let events = claimed(&mut mock);
        assert!(events[0].get("ip_override").is_none() && events[0].get("user_agent").is_none());
        assert_eq!(mock.response().status, Some(204));
    }
}
