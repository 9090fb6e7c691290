//! TikTok Events API tag. It needs nothing from the visitor's request but the event and its
//! `ttclid` and `_ttp` cookies, so it has no `fire`: the host queues each event with those
//! cookies, and `deliver` builds the events (hashing included) and POSTs up to 1,000 per request to
//! `{endpoint}/open_api/v1.3/event/track/` with the `Access-Token` header, in the body TikTok's
//! own server-side GTM template builds (`shared/reference/domain.md` §8.1).
//!
//! * `event` through the GA4 → TikTok map (`purchase` → `CompletePayment`...), `event_time` in
//!   seconds, `event_id` from the event or derived from it (retries deduplicate).
//! * `user`: hashed email, phone (E.164) and external id ([`sluice_sdk::identity`], TikTok
//!   rules), `ttclid` (page URL, else same-host referrer, else the `ttclid` cookie), the `_ttp`
//!   cookie, IP and user agent.
//! * `properties`: `contents` from `items`, `currency`, `value`.
//! * TikTok answers HTTP 200 with a `code`: 0 (and 20001, partial success) delivers the batch;
//!   40100 (throttled), 40700, `429` and `5xx` retry it; any other code rejects it — TikTok
//!   fails the whole batch for one bad event, so the host halves it until the bad event stands
//!   alone and dead-letters it with TikTok's message.
//!
//! Declares `ad_storage` + `ad_user_data`; the operator's grant should name
//! `https://business-api.tiktok.com/`.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use sluice_sdk::prelude::*;
use sluice_sdk::data::{str_at as text, url_param};
use sluice_sdk::identity::{self, Field, Vendor};
use sluice_sdk::json::Map;
use sluice_sdk::{
    Batch, BatchFailure, DeliverHost, Delivery, Error, HttpRequest, HttpResponse, Item, ItemResult, Kind, Manifest, Parameter, Permissions,
    Prepared, Tag, Value, json,
};

/// The TikTok Events API tag.
pub struct TikTokEvents;

impl Tag for TikTokEvents {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Tag,
        name: "tiktok-events",
        version: env!("CARGO_PKG_VERSION"),
        description: "Sends events to the TikTok Events API with hashed identifiers.",
        permissions: Permissions {
            event_data: &["*"],
            cookies: &["ttclid", "_ttp"],
            // Exactly the host its `endpoint` names (`sluice inspect` shows the default).
            outbound: &["{endpoint}/"],
            logging: true,
            ..Permissions::NONE
        },
        consent: &["ad_storage", "ad_user_data"],
        parameters: &[
            Parameter::required("pixel_code", "The TikTok pixel code (event_source_id)."),
            Parameter::required("access_token", "Events API access token.").secret(),
            Parameter::optional("endpoint", "API base URL.").default("https://business-api.tiktok.com"),
            Parameter::optional("test_event_code", "Send to the test events tool with this code."),
            Parameter::optional("phone_calling_code", "Country calling code for phone numbers given without one."),
        ],
        // TikTok's window for server events is 28 days (shared/reference/destinations-delivery.md §3).
        // No `fire`: nothing needs the visitor's request beyond the event and the two cookies,
        // which the host queues with the event; each event is built in `deliver`.
        delivery: Delivery::batched(Batch { max_items: 1000, max_bytes: 2 << 20, max_wait_ms: 1000, max_age_secs: 28 * 86_400 }),
    };

    fn deliver(host: &DeliverHost, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
        let config = host.config();
        let reject = |e: Error| BatchFailure::Reject(e.to_string());
        let calling_code = config.str("phone_calling_code");
        // An event TikTok could not take (it has no name) is rejected alone; the rest are sent.
        let prepared = Prepared::new(batch, |item| data_entry(item, calling_code.as_deref()));
        if prepared.is_empty() {
            return Ok(prepared.results());
        }
        let events = prepared.ready();
        let data: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
        let mut body = format!(
            "{{\"event_source\":\"web\",\"event_source_id\":{},\"partner_name\":\"Sluice\",\"data\":[{}]",
            json!(config.require_str("pixel_code").map_err(reject)?),
            data.join(",")
        );
        if let Some(code) = config.str("test_event_code") {
            body.push_str(&format!(",\"test_event_code\":{}", json!(code)));
        }
        body.push('}');
        let endpoint = config.require_str("endpoint").map_err(reject)?;
        let url = format!("{}/open_api/v1.3/event/track/", endpoint.trim_end_matches('/'));
        let request = HttpRequest::post(url).header("access-token", config.require_str("access_token").map_err(reject)?).json_text(body);
        let response = host.http().send(&request).map_err(|e| {
            host.log().info(&format!("TikTok not reached, will retry: {e}"));
            BatchFailure::Retry(None)
        })?;
        if let Some(failure) = answer(&response) {
            host.log().warn(&format!("TikTok did not take {} events: {failure:?}", events.len()));
            return Err(failure);
        }
        Ok(prepared.results())
    }
}

/// One queued event as TikTok's `data[]` entry (JSON text): built from its keys and its
/// `ttclid` and `_ttp` cookies, with the id the host queued it with as `event_id` (so a retry
/// deduplicates), and the time it was queued for an event that carries none.
pub fn data_entry(item: &Item, calling_code: Option<&str>) -> Result<String, Error> {
    let event = item.json_keys(EVENT_KEYS)?;
    let cookies = (item.cookie("ttclid").map(str::to_string), item.cookie("_ttp").map(str::to_string));
    let mut data = tiktok_event(&event, &cookies, item.created_ms / 1000, calling_code)?;
    data["event_id"] = json!(item.id);
    // `to_string` on a `Value` goes through a formatter per fragment: several times slower.
    sluice_sdk::json::to_string(&data).map_err(|e| Error::invalid(e.to_string()))
}

/// The event keys [`tiktok_event`] reads: `deliver` parses only these of each queued event.
pub const EVENT_KEYS: &[&str] = &[
    "event_name", "x-ga-mp2-timestamp_micros", "user_data", "user_id", "ip_override", "user_agent", "value", "currency", "items",
    "page_location", "page_referrer",
];

/// What TikTok's answer means for the batch: `None` when it took it.
pub fn answer(response: &HttpResponse) -> Option<BatchFailure> {
    if let Some(failure) = response.batch_failure("TikTok Events API") {
        return Some(failure);
    }
    let answer: Value = sluice_sdk::json::from_slice(&response.body).unwrap_or(Value::Null);
    match answer.get("code").and_then(Value::as_i64) {
        Some(0 | 20_001) | None => None,
        Some(40_100 | 40_700) => Some(BatchFailure::Retry(response.retry_after_ms())),
        Some(code) => {
            let message = answer.get("message").and_then(Value::as_str).unwrap_or("no message");
            Some(BatchFailure::Reject(format!("TikTok Events API code {code}: {message}")))
        }
    }
}

/// GA4 event names → TikTok standard events (others pass unchanged).
pub fn tiktok_event_name(ga4: &str) -> &str {
    match ga4 {
        "add_payment_info" => "AddPaymentInfo",
        "add_to_cart" => "AddToCart",
        "add_to_wishlist" => "AddToWishlist",
        "begin_checkout" => "InitiateCheckout",
        "page_view" => "Pageview",
        "purchase" => "CompletePayment",
        "search" => "Search",
        "sign_up" => "CompleteRegistration",
        "view_item" => "ViewContent",
        other => other,
    }
}

fn host_of(url: &str) -> Option<&str> {
    url.split_once("://")?.1.split(['/', '?', '#']).next()
}

/// `ttclid` from the page URL, else from a same-host referrer, else the cookie.
fn ttclid(event: &Map<String, Value>, cookie: Option<&str>) -> Option<String> {
    let page = text(event, "page_location");
    let from_page = page.and_then(|p| url_param(p, "ttclid"));
    let from_referrer = text(event, "page_referrer")
        .filter(|r| page.is_some_and(|p| host_of(p).is_some() && host_of(p) == host_of(r)))
        .and_then(|r| url_param(r, "ttclid"));
    from_page.or(from_referrer).or_else(|| cookie.filter(|c| !c.is_empty()).map(str::to_string))
}

/// Builds TikTok's `data[]` entry for one sGTM event, all but its `event_id` ([`data_entry`]
/// adds it). `cookies` = (`ttclid`, `_ttp`); `now_secs` is the `event_time` of an event without
/// an MP timestamp.
pub fn tiktok_event(
    event: &Map<String, Value>,
    cookies: &(Option<String>, Option<String>),
    now_secs: u64,
    calling_code: Option<&str>,
) -> Result<Value, Error> {
    let name = text(event, "event_name").ok_or_else(|| Error::invalid("event has no event_name"))?;
    let mut user = Map::new();
    for (field, value) in identity::from_event(Vendor::TikTok, event, calling_code) {
        let key = match field {
            Field::Email => "email",
            Field::Phone => "phone",
            Field::ExternalId => "external_id",
            _ => continue,
        };
        user.insert(key.into(), json!(value));
    }
    if let Some(id) = ttclid(event, cookies.0.as_deref()) {
        user.insert("ttclid".into(), json!(id));
    }
    if let Some(ttp) = cookies.1.as_deref().filter(|t| !t.is_empty()) {
        user.insert("ttp".into(), json!(ttp));
    }
    for (from, to) in [("ip_override", "ip"), ("user_agent", "user_agent")] {
        if let Some(v) = text(event, from) {
            user.insert(to.into(), json!(v));
        }
    }

    let mut properties = Map::new();
    if let Some(Value::Array(items)) = event.get("items") {
        let contents: Vec<Value> = items
            .iter()
            .filter_map(|item| {
                let id = item.get("item_id").or_else(|| item.get("item_name")).and_then(Value::as_str)?;
                let mut c = Map::new();
                c.insert("content_type".into(), json!("product"));
                c.insert("content_id".into(), json!(id));
                for (from, to) in [("item_name", "content_name"), ("item_category", "content_category"), ("item_brand", "brand")] {
                    if let Some(v) = item.get(from).and_then(Value::as_str) {
                        c.insert(to.into(), json!(v));
                    }
                }
                for (from, to) in [("price", "price"), ("quantity", "quantity")] {
                    if let Some(v) = item.get(from).filter(|v| v.is_number()) {
                        c.insert(to.into(), v.clone());
                    }
                }
                Some(Value::Object(c))
            })
            .collect();
        if !contents.is_empty() {
            properties.insert("contents".into(), Value::Array(contents));
        }
    }
    if let Some(currency) = text(event, "currency") {
        properties.insert("currency".into(), json!(currency));
    }
    if let Some(value) = event.get("value").filter(|v| v.is_number()) {
        properties.insert("value".into(), value.clone());
    }

    let event_time = event.get("x-ga-mp2-timestamp_micros").and_then(Value::as_u64).map_or(now_secs, |us| us / 1_000_000);
    let mut page = Map::new();
    for (from, to) in [("page_location", "url"), ("page_referrer", "referrer")] {
        if let Some(v) = text(event, from) {
            page.insert(to.into(), json!(v));
        }
    }
    Ok(json!({
        "event": tiktok_event_name(name),
        "event_time": event_time,
        "page": page,
        "user": user,
        "properties": properties,
    }))
}

sluice_sdk::export_tag!(TikTokEvents);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{HttpResponse, PermissionSet};

    fn mock(event: Value) -> MockHost {
        MockHost::new()
            .event(event)
            .param("pixel_code", "CABC123")
            .secret_param("access_token", "tt-token")
            .consent_all_granted()
            .grant(PermissionSet {
                event_data: vec!["*".into()],
                cookies: vec!["ttclid".into(), "_ttp".into()],
                outbound: vec!["https://business-api.tiktok.com/".into()],
                logging: true,
                ..Default::default()
            })
            .cookie("_ttp", "2Lq3ttpValue")
            .stub("https://business-api.tiktok.com/", HttpResponse::new(200, r#"{"code":0,"message":"OK"}"#))
    }

    fn purchase() -> Value {
        json!({"event_name": "purchase", "transaction_id": "T-9", "value": 10, "currency": "USD",
               "page_location": "https://shop.example/done?ttclid=E.C.P.abc", "ip_override": "203.0.113.5", "user_agent": "UA/1",
               "user_id": "User-42", "user_data": {"email_address": "John_Smith@gmail.com", "phone_number": "+1 (650) 555-1212"},
               "items": [{"item_id": "SKU1", "item_name": "Tee", "price": 10, "quantity": 1, "item_brand": "Acme"}]})
    }

    #[test]
    fn the_event_reads_nothing_beyond_event_keys() {
        let mut full = purchase();
        full["x-ga-mp2-timestamp_micros"] = json!(1_700_000_000_000_000u64);
        full["page_referrer"] = json!("https://search.example/?ttclid=REF");
        full["x-ga-gcs"] = json!("G111");
        let full = full.as_object().expect("object").clone();
        let cookies = (None, Some("ttp-1".to_string()));
        let built = |event: &Map<String, Value>| tiktok_event(event, &cookies, 1_700_000_000, Some("1")).expect("builds");
        assert_eq!(built(&sluice_sdk::data::select(&full, EVENT_KEYS)), built(&full));
    }

    #[test]
    fn sends_the_documented_body_with_the_access_token_header() {
        let mut m = mock(purchase());
        m.run_tag::<TikTokEvents>().expect("fires");
        assert!(m.sent().is_empty(), "nothing is sent from the visitor's request");
        assert_eq!(m.deliver_queued::<TikTokEvents>().delivered.len(), 1);
        let sent = &m.sent()[0];
        assert_eq!(sent.url, "https://business-api.tiktok.com/open_api/v1.3/event/track/");
        assert!(sent.headers.contains(&("access-token".into(), "tt-token".into())));
        let body: Value = sluice_sdk::json::from_slice(&sent.body).expect("json");
        assert_eq!((body["event_source"].as_str(), body["event_source_id"].as_str()), (Some("web"), Some("CABC123")));
        let d = &body["data"][0];
        assert_eq!(d["event"], "CompletePayment");
        assert_eq!(d["page"]["url"], "https://shop.example/done?ttclid=E.C.P.abc");
        let u = &d["user"];
        assert_eq!(u["email"], "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
        assert_eq!(u["phone"], identity::sha256_hex("+16505551212"), "E.164 with the +");
        assert_eq!(u["external_id"], identity::sha256_hex("User-42"), "TikTok keeps the id's case");
        assert_eq!((u["ttclid"].as_str(), u["ttp"].as_str()), (Some("E.C.P.abc"), Some("2Lq3ttpValue")));
        assert_eq!((u["ip"].as_str(), u["user_agent"].as_str()), (Some("203.0.113.5"), Some("UA/1")));
        assert_eq!(d["properties"]["contents"][0], json!({"content_type": "product", "content_id": "SKU1", "content_name": "Tee", "brand": "Acme", "price": 10, "quantity": 1}));
        assert_eq!((d["properties"]["value"].as_i64(), d["properties"]["currency"].as_str()), (Some(10), Some("USD")));
        assert!(d["event_time"].as_u64().is_some_and(|t| t < 10_000_000_000), "seconds, not milliseconds");
    }

    #[test]
    fn the_host_queues_only_granted_cookies_and_a_nameless_event_is_rejected_alone() {
        let narrow = PermissionSet {
            event_data: vec!["*".into()],
            cookies: vec!["ttclid".into()],
            outbound: vec!["https://business-api.tiktok.com/".into()],
            ..Default::default()
        };
        let mut m = mock(purchase()).grant(narrow).cookie("ttclid", "from-cookie");
        m.run_tag::<TikTokEvents>().expect("queued");
        assert_eq!(m.queued()[0].cookies, [("ttclid".to_string(), "from-cookie".to_string())], "_ttp is not granted: not queued");
        let mut nameless = purchase();
        nameless.as_object_mut().expect("object").remove("event_name");
        nameless["event_id"] = json!("no-name");
        m = m.event(nameless);
        m.run_tag::<TikTokEvents>().expect("queued");
        let report = m.deliver_queued::<TikTokEvents>();
        assert_eq!(report.dead.len(), 1);
        assert_eq!(report.dead[0].0, "no-name");
        assert!(report.dead[0].1.contains("event_name"), "{}", report.dead[0].1);
        assert_eq!(report.delivered.len(), 1, "the other event went");
        let body: Value = sluice_sdk::json::from_slice(&m.sent()[0].body).expect("json");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
        assert!(body["data"][0]["user"].get("ttp").is_none());
    }

    #[test]
    fn ttclid_falls_back_to_same_host_referrer_then_cookie() {
        let mut e = purchase();
        e["page_location"] = json!("https://shop.example/done");
        e["page_referrer"] = json!("https://shop.example/landing?ttclid=from-ref");
        let ev = tiktok_event(e.as_object().expect("object"), &(Some("cookie-id".into()), None), 1, None).expect("builds");
        assert_eq!(ev["user"]["ttclid"], "from-ref");
        e["page_referrer"] = json!("https://other.example/?ttclid=foreign");
        let ev = tiktok_event(e.as_object().expect("object"), &(Some("cookie-id".into()), None), 1, None).expect("builds");
        assert_eq!(ev["user"]["ttclid"], "cookie-id", "a foreign referrer's click id is not taken");
    }

    #[test]
    fn a_batch_tiktok_refuses_is_halved_to_the_bad_event_and_throttling_retries() {
        let refused = HttpResponse::new(200, r#"{"code":40002,"message":"Invalid event_time"}"#);
        let (ok, throttled) = (HttpResponse::new(200, r#"{"code":0,"message":"OK"}"#), HttpResponse::new(200, r#"{"code":40100,"message":"Too many requests"}"#));
        let mut m = mock(purchase()).stub_sequence(
            "https://business-api.tiktok.com/",
            vec![Ok(throttled), Ok(refused.clone()), Ok(refused), Ok(ok)],
        );
        for id in ["a", "b"] {
            let mut e = purchase();
            e["event_id"] = json!(id);
            m = m.event(e);
            m.run_tag::<TikTokEvents>().expect("fires");
        }
        let first = m.deliver_queued::<TikTokEvents>();
        assert_eq!(first.retry, [("a".to_string(), None), ("b".to_string(), None)], "40100 is throttling: the batch is retried");
        let second = m.deliver_queued::<TikTokEvents>();
        assert_eq!(second.batches, [vec!["a".to_string(), "b".into()], vec!["a".into()], vec!["b".into()]]);
        assert_eq!(second.dead, [("a".to_string(), "TikTok Events API code 40002: Invalid event_time".to_string())]);
        assert_eq!(second.delivered, ["b"]);
        let body: Value = sluice_sdk::json::from_slice(&m.sent()[0].body).expect("json");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2), "both events in one request");
        assert_eq!(body["data"][1]["event_id"], "b");
    }
}
