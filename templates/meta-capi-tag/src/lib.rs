//! Meta Conversions API tag: each event becomes one server event. It runs nothing in the
//! visitor's request: the host sets the `_fbp` / `_fbc` cookies it declares (its id cookies,
//! see [`ID_COOKIES`]) and queues the event with them; `deliver` builds the server events
//! (hashing included) and POSTs up to 1,000 per request to
//! `{endpoint}/{api_version}/{pixel_id}/events` with the access token (a secret parameter).
//!
//! * `event_name` through the GA4 → Meta standard-event map (`purchase` → `Purchase`...);
//!   `event_time` in seconds (the event's MP timestamp, else now) — an event older than Meta's
//!   7-day window is rejected alone in `deliver` (Meta would reject the whole request), so it
//!   is dead-lettered with the reason instead of sent;
//!   `event_id` from the event, else derived from it, so retries deduplicate.
//! * `user_data`: customer information hashed by Meta's documented rules
//!   ([`sluice_sdk::identity`]); `client_ip_address`, `client_user_agent`, `fbp`, `fbc` in the
//!   clear. `fbc` comes from the `_fbc` cookie, or is rebuilt from an `fbclid` in the page URL.
//! * `custom_data`: value, currency, order id and `contents` from `items`.
//! * The `_fbp` / `_fbc` first-party cookies as Meta's pixel sets them (90 days): `_fbp` when
//!   the visitor has none, `_fbc` when the page URL carries an `fbclid` the cookie does not
//!   hold. `set_cookies = false` turns both off.
//! * Meta's answer, per batch: a 2xx delivers it; throttling (codes 4, 17, 32, 613, 80000–80014),
//!   temporary errors (1, 2), an invalid token (190: the operator must fix it; retried meanwhile),
//!   `429` and `5xx` retry it; any other refusal rejects it — Meta fails the whole request for one
//!   bad event, so the host halves the batch until the bad event stands alone and dead-letters
//!   it with Meta's message.
//!
//! The host runs this tag only with `ad_storage` and `ad_user_data` granted (its declared
//! consent purposes); the operator's grant should name `https://graph.facebook.com/`.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_sdk::prelude::*;
use sluice_sdk::data::{str_at as text, url_param};
use sluice_sdk::identity::{self, Field, Vendor};
use sluice_sdk::json::Map;
use sluice_sdk::{
    Batch, BatchFailure, DeliverHost, Delivery, Error, HttpRequest, HttpResponse, IdCookie, Item, ItemResult, Kind, Manifest, Parameter,
    Permissions, Prepared, Tag, Value, json,
};

/// The Meta Conversions API tag.
pub struct MetaCapi;

/// Meta rejects events older than this (seconds).
pub const MAX_AGE_SECS: u64 = 7 * 24 * 3600;

/// Meta's first-party cookies, as its pixel sets them: `_fbp` (`fb.1.<ms>.<random>`) when the
/// visitor has none, `_fbc` (`fb.1.<ms>.<fbclid>`) when the page URL carries a click id the
/// cookie does not hold; 90 days. The host sets them, in the visitor's request.
pub const ID_COOKIES: &[IdCookie] = &[
    IdCookie::minted("_fbp", "fb.1.{now_ms}.{random}", 90).enabled_by("set_cookies"),
    IdCookie::click_id("_fbc", "fbclid", "fb.1.{now_ms}.{click_id}", 90).enabled_by("set_cookies"),
];

impl Tag for MetaCapi {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Tag,
        name: "meta-capi",
        version: env!("CARGO_PKG_VERSION"),
        description: "Sends events to the Meta Conversions API with hashed customer information.",
        permissions: Permissions {
            event_data: &["*"],
            cookies: &["_fbp", "_fbc"],
            response_cookies: &["_fbp", "_fbc"],
            // The endpoint is a parameter (tests point it at a fake); the grant names Meta's host.
            // Exactly the host its `endpoint` names (`sluice inspect` shows the default).
            outbound: &["{endpoint}/"],
            logging: true,
            ..Permissions::NONE
        },
        consent: &["ad_storage", "ad_user_data"],
        parameters: &[
            Parameter::required("pixel_id", "The Meta pixel (dataset) id."),
            Parameter::required("access_token", "Conversions API access token.").secret(),
            Parameter::optional("api_version", "Graph API version.").default("v25.0"),
            Parameter::optional("endpoint", "Graph API base URL.").default("https://graph.facebook.com"),
            Parameter::optional("test_event_code", "Send to the Test Events tool with this code."),
            Parameter::optional("action_source", "Meta's action_source.").default("website"),
            Parameter::optional("phone_calling_code", "Country calling code for phone numbers given without one, e.g. \"1\"."),
            Parameter::optional("set_cookies", "Set the _fbp/_fbc first-party cookies.").flag(true),
        ],
        // No sandbox in the visitor's request: the host sets the cookies and queues the event
        // with them; `deliver` builds the server events.
        delivery: Delivery::batched(Batch { max_items: 1000, max_bytes: 2 << 20, max_wait_ms: 1000, max_age_secs: MAX_AGE_SECS as u32 })
            .with_id_cookies(ID_COOKIES),
    };

    fn deliver(host: &DeliverHost, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
        let config = host.config();
        let reject = |e: Error| BatchFailure::Reject(e.to_string());
        let url = format!(
            "{}/{}/{}/events?access_token={}",
            config.require_str("endpoint").map_err(reject)?.trim_end_matches('/'),
            config.require_str("api_version").map_err(reject)?,
            config.require_str("pixel_id").map_err(reject)?,
            config.require_str("access_token").map_err(reject)?,
        );
        let (calling_code, action_source) = (config.str("phone_calling_code"), config.require_str("action_source").map_err(reject)?);
        // An event Meta could not take (no name, too old by now) is rejected alone; the rest go.
        let now_ms = now_ms();
        let prepared = Prepared::new(batch, |item| queued_server_event(item, calling_code.as_deref(), &action_source, now_ms));
        if prepared.is_empty() {
            return Ok(prepared.results());
        }
        let events = prepared.ready();
        let request = HttpRequest::post(url).json_text(body(&events, config.str("test_event_code").as_deref()));
        let response = host.http().send(&request).map_err(|e| {
            host.log().info(&format!("Meta not reached, will retry: {e}"));
            BatchFailure::Retry(None)
        })?;
        if let Some((failure, message)) = answer(&response) {
            host.log().warn(&format!("Meta did not take {} events ({failure:?}): {message}", events.len()));
            return Err(failure);
        }
        Ok(prepared.results())
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One queued event as Meta's server event (JSON text): built from its keys and its `_fbp` and
/// `_fbc` cookies (as the host left them), with the id the host queued it with as `event_id` (so a
/// retry deduplicates). `now_ms` decides whether it is too old to send.
pub fn queued_server_event(item: &Item, calling_code: Option<&str>, action_source: &str, now_ms: u64) -> Result<String, Error> {
    let event = item.json_keys(EVENT_KEYS)?;
    let cookies = Cookies { fbp: item.cookie("_fbp").map(str::to_string), fbc: item.cookie("_fbc").map(str::to_string) };
    // An `fbc` rebuilt from the page URL's fbclid carries the time the event was queued.
    let mut server_event = server_event(&event, &cookies, item.created_ms, calling_code, action_source)?;
    if let Some(event_time) = server_event["event_time"].as_u64()
        && event_time + MAX_AGE_SECS < now_ms / 1000
    {
        return Err(Error::invalid(format!("event_time {event_time} is now more than 7 days old: Meta would reject it")));
    }
    server_event["event_id"] = json!(item.id);
    // `to_string` on a `Value` goes through a formatter per fragment: several times slower.
    sluice_sdk::json::to_string(&server_event).map_err(|e| Error::invalid(e.to_string()))
}

/// The request body for a batch of server events (JSON texts, spliced in as they are).
pub fn body<S: AsRef<str>>(events: &[S], test_event_code: Option<&str>) -> String {
    let events: Vec<&str> = events.iter().map(AsRef::as_ref).collect();
    let mut out = format!("{{\"data\":[{}],\"partner_agent\":\"sluice-{}\"", events.join(","), env!("CARGO_PKG_VERSION"));
    if let Some(code) = test_event_code {
        out.push_str(&format!(",\"test_event_code\":{}", json!(code)));
    }
    out.push('}');
    out
}

/// What Meta's answer means for the batch — `None` when it took it — and Meta's message.
pub fn answer(response: &HttpResponse) -> Option<(BatchFailure, String)> {
    if (200..300).contains(&response.status) {
        return None;
    }
    // Read once: the message and the code come from the same envelope.
    let envelope: Value = sluice_sdk::json::from_slice(&response.body).unwrap_or(Value::Null);
    let message = error_message(&envelope).unwrap_or_else(|| format!("HTTP {}", response.status));
    let code = envelope["error"]["code"].as_u64();
    let transient = matches!(response.status, 408 | 429 | 500..=599)
        || matches!(code, Some(1 | 2 | 4 | 17 | 32 | 190 | 613 | 80_000..=80_014));
    let failure =
        if transient { BatchFailure::Retry(response.retry_after_ms()) } else { BatchFailure::Reject(format!("Meta Conversions API: {message}")) };
    Some((failure, message))
}

/// The event keys [`server_event`] reads: `deliver` parses only these of each queued event.
pub const EVENT_KEYS: &[&str] = &[
    "event_name", "x-ga-mp2-timestamp_micros", "event_time", "user_data", "user_id", "ip_override", "user_agent",
    "value", "currency", "transaction_id", "items", "page_location", "page_referrer",
];

/// The event's time in seconds: its Measurement Protocol timestamp, else its `event_time`.
pub fn event_time(event: &Map<String, Value>) -> Option<u64> {
    event.get("x-ga-mp2-timestamp_micros").and_then(Value::as_u64).map(|us| us / 1_000_000).or_else(|| event.get("event_time").and_then(Value::as_u64))
}

/// The visitor's Meta cookies, if present.
#[derive(Debug, Default)]
pub struct Cookies {
    /// `_fbp`.
    pub fbp: Option<String>,
    /// `_fbc`.
    pub fbc: Option<String>,
}

/// GA4 event names → Meta standard events (names not listed pass unchanged).
pub fn meta_event_name(ga4: &str) -> &str {
    match ga4 {
        "page_view" => "PageView",
        "view_item" => "ViewContent",
        "add_to_cart" => "AddToCart",
        "add_to_wishlist" => "AddToWishlist",
        "begin_checkout" => "InitiateCheckout",
        "add_payment_info" => "AddPaymentInfo",
        "purchase" => "Purchase",
        "generate_lead" => "Lead",
        "sign_up" => "CompleteRegistration",
        "search" => "Search",
        other => other,
    }
}

/// Builds the Meta server event for one sGTM event, all but its `event_id` (which needs the
/// host's [`sluice_sdk::Event::fingerprint`]; `deliver` adds it).
pub fn server_event(
    event: &Map<String, Value>,
    cookies: &Cookies,
    now_ms: u64,
    calling_code: Option<&str>,
    action_source: &str,
) -> Result<Value, Error> {
    let name = text(event, "event_name").ok_or_else(|| Error::invalid("event has no event_name"))?;
    let event_time = event_time(event).unwrap_or(now_ms / 1000);

    let mut user = Map::new();
    for (field, value) in identity::from_event(Vendor::Meta, event, calling_code) {
        let key = match field {
            Field::Email => "em",
            Field::Phone => "ph",
            Field::FirstName => "fn",
            Field::LastName => "ln",
            Field::City => "ct",
            Field::State => "st",
            Field::Zip => "zp",
            Field::Country => "country",
            Field::ExternalId => "external_id",
            // Meta's user_data has no street, gender or birth date from the event model.
            _ => continue,
        };
        user.insert(key.into(), json!(value));
    }
    if let Some(ip) = text(event, "ip_override") {
        user.insert("client_ip_address".into(), json!(ip));
    }
    if let Some(ua) = text(event, "user_agent") {
        user.insert("client_user_agent".into(), json!(ua));
    }
    let fbp = cookies.fbp.clone().filter(|v| !v.is_empty());
    if let Some(fbp) = &fbp {
        user.insert("fbp".into(), json!(fbp));
    }
    if let Some(fbc) = fbc(event, cookies, now_ms) {
        user.insert("fbc".into(), json!(fbc));
    }

    let mut custom = Map::new();
    if let Some(value) = event.get("value").filter(|v| v.is_number()) {
        custom.insert("value".into(), value.clone());
    }
    if let Some(currency) = text(event, "currency") {
        custom.insert("currency".into(), json!(currency));
    }
    if let Some(order) = text(event, "transaction_id") {
        custom.insert("order_id".into(), json!(order));
    }
    if let Some(Value::Array(items)) = event.get("items") {
        let contents: Vec<Value> = items
            .iter()
            .filter_map(|item| {
                let id = item.get("item_id").or_else(|| item.get("item_name")).and_then(Value::as_str)?;
                let mut c = Map::new();
                c.insert("id".into(), json!(id));
                if let Some(p) = item.get("price").filter(|p| p.is_number()) {
                    c.insert("item_price".into(), p.clone());
                }
                c.insert("quantity".into(), item.get("quantity").filter(|q| q.is_number()).cloned().unwrap_or(json!(1)));
                Some(Value::Object(c))
            })
            .collect();
        if !contents.is_empty() {
            custom.insert("content_ids".into(), Value::Array(contents.iter().map(|c| c["id"].clone()).collect()));
            custom.insert("content_type".into(), json!("product"));
            custom.insert("contents".into(), Value::Array(contents));
        }
    }

    let mut out = json!({
        "event_name": meta_event_name(name),
        "event_time": event_time,
        "action_source": action_source,
        "user_data": user,
    });
    if let Some(url) = text(event, "page_location") {
        out["event_source_url"] = json!(url);
    }
    if let Some(referrer) = text(event, "page_referrer") {
        out["referrer_url"] = json!(referrer);
    }
    if !custom.is_empty() {
        out["custom_data"] = Value::Object(custom);
    }
    Ok(out)
}

/// `fbclid` from the page URL's query, if any.
pub fn fbclid(event: &Map<String, Value>) -> Option<String> {
    url_param(text(event, "page_location")?, "fbclid")
}

/// The `_fbc` value: the cookie, unless the page URL carries a different `fbclid`, in which
/// case it is rebuilt as `fb.1.<now ms>.<fbclid>` (Meta's rule for server-side `fbc`).
fn fbc(event: &Map<String, Value>, cookies: &Cookies, now_ms: u64) -> Option<String> {
    let cookie = cookies.fbc.clone().filter(|v| !v.is_empty());
    match (fbclid(event), cookie) {
        // The click id is what follows the last '.' (values may carry an appendix; ids never do).
        (Some(id), Some(c)) if c.rsplit('.').next() == Some(id.as_str()) || c.split('.').nth(3) == Some(id.as_str()) => Some(c),
        (Some(id), _) => Some(format!("fb.1.{now_ms}.{id}")),
        (None, c) => c,
    }
}

/// `error.message` (with type and code) from Meta's Graph error envelope.
fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(format!(
        "{} (type {}, code {}, fbtrace_id {})",
        e.get("message").and_then(Value::as_str).unwrap_or("no message"),
        e.get("type").and_then(Value::as_str).unwrap_or("?"),
        e.get("code").map(ToString::to_string).unwrap_or_else(|| "?".into()),
        e.get("fbtrace_id").and_then(Value::as_str).unwrap_or("?"),
    ))
}

sluice_sdk::export_tag!(MetaCapi);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{HttpResponse, PermissionSet};

    fn grant() -> PermissionSet {
        PermissionSet {
            event_data: vec!["*".into()],
            cookies: vec!["_fbp".into(), "_fbc".into()],
            response_cookies: vec!["_fbp".into(), "_fbc".into()],
            outbound: vec!["https://graph.facebook.com/".into()],
            logging: true,
            ..Default::default()
        }
    }

    fn purchase() -> Value {
        json!({
            "event_name": "purchase", "event_id": "T-100", "value": 30.03, "currency": "USD", "transaction_id": "T-100",
            "page_location": "https://shop.example/thanks?fbclid=IwAR2F4abc", "page_referrer": "https://shop.example/cart",
            "ip_override": "203.0.113.9", "user_agent": "Mozilla/5.0 test", "user_id": "Customer-7",
            "user_data": {"email_address": " John_Smith@gmail.com ", "phone_number": "(650)555-1212",
                          "address": {"first_name": "Mary", "city": "Menlo Park", "country": "United States"}},
            "items": [{"item_id": "SKU_1", "price": 10.01, "quantity": 3}]
        })
    }

    fn mock(event: Value) -> MockHost {
        MockHost::new()
            .event(event)
            .param("pixel_id", "1234567890")
            .secret_param("access_token", "EAAtoken")
            .consent_all_granted()
            .param("phone_calling_code", "1")
            .grant(grant())
            .cookie("_fbp", "fb.1.1596403881668.1116446470")
            .stub("https://graph.facebook.com/", HttpResponse::new(200, r#"{"events_received":1,"fbtrace_id":"x"}"#))
    }

    /// Runs the tag for the event (the host sets its cookies and queues it), then delivers what
    /// was queued; the body Meta received.
    fn fire_and_deliver(m: &mut MockHost) -> Value {
        m.run_tag::<MetaCapi>().expect("runs");
        assert!(m.sent().is_empty(), "nothing is sent from the visitor's request");
        let report = m.deliver_queued::<MetaCapi>();
        assert_eq!(report.delivered.len(), 1, "{report:?}");
        sluice_sdk::json::from_slice(&m.sent()[0].body).expect("json")
    }

    #[test]
    fn sends_one_server_event_with_hashed_user_data() {
        let mut m = mock(purchase()).param("test_event_code", "TEST42");
        fire_and_deliver(&mut m);
        assert_eq!(m.queued().len(), 0);
        let sent = &m.sent()[0];
        assert_eq!(sent.url, "https://graph.facebook.com/v25.0/1234567890/events?access_token=EAAtoken");
        let body: Value = sluice_sdk::json::from_slice(&sent.body).expect("json");
        assert_eq!(body["test_event_code"], "TEST42");
        let ev = &body["data"][0];
        assert_eq!(ev["event_name"], "Purchase");
        assert_eq!(ev["event_id"], "T-100", "the site's id, for dedup with the pixel");
        assert_eq!(ev["action_source"], "website");
        assert_eq!(ev["event_source_url"], "https://shop.example/thanks?fbclid=IwAR2F4abc");
        let u = &ev["user_data"];
        assert_eq!(u["em"], "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
        assert_eq!(u["ph"], "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176");
        assert_eq!(u["fn"], "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec");
        assert_eq!(u["ct"], "0007a3d64c01e23d5075203c5977c14e4f7e01a3fc570686fcc50b5e1dd42685");
        assert_eq!(u["country"], "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621");
        assert_eq!(u["external_id"], identity::sha256_hex("customer-7"));
        assert_eq!((u["client_ip_address"].as_str(), u["client_user_agent"].as_str()), (Some("203.0.113.9"), Some("Mozilla/5.0 test")));
        assert_eq!(u["fbp"], "fb.1.1596403881668.1116446470");
        let fbc = u["fbc"].as_str().expect("fbc rebuilt from fbclid");
        assert!(fbc.starts_with("fb.1.") && fbc.ends_with(".IwAR2F4abc"), "{fbc}");
        let c = &ev["custom_data"];
        assert_eq!((c["value"].as_f64(), c["currency"].as_str(), c["order_id"].as_str()), (Some(30.03), Some("USD"), Some("T-100")));
        assert_eq!(c["contents"], json!([{"id": "SKU_1", "item_price": 10.01, "quantity": 3}]));
        assert!(!body.to_string().contains("John_Smith") && !body.to_string().contains("555-1212"), "nothing in the clear");
        // _fbc is new (from the URL), _fbp existed: only _fbc is set.
        assert_eq!(m.response().cookies.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["_fbc"]);
        assert_eq!(m.response().cookie("_fbc").and_then(|c| c.max_age), Some(90 * 24 * 3600));
    }

    #[test]
    fn without_ad_user_data_the_host_does_not_run_it() {
        // As the host: consent is resolved from the request's signals, and a tag whose purposes
        // are not all granted is never run.
        let mut m = MockHost::new()
            .event(purchase())
            .param("pixel_id", "1234567890")
            .secret_param("access_token", "EAAtoken")
            .grant(grant())
            .header("x-consent", "ad_storage=granted,ad_user_data=denied")
            .stub("https://graph.facebook.com/", HttpResponse::new(200, r#"{"events_received":1}"#));
        let err = m.run_tag::<MetaCapi>().unwrap_err();
        assert!(err.to_string().contains("blocked by consent: ad_user_data not granted"), "{err}");
        assert_eq!(m.blocked_by_consent(), Some(&[sluice_sdk::Purpose::AdUserData][..]));
        assert!(m.sent().is_empty());
    }

    #[test]
    fn a_new_visitor_gets_an_fbp_cookie_and_meta_gets_the_same_value() {
        let mut m = MockHost::new()
            .event(purchase())
            .param("pixel_id", "1234567890")
            .secret_param("access_token", "EAAtoken")
            .consent_all_granted()
            .grant(grant())
            .stub("https://graph.facebook.com/", HttpResponse::new(200, r#"{"events_received":1,"fbtrace_id":"x"}"#));
        let body = fire_and_deliver(&mut m);
        let set = m.response().cookie("_fbp").expect("_fbp set").value.clone();
        assert!(set.starts_with("fb.1."), "{set}");
        assert_eq!(body["data"][0]["user_data"]["fbp"], set.as_str(), "the server event carries the cookie the host set");
        assert_eq!(m.response().cookie("_fbp").and_then(|c| c.max_age), Some(90 * 24 * 3600));
    }

    #[test]
    fn the_click_id_cookie_comes_from_the_page_url_and_the_visitors_fbp_is_kept() {
        let mut e = purchase();
        e["page_location"] = json!("https://shop.example/p?fbclid=IwAR-click");
        let mut m = mock(e).grant(PermissionSet { event_data: vec!["page_location".into()], ..grant() });
        m.run_tag::<MetaCapi>().expect("runs");
        assert!(m.response().cookie("_fbc").is_some_and(|c| c.value.ends_with(".IwAR-click")));
        assert!(m.response().cookie("_fbp").is_none(), "the visitor's _fbp is kept, not replaced");
        let queued = &m.queued()[0];
        assert_eq!(queued.cookie("_fbc"), m.response().cookie("_fbc").map(|c| c.value.as_str()), "queued with the cookies the host set");
        assert_eq!(queued.cookie("_fbp"), Some("fb.1.1596403881668.1116446470"));
    }

    #[test]
    fn set_cookies_false_or_a_grant_without_them_sets_no_cookie() {
        let mut off = mock(purchase()).param("set_cookies", false);
        off.run_tag::<MetaCapi>().expect("runs");
        assert!(off.response().cookies.is_empty(), "{:?}", off.response().cookies);
        let ungranted = PermissionSet { response_cookies: Vec::new(), ..grant() };
        let mut m = mock(purchase()).grant(ungranted);
        m.run_tag::<MetaCapi>().expect("runs");
        assert!(m.response().cookies.is_empty(), "{:?}", m.response().cookies);
        // Meta still gets the click id, rebuilt from the page URL in deliver.
        let report = m.deliver_queued::<MetaCapi>();
        assert_eq!(report.delivered.len(), 1, "{report:?}");
        let body: Value = sluice_sdk::json::from_slice(&m.sent()[0].body).expect("json");
        assert!(body["data"][0]["user_data"]["fbc"].as_str().is_some_and(|v| v.ends_with(".IwAR2F4abc")), "{body}");
    }

    #[test]
    fn an_existing_fbc_cookie_with_the_same_click_id_is_kept() {
        let mut m = mock(purchase()).cookie("_fbc", "fb.1.1554763741205.IwAR2F4abc");
        let body = fire_and_deliver(&mut m);
        assert_eq!(body["data"][0]["user_data"]["fbc"], "fb.1.1554763741205.IwAR2F4abc");
        assert!(m.response().cookie("_fbc").is_none());
    }

    #[test]
    fn without_an_event_id_a_retry_gets_the_same_derived_one() {
        let mut event = purchase();
        event.as_object_mut().expect("object").remove("event_id");
        let ids: Vec<Value> = (0..2)
            .map(|_| {
                let mut m = mock(event.clone());
                let body = fire_and_deliver(&mut m);
                assert_eq!(Some(m.sent().len()), Some(1));
                body["data"][0]["event_id"].clone()
            })
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[0].as_str().map(str::len), Some(32));
    }

    #[test]
    fn an_operator_who_withholds_user_data_gets_an_event_without_it_not_a_failure() {
        let keys = ["event_name", "event_id", "ip_override", "user_agent", "page_location", "value", "currency", "transaction_id", "items"];
        let mut m = mock(purchase()).grant(PermissionSet { event_data: keys.iter().map(|k| k.to_string()).collect(), ..grant() });
        m.run_tag::<MetaCapi>().expect("runs");
        assert!(!m.queued()[0].data.contains("user_data"), "the host queued only the granted keys: {}", m.queued()[0].data);
        let report = m.deliver_queued::<MetaCapi>();
        assert_eq!(report.delivered.len(), 1, "{report:?}");
        let body: Value = sluice_sdk::json::from_slice(&m.sent()[0].body).expect("json");
        let user = &body["data"][0]["user_data"];
        assert!(user.get("em").is_none() && user.get("ph").is_none(), "nothing from user_data: {user}");
        assert_eq!(user["client_ip_address"], "203.0.113.9", "the granted keys still go");

        // Without the site's event_id, the id comes from what the tag may see: stable, and not
        // a hash over the user_data it was not granted.
        let queued_id = |grant: PermissionSet| {
            let mut e = purchase();
            e.as_object_mut().expect("object").remove("event_id");
            let mut m = mock(e).grant(grant);
            m.run_tag::<MetaCapi>().expect("runs");
            m.queued()[0].id.clone()
        };
        let narrowed = || PermissionSet { event_data: keys.iter().map(|k| k.to_string()).collect(), ..grant() };
        assert_eq!(queued_id(narrowed()), queued_id(narrowed()), "the same event gets the same id");
        assert_ne!(queued_id(narrowed()), queued_id(grant()), "the narrowed event's id is its own");
    }

    #[test]
    fn the_server_event_reads_nothing_beyond_event_keys() {
        let mut full = purchase();
        full["x-ga-mp2-timestamp_micros"] = json!(1_700_000_000_000_000u64);
        full["x-ga-gcs"] = json!("G111");
        full["page_title"] = json!("Thanks");
        let full = full.as_object().expect("object").clone();
        let cookies = Cookies { fbp: Some("fb.1.1.2".into()), fbc: None };
        let built = |event: &Map<String, Value>| server_event(event, &cookies, 1_700_000_000_000, Some("1"), "website").expect("builds");
        assert_eq!(built(&sluice_sdk::data::select(&full, EVENT_KEYS)), built(&full));
    }

    #[test]
    fn events_older_than_seven_days_are_dead_lettered_not_sent() {
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_micros() as u64;
        let mut old = purchase();
        old["x-ga-mp2-timestamp_micros"] = json!(now_us - 8 * 24 * 3600 * 1_000_000);
        let mut m = mock(old);
        m.run_tag::<MetaCapi>().expect("runs");
        let report = m.deliver_queued::<MetaCapi>();
        assert!(report.delivered.is_empty() && m.sent().is_empty(), "{report:?}");
        assert!(report.dead.len() == 1 && report.dead[0].1.contains("more than 7 days old"), "{report:?}");
    }

    #[test]
    fn a_batch_meta_refuses_for_one_bad_event_is_halved_until_that_event_is_dead_lettered() {
        let envelope = r#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"fbtrace_id":"AbC"}}"#;
        let (bad, ok) = (HttpResponse::new(400, envelope), HttpResponse::new(200, r#"{"events_received":1}"#));
        // Batches [a b c] refused, [a] taken, [b c] refused, [b] taken, [c] refused: c is the bad one.
        let mut m = mock(purchase()).stub_sequence(
            "https://graph.facebook.com/",
            vec![Ok(bad.clone()), Ok(ok.clone()), Ok(bad.clone()), Ok(ok), Ok(bad)],
        );
        for id in ["a", "b", "c"] {
            let mut e = purchase();
            e["event_id"] = json!(id);
            m = m.event(e);
            m.run_tag::<MetaCapi>().expect("runs");
        }
        let report = m.deliver_queued::<MetaCapi>();
        assert_eq!(report.batches.len(), 5, "{report:?}");
        assert_eq!(report.batches[0].len(), 3, "one request for all three");
        assert_eq!(report.delivered, ["a", "b"]);
        assert_eq!(
            report.dead,
            [("c".to_string(), "Meta Conversions API: Invalid parameter (type OAuthException, code 100, fbtrace_id AbC)".to_string())]
        );
        assert!(m.logs().iter().any(|(_, line)| line.contains("Invalid parameter")));
    }

    #[test]
    fn throttling_and_outages_retry_and_keep_the_event_id() {
        let throttled = r#"{"error":{"message":"User request limit reached","type":"OAuthException","code":17}}"#;
        let mut m = mock(purchase()).stub_sequence(
            "https://graph.facebook.com/",
            vec![Ok(HttpResponse::new(400, throttled)), Ok(HttpResponse::new(503, "")), Ok(HttpResponse::new(200, "{}"))],
        );
        m.run_tag::<MetaCapi>().expect("runs");
        assert_eq!(m.deliver_queued::<MetaCapi>().retry, [("T-100".to_string(), None)], "code 17 is throttling");
        assert_eq!(m.deliver_queued::<MetaCapi>().retry, [("T-100".to_string(), None)], "5xx");
        assert_eq!(m.deliver_queued::<MetaCapi>().delivered, ["T-100"]);
        let ids: Vec<Value> = m.sent().iter().map(|r| sluice_sdk::json::from_slice::<Value>(&r.body).expect("json")["data"][0]["event_id"].clone()).collect();
        assert_eq!(ids, [json!("T-100"), json!("T-100"), json!("T-100")], "a redelivery carries the same event_id");
    }

    #[test]
    fn already_hashed_fields_pass_through_and_empty_ones_are_left_out() {
        let digest = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f";
        let event = json!({"event_name": "page_view", "user_agent": "UA",
            "user_data": {"sha256_email_address": digest.to_uppercase(), "phone_number": "n/a"}});
        let mut m = mock(event);
        let body = fire_and_deliver(&mut m);
        let u = &body["data"][0]["user_data"];
        assert_eq!(u["em"], digest);
        assert!(u.get("ph").is_none(), "a phone that normalises to nothing is not sent");
        assert_eq!(body["data"][0]["event_name"], "PageView");
    }
}
