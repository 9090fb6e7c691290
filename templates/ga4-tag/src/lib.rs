//! GA4 tag: forwards events to Google Analytics from its outbox, in one of two modes. It needs
//! nothing from the visitor's request (the IP and user agent travel in the event), so it has no
//! per-request phase: the host queues each event and `deliver` gets up to 25 at a time.
//!
//! * `gtag` (default, what sGTM's GA4 tag does): the event is re-encoded as a GA4 web hit and
//!   POSTed to `{endpoint}/g/collect`, protocol parameters preserved (`x-ga-*` keys back to
//!   `gcs`, `gcd`, `_p`...; `ep.`/`epn.` for event parameters; `prN` items), the visitor's IP as
//!   `_uip` and user agent as the `User-Agent` header. Consecutive events of one browser hit
//!   (same stream, client, session, page load `_p`, hit counter `_s`, address and user agent:
//!   gtag batched them) go back as one request, as gtag sent them: what they share in the
//!   query, a `\r\n`-separated body line per event (domain.md §5.1). A batch holds at most
//!   25 events (an operator may lower it, not raise it), so a request does too: a visitor's
//!   hit of thousands goes back in pieces, not as one request Google might refuse whole.
//! * `mp`: Measurement Protocol JSON to `{endpoint}/mp/collect` with the API secret, within
//!   Google's limits (§6): event and parameter names ≤ 40 characters, letters/digits/`_`
//!   starting with a letter, not reserved; ≤ 25 parameters; string values ≤ 100 characters;
//!   ≤ 25 user properties (names ≤ 24, values ≤ 36). What does not fit is dropped, not sent
//!   for Google to reject. Consecutive events of one visitor (`client_id`, `user_id`) share a
//!   request, up to Google's 25 events; an event Google would refuse (a reserved name) is
//!   dead-lettered instead of sent.
//!
//! Google answers 2xx to whatever it receives (malformed data is silently dropped), so in
//! practice only outages retry: `429`, `5xx` and connection failures retry the request's
//! events, any other status dead-letters them. Events wait at most 72 hours (Google's backdating
//! limit).
//!
//! The endpoint is configurable (`https://region1.google-analytics.com` for EU collection).
//! Personal data (`user_data`) is never forwarded: GA4 does not accept it. Declares
//! `analytics_storage`.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod query;

use query::Query;
use sluice_sdk::prelude::*;
use std::borrow::Cow;

use sluice_sdk::fields::{Fields, Node};
use sluice_sdk::json::Map;
use sluice_sdk::{Batch, BatchFailure, DeliverHost, Delivery, Error, HttpRequest, Item, ItemResult, Kind, Manifest, Parameter, Permissions, Tag, Value, json};

/// The GA4 tag.
pub struct Ga4Tag;

impl Tag for Ga4Tag {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Tag,
        name: "ga4",
        version: env!("CARGO_PKG_VERSION"),
        description: "Forwards events to Google Analytics 4 as web hits or Measurement Protocol.",
        permissions: Permissions { event_data: &["*"], outbound: &["{endpoint}/"], logging: true, ..Permissions::NONE },
        consent: &["analytics_storage"],
        parameters: &[
            Parameter::optional("measurement_id", "G-XXXX; default: the event's x-ga-measurement_id."),
            Parameter::optional("mode", "gtag (web hits) or mp (Measurement Protocol).").default("gtag"),
            Parameter::optional("api_secret", "Measurement Protocol API secret (mp mode).").secret(),
            Parameter::optional("endpoint", "Base URL.").default("https://www.google-analytics.com"),
        ],
        // MP: 25 events and < 130 kB per request; backdating at most 72 hours (§6).
        delivery: Delivery::batched(Batch { max_items: 25, max_bytes: 120_000, max_wait_ms: 500, max_age_secs: 72 * 3600 }),
    };

    fn deliver(host: &DeliverHost, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
        let config = host.config();
        let reject = |e: Error| BatchFailure::Reject(e.to_string());
        let endpoint = config.require_str("endpoint").map_err(reject)?;
        let endpoint = endpoint.trim_end_matches('/');
        let mode = config.require_str("mode").map_err(reject)?;
        let mut results: Vec<Option<ItemResult>> = vec![None; batch.len()];
        let configured_id = config.str("measurement_id");
        // The stream an event goes to; an item that cannot be sent is rejected alone.
        let measurement_id = |event_id: Option<&str>| {
            configured_id
                .clone()
                .or_else(|| event_id.map(str::to_string))
                .ok_or_else(|| Error::invalid("no measurement id: set the measurement_id parameter"))
        };
        match mode.as_str() {
            "gtag" => {
                // Web hits as Google takes them: consecutive events of one browser hit go back
                // as one request, as gtag batched them (shared parameters in the query, a body
                // line per event); any other event alone, all in its query. Each event is read
                // as borrowed fields and re-encoded whole (`Item::fields`); the requests of the
                // batch are all sent at once.
                let mut events = Vec::with_capacity(batch.len());
                for (n, item) in batch.iter().enumerate() {
                    match item.fields().and_then(|event| Ok((measurement_id(event.str("x-ga-measurement_id"))?, event))) {
                        Ok((id, event)) => events.push((n, id, event)),
                        Err(e) => results[n] = Some(ItemResult::Rejected(e.to_string())),
                    }
                }
                let mut hits: Vec<Hit> = Vec::new();
                for (n, id, event) in &events {
                    if event.str("client_id").is_none() {
                        results[*n] = Some(ItemResult::Rejected(NO_CLIENT_ID.into()));
                        continue;
                    }
                    let identity = hit_identity(event, id);
                    match hits.last_mut() {
                        Some(hit) if identity.is_some() && hit.identity == identity => hit.events.push((*n, event, id)),
                        _ => hits.push(Hit { events: vec![(*n, event, id)], identity }),
                    }
                }
                // A hit that cannot be encoded (it cannot happen once each has a client_id) is
                // its events' rejection, not the batch's.
                let mut requests = Vec::with_capacity(hits.len());
                hits.retain(|hit| match hit.request(endpoint) {
                    Ok(request) => {
                        requests.push(request);
                        true
                    }
                    Err(e) => {
                        for (n, _, _) in &hit.events {
                            results[*n] = Some(ItemResult::Rejected(e.to_string()));
                        }
                        false
                    }
                });
                let answers = host.http().send_all(&requests).map_err(|e| BatchFailure::Reject(e.to_string()))?;
                for (hit, answer) in hits.iter().zip(answers) {
                    let result = result_of(host, answer);
                    for (n, _, _) in &hit.events {
                        results[*n] = Some(result.clone());
                    }
                }
            }
            "mp" => {
                let secret = config.require_str("api_secret").map_err(reject)?;
                let mut ready = Vec::new();
                for (n, item) in batch.iter().enumerate() {
                    let prepared = item.json::<Map<String, Value>>().and_then(|event| {
                        let id = measurement_id(event.get("x-ga-measurement_id").and_then(Value::as_str))?;
                        Ok((event, id))
                    });
                    match prepared {
                        Ok((event, measurement_id)) => ready.push(Ready { index: n, event, measurement_id }),
                        Err(e) => results[n] = Some(ItemResult::Rejected(e.to_string())),
                    }
                }
                for group in visitor_runs(ready) {
                    let id = group[0].measurement_id.clone();
                    let indices: Vec<usize> = group.iter().map(|r| r.index).collect();
                    let bodies: Vec<Result<Value, Error>> = group.iter().map(|r| mp_body(&r.event)).collect();
                    let mut merged: Option<Value> = None;
                    let mut sent_indices = Vec::new();
                    for (body, n) in bodies.into_iter().zip(&indices) {
                        match body {
                            Err(e) => results[*n] = Some(ItemResult::Rejected(e.to_string())),
                            Ok(body) => {
                                sent_indices.push(*n);
                                match &mut merged {
                                    None => merged = Some(body),
                                    Some(m) => {
                                        if let (Some(all), Some(more)) = (m["events"].as_array_mut(), body["events"].as_array()) {
                                            all.extend(more.iter().cloned());
                                        }
                                    }
                                }
                            }
                        }
                    }
                    let Some(body) = merged else { continue };
                    let url = format!("{endpoint}/mp/collect?measurement_id={id}&api_secret={secret}");
                    let result = send(host, &HttpRequest::post(url).json(&body));
                    for n in sent_indices {
                        results[n] = Some(result.clone());
                    }
                }
            }
            other => return Err(BatchFailure::Reject(format!("mode {other:?} is not gtag or mp"))),
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(ItemResult::Retry(None))).collect())
    }
}

/// Sends one request; what its answer means for the events in it.
fn send(host: &DeliverHost, request: &HttpRequest) -> ItemResult {
    result_of(host, host.http().send(request))
}

/// What an answer (or its absence) means for the events of its request.
fn result_of(host: &DeliverHost, answer: Result<sluice_sdk::HttpResponse, Error>) -> ItemResult {
    match answer {
        Err(e) => {
            host.log().info(&format!("Google Analytics not reached, will retry: {e}"));
            ItemResult::Retry(None)
        }
        Ok(response) => match response.batch_failure("Google Analytics") {
            None => ItemResult::Delivered,
            Some(BatchFailure::Retry(after)) => ItemResult::Retry(after),
            Some(BatchFailure::Reject(why)) => ItemResult::Rejected(why),
        },
    }
}

/// The event keys that make events one browser hit: one page load's hit counter (`_p`, `_s`),
/// for one client (`cid`), session (`sid`) and address (`_uip`), and one user agent. gtag sends
/// the events of a hit as body lines under one query; events that agree on all of these, and
/// go to one stream, came from one.
const HIT_IDENTITY: [&str; 6] = ["x-ga-page_id", "x-ga-request_count", "client_id", "ga_session_id", "ip_override", "user_agent"];

/// What makes an event part of one browser hit: its stream and its [`HIT_IDENTITY`] values.
/// `None` without a page load and its hit counter: there is no telling which hit such an
/// event came from, so it goes alone.
type Identity<'e> = Option<(&'e str, [Option<&'e Node<'e>>; HIT_IDENTITY.len()])>;

fn hit_identity<'e>(event: &'e Fields<'e>, measurement_id: &'e str) -> Identity<'e> {
    let values = HIT_IDENTITY.map(|k| event.get(k));
    (values[0].is_some() && values[1].is_some()).then_some((measurement_id, values))
}

/// Consecutive queued events of one browser hit: each with its batch position and stream.
struct Hit<'b, 'e> {
    events: Vec<(usize, &'b Fields<'e>, &'b String)>,
    identity: Identity<'b>,
}

impl Hit<'_, '_> {
    /// The request: one event as a plain web hit (all in the query, no body); several with
    /// what they share in the query and a `\r\n`-separated body line each.
    fn request(&self, endpoint: &str) -> Result<HttpRequest, Error> {
        let request = match self.events.as_slice() {
            [(_, event, id)] => HttpRequest::post(format!("{endpoint}/g/collect?{}", web_hit(event, id)?)),
            events => {
                let params = events.iter().map(|(_, event, id)| hit_params(event, id)).collect::<Result<Vec<Params>, Error>>()?;
                let (shared, lines) = split_shared(&params);
                HttpRequest::post(format!("{endpoint}/g/collect?{}", encode(&shared)))
                    .header("content-type", "text/plain;charset=UTF-8")
                    .body(lines.join("\r\n"))
            }
        };
        Ok(match self.events.first().and_then(|(_, event, _)| event.str("user_agent")) {
            Some(ua) => request.header("user-agent", ua),
            None => request,
        })
    }
}

/// A hit's events split as gtag sends them: the parameters each event has once, with the same
/// value, go in the query once (in the first event's order); the rest, and always the event
/// name, in that event's body line. Google adds the query to every line, as the GA4 client
/// does (`hit::events`), so each event arrives as it was queued.
fn split_shared(events: &[Params]) -> (Params, Vec<String>) {
    let counts: Vec<std::collections::BTreeMap<&str, (usize, &str)>> = events
        .iter()
        .map(|params| {
            let mut counts = std::collections::BTreeMap::new();
            for (k, v) in params {
                counts.entry(k.as_str()).and_modify(|(n, _)| *n += 1).or_insert((1, v.as_str()));
            }
            counts
        })
        .collect();
    let is_shared = |name: &str, value: &str| name != "en" && counts.iter().all(|c| c.get(name) == Some(&(1, value)));
    let shared: Params = events.first().map(|first| first.iter().filter(|(k, v)| is_shared(k, v)).cloned().collect()).unwrap_or_default();
    let shared_names: std::collections::BTreeSet<&str> = shared.iter().map(|(k, _)| k.as_str()).collect();
    let lines = events
        .iter()
        .map(|params| encode(params.iter().filter(|(k, _)| !shared_names.contains(k.as_str()))))
        .collect();
    (shared, lines)
}

/// An item ready to send: its place in the batch, its event and the stream it goes to.
struct Ready {
    index: usize,
    event: Map<String, Value>,
    measurement_id: String,
}

/// Consecutive events of one visitor and measurement id (an MP request has one `client_id`,
/// `user_id` and stream), in order, at most 25 each.
fn visitor_runs(events: Vec<Ready>) -> Vec<Vec<Ready>> {
    let key = |r: &Ready| (r.event.get("client_id").cloned(), r.event.get("user_id").cloned(), r.measurement_id.clone());
    let mut runs: Vec<Vec<Ready>> = Vec::new();
    for entry in events {
        match runs.last_mut() {
            Some(run) if run.len() < 25 && key(&run[0]) == key(&entry) => run.push(entry),
            _ => runs.push(vec![entry]),
        }
    }
    runs
}

/// Event-model keys with a dedicated hit parameter (or that must never be forwarded).
const MAPPED: &[(&str, &str)] = &[
    ("event_name", "en"),
    ("client_id", "cid"),
    ("user_id", "uid"),
    ("page_location", "dl"),
    ("page_title", "dt"),
    ("page_referrer", "dr"),
    ("language", "ul"),
    ("screen_resolution", "sr"),
    ("currency", "cu"),
    ("ga_session_id", "sid"),
    ("ga_session_number", "sct"),
    ("engagement_time_msec", "_et"),
    ("x-ga-protocol_version", "v"),
    ("x-ga-gtm_version", "gtm"),
    ("x-ga-page_id", "_p"),
    ("x-ga-request_count", "_s"),
    ("x-ga-tfd", "tfd"),
    ("ip_override", "_uip"),
];

/// Keys never forwarded as event parameters.
const NOT_FORWARDED: &[&str] = &["user_data", "user_agent", "items", "client_hints", "x-ga-measurement_id", "x-ga-js_client_id", "consent_state"];

/// A string, number or boolean as a hit parameter's text (`true` is `1`).
fn scalar<'n>(v: &'n Node) -> Option<Cow<'n, str>> {
    match v {
        Node::Text(s) => Some(Cow::Borrowed(s)),
        Node::Number(n) => Some(Cow::Owned(n.to_string())),
        Node::Bool(b) => Some(Cow::Borrowed(if *b { "1" } else { "0" })),
        _ => None,
    }
}

/// Why an event cannot be a web hit.
const NO_CLIENT_ID: &str = "event has no client_id; GA4 needs one";

/// Re-encodes an sGTM event as a GA4 web hit query string.
pub fn web_hit(event: &Fields, measurement_id: &str) -> Result<String, Error> {
    let mut q = Query::with_capacity(2048);
    each_param(event, measurement_id, &mut |name, value| {
        q.append_pair(name, value);
    })?;
    Ok(q.finish())
}

/// A web hit's parameters, in the order they are sent (for a hit of several events, which go
/// out split between the query and body lines: [`split_shared`]).
type Params = Vec<(String, String)>;

fn hit_params(event: &Fields, measurement_id: &str) -> Result<Params, Error> {
    let mut params = Vec::with_capacity(event.len() + 16);
    each_param(event, measurement_id, &mut |name, value| params.push((name.to_string(), value.to_string())))?;
    Ok(params)
}

fn encode<'p>(params: impl IntoIterator<Item = &'p (String, String)>) -> String {
    let mut q = Query::with_capacity(2048);
    for (name, value) in params {
        q.append_pair(name, value);
    }
    q.finish()
}

/// An sGTM event as web hit parameters, each handed to `emit` as it is written: `v`, `tid`,
/// the mapped keys, then every other key in the event's order (as `ep.`/`epn.`/`up.`…
/// parameters), the client hints, the items. A single event's hit is encoded straight from
/// here, with no list in between.
fn each_param(event: &Fields, measurement_id: &str, emit: &mut impl FnMut(&str, &str)) -> Result<(), Error> {
    if event.str("client_id").is_none() {
        return Err(Error::invalid(NO_CLIENT_ID));
    }
    emit("v", "2");
    emit("tid", measurement_id);
    // One pass sorts the fields: a mapped key's value into its slot (they go first, in
    // `MAPPED`'s order), the keys never forwarded out, the rest kept in the event's order.
    let mut mapped: [Option<&Node>; MAPPED.len()] = [None; MAPPED.len()];
    let mut rest = Vec::with_capacity(event.len());
    for (key, value) in event.iter() {
        match MAPPED.iter().position(|(k, _)| *k == key) {
            Some(i) => mapped[i] = Some(value),
            None if NOT_FORWARDED.contains(&key) => {}
            None => rest.push((key, value)),
        }
    }
    for ((key, param), value) in MAPPED.iter().zip(mapped) {
        if *key == "x-ga-protocol_version" {
            continue;
        }
        if let Some(v) = value.and_then(scalar) {
            emit(param, &v);
        }
    }
    // One buffer for the prefixed parameter names (`ep.`, `epn.`, `up.`...).
    let mut name = String::new();
    for (key, value) in rest {
        match (key, value) {
            ("x-ga-system_properties", Node::Object(props)) => {
                for (k, v) in props.iter() {
                    if let Some(v) = scalar(v) {
                        emit(joined(&mut name, "_", k), &v);
                    }
                }
            }
            ("x-sst-system_properties", Node::Object(props)) => {
                for (k, v) in props.iter() {
                    if let Some(v) = scalar(v) {
                        emit(joined(&mut name, "sst.", k), &v);
                    }
                }
            }
            ("x-ga-mp2-user_properties", Node::Object(props)) => {
                for (k, v) in props.iter() {
                    let prefix = if matches!(v, Node::Number(_)) { "upn." } else { "up." };
                    if let Some(v) = scalar(v) {
                        emit(joined(&mut name, prefix, k), &v);
                    }
                }
            }
            (k, v) => {
                let Some(text) = scalar(v) else { continue };
                if let Some(name) = k.strip_prefix("x-ga-mp2-").or_else(|| k.strip_prefix("x-ga-")) {
                    emit(name, &text);
                } else if matches!(v, Node::Number(_)) {
                    emit(joined(&mut name, "epn.", k), &text);
                } else {
                    emit(joined(&mut name, "ep.", k), &text);
                }
            }
        }
    }
    if let Some(Node::Object(hints)) = event.get("client_hints") {
        client_hints(emit, hints);
    }
    if let Some(Node::Array(items)) = event.get("items") {
        for (i, item) in items.iter().enumerate() {
            if let Node::Object(item) = item {
                let encoded = encode_item(item);
                if !encoded.is_empty() {
                    emit(&format!("pr{}", i + 1), &encoded);
                }
            }
        }
    }
    Ok(())
}

/// `prefix` and `key` as one name, in `buf`.
fn joined<'b>(buf: &'b mut String, prefix: &str, key: &str) -> &'b str {
    buf.clear();
    buf.push_str(prefix);
    buf.push_str(key);
    buf
}

/// `client_hints` back to `uaa`…`uaw`; brand names in `uafvl` are percent-encoded once more,
/// as gtag sends them.
fn client_hints(emit: &mut impl FnMut(&str, &str), hints: &Fields) {
    for (key, param) in [("architecture", "uaa"), ("bitness", "uab"), ("model", "uam"), ("platform", "uap"), ("platform_version", "uapv")] {
        if let Some(v) = hints.get(key).and_then(scalar) {
            emit(param, &v);
        }
    }
    for (key, param) in [("mobile", "uamb"), ("wow64", "uaw")] {
        if let Some(v) = hints.get(key).and_then(scalar) {
            emit(param, &v);
        }
    }
    if let Some(Node::Array(list)) = hints.get("full_version_list") {
        let encoded: Vec<String> = list
            .iter()
            .map(|b| {
                let part = |k: &str| {
                    let text = match b {
                        Node::Object(brand) => brand.str(k).unwrap_or(""),
                        _ => "",
                    };
                    let mut encoded = String::with_capacity(text.len());
                    query::encode_into(&mut encoded, text);
                    encoded
                };
                format!("{};{}", part("brand"), part("version"))
            })
            .collect();
        emit("uafvl", &encoded.join("|"));
    }
}

const ITEM_KEYS: &[(&str, &str)] = &[
    ("item_id", "id"), ("item_name", "nm"), ("affiliation", "af"), ("coupon", "cp"), ("discount", "ds"), ("index", "lp"),
    ("item_brand", "br"), ("item_category", "ca"), ("item_category2", "c2"), ("item_category3", "c3"),
    ("item_category4", "c4"), ("item_category5", "c5"), ("item_list_id", "li"), ("item_list_name", "ln"),
    ("item_variant", "va"), ("location_id", "lo"), ("price", "pr"), ("quantity", "qt"), ("creative_name", "cn"),
    ("creative_slot", "cs"), ("promotion_id", "pi"), ("promotion_name", "pn"),
];

/// One item as `prN`: two-letter keys, custom parameters as `kN`/`vN` pairs, `~` between
/// fields (so a `~` in a value becomes a space).
fn encode_item(item: &Fields) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut custom = 0;
    let value = |out: &mut String, text: &str| {
        if text.contains('~') {
            out.push_str(&text.replace('~', " "));
        } else {
            out.push_str(text);
        }
    };
    for (key, node) in item.iter() {
        let Some(text) = scalar(node) else { continue };
        if !out.is_empty() {
            out.push('~');
        }
        match ITEM_KEYS.iter().find(|(k, _)| *k == key) {
            Some((_, code)) => out.push_str(code),
            None => {
                let _ = write!(out, "k{custom}{key}~v{custom}");
                custom += 1;
            }
        }
        value(&mut out, &text);
    }
    out
}

/// Google's reserved event names (§6).
const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure", "app_clear_data",
    "app_exception", "app_install", "app_remove", "app_store_refund", "app_update", "app_upgrade", "dynamic_link_app_open",
    "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign", "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss", "firebase_in_app_message_impression", "first_open", "first_visit",
    "notification_dismiss", "notification_foreground", "notification_open", "notification_receive", "notification_send",
    "os_update", "session_start", "user_engagement",
];
const RESERVED_PREFIXES: &[&str] = &["_", "firebase_", "ga_", "google_", "gtag."];

/// A valid MP name: ≤ `max` characters, letters/digits/`_`, starting with a letter, no reserved prefix.
pub fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn truncate(v: &Value, max: usize) -> Value {
    match v {
        Value::String(s) if s.chars().count() > max => Value::String(s.chars().take(max).collect()),
        other => other.clone(),
    }
}

/// The Measurement Protocol body for one event, within Google's limits.
pub fn mp_body(event: &Map<String, Value>) -> Result<Value, Error> {
    let name = event.get("event_name").and_then(Value::as_str).unwrap_or("");
    if !valid_name(name, 40) || RESERVED_EVENTS.contains(&name) {
        return Err(Error::invalid(format!("event name {name:?} is not accepted by the Measurement Protocol")));
    }
    let client_id = event.get("client_id").and_then(Value::as_str).ok_or_else(|| Error::invalid("event has no client_id"))?;
    let mut params = Map::new();
    for (from, to) in [("ga_session_id", "session_id"), ("engagement_time_msec", "engagement_time_msec")] {
        if let Some(v) = event.get(from) {
            params.insert(to.into(), v.clone());
        }
    }
    for (key, value) in event {
        if params.len() >= 25 {
            break;
        }
        let exempt = MAPPED.iter().any(|(k, _)| k == key) && !matches!(key.as_str(), "currency" | "page_location" | "page_title" | "page_referrer");
        if exempt || NOT_FORWARDED.contains(&key.as_str()) || key.starts_with("x-") || !valid_name(key, 40) {
            continue;
        }
        if value.is_string() || value.is_number() || value.is_boolean() {
            params.insert(key.clone(), truncate(value, 100));
        }
    }
    if let Some(items) = event.get("items").filter(|i| i.is_array()) {
        params.insert("items".into(), items.clone());
    }
    let mut body = json!({ "client_id": client_id, "events": [{ "name": name, "params": params }] });
    if let Some(uid) = event.get("user_id").and_then(Value::as_str) {
        body["user_id"] = json!(uid);
    }
    if let Some(ip) = event.get("ip_override").and_then(Value::as_str) {
        body["ip_override"] = json!(ip);
    }
    if let Some(ua) = event.get("user_agent").and_then(Value::as_str) {
        body["user_agent"] = json!(ua);
    }
    if let Some(Value::Object(props)) = event.get("x-ga-mp2-user_properties") {
        let props: Map<String, Value> = props
            .iter()
            .filter(|(k, _)| valid_name(k, 24))
            .take(25)
            .map(|(k, v)| (k.clone(), json!({ "value": truncate(v, 36) })))
            .collect();
        if !props.is_empty() {
            body["user_properties"] = Value::Object(props);
        }
    }
    if let Some(consent) = event.get("x-ga-mp2-consent") {
        body["consent"] = consent.clone();
    }
    Ok(body)
}

sluice_sdk::export_tag!(Ga4Tag);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{HttpResponse, PermissionSet};

    fn corpus_query(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/ga4").join(file);
        let text = std::fs::read_to_string(path).expect("corpus");
        let line = text.lines().find(|l| l.contains("v=2")).expect("hit").to_string();
        line.split_once('?').map_or(line.clone(), |(_, q)| q.to_string())
    }

    #[test]
    fn an_item_is_two_letter_keys_then_custom_pairs_with_tildes_in_values_made_spaces() {
        let item: Fields = serde_json::from_str(r#"{"item_id":"SKU~1","item_name":"Tee","color":"red","price":9.5,"size":"M","nested":{"a":1}}"#).expect("json");
        assert_eq!(encode_item(&item), "idSKU 1~nmTee~k0color~v0red~pr9.5~k1size~v1M");
    }

    #[test]
    fn web_hits_round_trip_through_the_ga4_client() {
        for file in ["ga4_01_page_view_granted_default_sst.txt", "ga4_03_add_to_cart_items.txt", "ga4_12_purchase_items_sgtm_custom_path.txt"] {
            let mut original = ga4_client::hit::parse(&corpus_query(file), b"").expect("parses").remove(0);
            let fields = Fields::from(original.clone());
            let encoded = web_hit(&fields, original["x-ga-measurement_id"].as_str().expect("tid")).expect("encodes");
            let again = ga4_client::hit::parse(&encoded, b"").expect("re-parses").remove(0);
            // user_data never goes to GA4; everything else survives the trip.
            original.remove("user_data");
            assert_eq!(Value::Object(again), Value::Object(original), "{file}");
        }
    }

    /// The batched capture `ga4_17`: its query string and its CRLF-separated body.
    fn corpus_batched() -> (String, String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/ga4/ga4_17_batched_post_scroll_page_view.txt");
        let text = std::fs::read_to_string(path).expect("corpus");
        let url = text.split("curl '").nth(1).and_then(|r| r.split('\'').next()).expect("url");
        let body = text.split("--data-raw $'").nth(1).and_then(|r| r.split('\'').next()).expect("body");
        (url.split_once('?').expect("query").1.to_string(), body.replace("\\r\\n", "\r\n"))
    }

    /// Queues each event as the host does, then delivers them in one batch.
    fn deliver_all(events: Vec<Value>, stubs: Vec<Result<HttpResponse, Error>>) -> (MockHost, sluice_sdk::mock::DeliveryReport) {
        let mut m = mock(json!({})).stub_sequence("https://region1.google-analytics.com/", stubs);
        for e in events {
            m = m.event(e);
            m.run_tag::<Ga4Tag>().expect("queued");
        }
        let report = m.deliver_queued::<Ga4Tag>();
        assert_eq!(report.batches.len(), 1, "one deliver call");
        (m, report)
    }

    #[test]
    fn a_batched_browser_hit_goes_back_as_one_request_that_reads_as_its_events() {
        let (query, body) = corpus_batched();
        let originals = ga4_client::hit::parse(&query, body.as_bytes()).expect("parses");
        assert_eq!(originals.len(), 2);
        let (m, report) = deliver_all(originals.iter().cloned().map(Value::Object).collect(), vec![Ok(HttpResponse::new(204, ""))]);
        assert_eq!(report.delivered.len(), 2, "{report:?}");
        assert_eq!(m.sent().len(), 1, "one request, as gtag sent it");
        let sent = &m.sent()[0];
        let (sent_query, lines) = (sent.url.split_once('?').expect("query").1, String::from_utf8_lossy(&sent.body));
        assert_eq!(lines.split("\r\n").count(), 2, "a line per event, CRLF between: {lines}");
        assert!(lines.split("\r\n").all(|l| l.starts_with("en=")), "{lines}");
        assert!(sent_query.contains("cid=2012860115.1777104652") && sent_query.contains("dl=https") && !sent_query.contains("en="), "{sent_query}");
        assert!(sent.headers.contains(&("content-type".into(), "text/plain;charset=UTF-8".into())));
        let again = ga4_client::hit::parse(sent_query, &sent.body).expect("Google reads it as gtag's");
        assert_eq!(again, originals, "each event arrives as it was queued");
    }

    #[test]
    fn events_of_different_hits_go_apart_and_a_hits_answer_is_each_of_its_events() {
        let event = |name: &str, s: Option<u32>| {
            let mut e = json!({"event_name": name, "client_id": "1.2", "x-ga-measurement_id": "G-ABC", "ga_session_id": "17"});
            if let Some(s) = s {
                e["x-ga-page_id"] = json!(1_777_284_853_404u64);
                e["x-ga-request_count"] = json!(s);
            }
            e
        };
        // Hit 3 (two events), hit 4, then two events with no page load or hit counter: alone.
        let events = vec![event("scroll", Some(3)), event("page_view", Some(3)), event("click", Some(4)), event("a", None), event("b", None)];
        let answers = vec![Ok(HttpResponse::new(503, "")), Ok(HttpResponse::new(204, "")), Ok(HttpResponse::new(204, "")), Ok(HttpResponse::new(204, ""))];
        let (m, report) = deliver_all(events, answers);
        assert_eq!(m.sent().len(), 4, "{:?}", m.sent().iter().map(|r| &r.url).collect::<Vec<_>>());
        assert!(!m.sent()[0].body.is_empty() && m.sent()[1..].iter().all(|r| r.body.is_empty()), "only hit 3 has body lines");
        assert_eq!(report.retry.len(), 2, "Google's 503 for hit 3 is both its events': {report:?}");
        assert_eq!(report.delivered.len(), 3, "{report:?}");
    }

    fn mock(event: Value) -> MockHost {
        MockHost::new()
            .event(event)
            .grant(PermissionSet { event_data: vec!["*".into()], outbound: vec!["https://region1.google-analytics.com/".into()], ..Default::default() })
            .param("endpoint", "https://region1.google-analytics.com")
            .consent_all_granted()
            .stub("https://region1.google-analytics.com/", HttpResponse::new(204, ""))
    }

    /// Queues the mock's event as the host does, then delivers it.
    fn deliver(m: &mut MockHost) -> sluice_sdk::mock::DeliveryReport {
        m.run_tag::<Ga4Tag>().expect("queued");
        assert!(m.sent().is_empty(), "nothing is sent from the visitor's request");
        m.deliver_queued::<Ga4Tag>()
    }

    #[test]
    fn gtag_mode_carries_ip_and_user_agent() {
        let mut m = mock(json!({"event_name": "page_view", "client_id": "1.2", "x-ga-measurement_id": "G-ABC",
                                "ip_override": "203.0.113.4", "user_agent": "UA/9", "user_data": {"email_address": "a@b.c"}}));
        assert_eq!(deliver(&mut m).delivered.len(), 1);
        let sent = &m.sent()[0];
        assert!(sent.url.starts_with("https://region1.google-analytics.com/g/collect?v=2&tid=G-ABC&en=page_view&cid=1.2"), "{}", sent.url);
        assert!(sent.url.contains("_uip=203.0.113.4"));
        assert!(!sent.url.contains("a%40b.c") && !sent.url.contains("user_data"));
        assert!(sent.headers.contains(&("user-agent".into(), "UA/9".into())));
    }

    #[test]
    fn mp_mode_respects_googles_limits() {
        let mut event = json!({"event_name": "purchase", "client_id": "1.2", "x-ga-measurement_id": "G-ABC", "currency": "EUR", "value": 30,
            "ga_session_id": "1700000000", "transaction_id": "T1", "long_text": "x".repeat(150), "bad-name": "v", "_internal": 1,
            "x-ga-mp2-user_properties": {"tier": "gold", "a_very_long_user_property_name": "v"}});
        for i in 0..30 {
            event[format!("p{i:02}")] = json!(i);
        }
        let mut m = mock(event).param("mode", "mp").secret_param("api_secret", "shh");
        assert_eq!(deliver(&mut m).delivered.len(), 1);
        let sent = &m.sent()[0];
        assert_eq!(sent.url, "https://region1.google-analytics.com/mp/collect?measurement_id=G-ABC&api_secret=shh");
        let body: Value = sluice_sdk::json::from_slice(&sent.body).expect("json");
        let params = body["events"][0]["params"].as_object().expect("params");
        assert_eq!(body["events"][0]["name"], "purchase");
        assert!(params.len() <= 25, "{} params", params.len());
        assert_eq!(params["session_id"], "1700000000");
        assert_eq!(params["currency"], "EUR");
        assert_eq!(params["long_text"].as_str().map(str::len), Some(100));
        assert!(!params.contains_key("bad-name") && !params.contains_key("_internal"));
        assert_eq!(body["user_properties"], json!({"tier": {"value": "gold"}}));
    }

    #[test]
    fn reserved_or_invalid_event_names_are_not_sent() {
        for name in ["session_start", "first_visit", "1abc", "has space", &"n".repeat(41)] {
            let mut m = mock(json!({"event_name": name, "client_id": "1.2", "x-ga-measurement_id": "G-ABC"})).param("mode", "mp").secret_param("api_secret", "s");
            let report = deliver(&mut m);
            assert!(report.dead.len() == 1 && report.dead[0].1.contains("not accepted by the Measurement Protocol"), "{name}: {report:?}");
            assert!(m.sent().is_empty());
        }
    }

    #[test]
    fn mp_mode_sends_one_visitors_events_together_and_others_apart() {
        let event = |cid: &str, name: &str| json!({"event_name": name, "client_id": cid, "x-ga-measurement_id": "G-ABC"});
        let mut m = mock(event("1.1", "page_view")).param("mode", "mp").secret_param("api_secret", "shh");
        for e in [event("1.1", "page_view"), event("1.1", "add_to_cart"), event("2.2", "page_view"), event("1.1", "purchase")] {
            m = m.event(e);
            m.run_tag::<Ga4Tag>().expect("queued");
        }
        let report = m.deliver_queued::<Ga4Tag>();
        assert_eq!(report.delivered.len(), 4);
        assert_eq!(report.batches.len(), 1, "one deliver call");
        let bodies: Vec<Value> = m.sent().iter().map(|r| sluice_sdk::json::from_slice(&r.body).expect("json")).collect();
        let names: Vec<(String, usize)> = bodies.iter().map(|b| (b["client_id"].as_str().unwrap_or("").to_string(), b["events"].as_array().map_or(0, Vec::len))).collect();
        assert_eq!(names, [("1.1".to_string(), 2), ("2.2".into(), 1), ("1.1".into(), 1)], "runs of one visitor, in order");
    }

    #[test]
    fn an_outage_retries_only_the_events_google_did_not_get() {
        let mut m = mock(json!({"event_name": "page_view", "client_id": "1.2", "x-ga-measurement_id": "G-ABC"}))
            .stub_sequence("https://region1.google-analytics.com/", vec![Ok(HttpResponse::new(503, "")), Ok(HttpResponse::new(204, ""))]);
        assert_eq!(deliver(&mut m).retry.len(), 1);
        assert_eq!(m.deliver_queued::<Ga4Tag>().delivered.len(), 1);
        assert_eq!(m.sent().len(), 2);
    }
}
