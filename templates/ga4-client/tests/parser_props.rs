//! Property tests for the GA4 client's parsers (`hit::parse`, `hit::brands`, `mp::parse`):
//! whatever a visitor or a server sends, they return a value or an `Invalid` reason, never a
//! panic; what they return keeps the shape tags rely on; and the query decoder agrees with the
//! standard one. Case counts are proptest's default (256);
//! `PROPTEST_CASES=100000 cargo test -p ga4-client --test parser_props` searches harder.

use ga4_client::{hit, mp};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Multi-byte and otherwise awkward characters (see `sdk/tests/identity_props.rs`).
const TRICKY: &[&str] = &["é", "e\u{301}", "ß", "١", "𝟘", "€", "정", "😀", "👩\u{200d}💻", "İ", "\u{0}", "\u{feff}", "\r", "\n", "\t", " "];

/// Percent-escapes, valid and not: a lone `%`, `%z`, `%zz`, `%E9` (Latin-1 é, invalid UTF-8
/// alone), a truncated UTF-8 sequence, a full one, an encoded `&`/`=`/`%`/newline, `+`.
const ESCAPES: &[&str] = &["%", "%2", "%zz", "%z", "%E9", "%C3", "%C3%A9", "%F0%9F%98%80", "%26", "%3D", "%25", "%0A", "%0D%0A", "%00", "+", "%2B", "%7C", "%3B"];

/// Keys the hit parser maps, and prefixes it treats specially.
const KEYS: &[&str] = &[
    "v", "tid", "en", "cid", "uid", "dl", "dt", "dr", "ul", "sr", "cu", "sid", "sct", "_et", "gtm", "_p", "_s", "tfd", "gcs", "gcd", "gcu",
    "gcut", "npa", "dma", "dma_cps", "lps", "ur", "pscdl", "uaa", "uab", "uafvl", "uamb", "uam", "uap", "uapv", "uaw", "ep.value",
    "ep.user_data.email", "ep.user_data.address.city", "ep.user_data.", "ep.user_data..x", "epn.value", "up.tier", "upn.age", "pr1", "pr2",
    "pr0", "pr4294967295", "pr4294967296", "sst.rnd", "_fv", "_", "ep.", "epn.", "x", "",
];

/// Values that steer the parser: `v=2`, numbers (some not finite, some huge), item encodings
/// (`~`-separated two-letter fields, `k0`/`v0` custom parameters), a version list.
const VALUES: &[&str] = &[
    "2", "1", "0", "G-TEST", "page_view", "purchase", "NaN", "inf", "-inf", "1e309", "-0", "9223372036854775808", "1.5", "", "id1~nmShirt~pr9.99~qt2",
    "k0color~v0red~kvariant~v9x", "~~~", "k", "v", "ké", "vé", "é", "éé~ék", "Chromium;116|Not%2520A;8|", "|;|", "G111", "13t3t3t2t5l1",
];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_.~-]{1,4}",
        2 => prop::sample::select(TRICKY).prop_map(str::to_string),
        2 => prop::sample::select(ESCAPES).prop_map(str::to_string),
        1 => prop::sample::select(&["&", "=", ";", "|", "~", "\""][..]).prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Arbitrary Unicode interleaved with escapes and separators.
fn mixed() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..8).prop_map(|p| p.concat())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => (prop::sample::select(&["ep.", "epn.", "up.", "upn.", "pr", "sst.", "_", "k", "ep.user_data."][..]), mixed()).prop_map(|(p, s)| format!("{p}{s}")),
        1 => mixed(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![2 => prop::sample::select(VALUES).prop_map(str::to_string), 2 => mixed(), 1 => "\\PC*"]
}

/// `k=v&k=v...` from arbitrary keys and values, sometimes with a bare key or a stray `&`.
fn params() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| format!("{k}={v}")),
        1 => key(),
        1 => Just(String::new()),
    ];
    (prop::collection::vec(pair, 0..12), any::<bool>()).prop_map(|(pairs, valid)| {
        let mut out = pairs.join("&");
        // Often make it a hit that gets past the first checks, so the event builder runs.
        if valid {
            out = format!("v=2&tid=G-TEST&en=page_view&{out}");
        }
        out
    })
}

/// A batched body: lines separated by `\n` or `\r\n`, some blank.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop::collection::vec(prop_oneof![4 => params(), 1 => Just(String::new()), 1 => mixed()], 0..5), any::<bool>())
            .prop_map(|(lines, crlf)| lines.join(if crlf { "\r\n" } else { "\n" }).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

fn non_empty_lines(body: &[u8]) -> usize {
    std::str::from_utf8(body).map_or(0, |b| b.split('\n').map(str::trim).filter(|l| !l.is_empty()).count())
}

/// The shape of an accepted hit's events.
fn check_events(body: &[u8], events: &[Map<String, Value>]) -> Result<(), TestCaseError> {
    prop_assert_eq!(events.len(), non_empty_lines(body).max(1), "one event per body line, or one for a query-only hit");
    for ev in events {
        // The protocol's `en` wins over `ep.event_name` / `epn.event_name`, so every accepted
        // event is named by a non-empty string.
        prop_assert!(ev.get("event_name").and_then(Value::as_str).is_some_and(|s| !s.is_empty()), "{:?}", ev.get("event_name"));
        if let Some(items) = ev.get("items") {
            prop_assert!(items.as_array().is_some_and(|i| i.iter().all(Value::is_object)), "items: {items:?}");
        }
        if let Some(hints) = ev.get("client_hints") {
            prop_assert!(hints.is_object());
        }
    }
    Ok(())
}

/// Arbitrary JSON with visitor text.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        mixed().prop_map(Value::String),
        "\\PC*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop_oneof![mixed(), prop::sample::select(&["value", "name", "params", "client_id", "event_name"][..]).prop_map(str::to_string)], inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One `events[]` entry: usually `{name, params}`, sometimes anything at all.
fn mp_event() -> impl Strategy<Value = Value> {
    let name = prop_oneof![4 => mixed().prop_map(Value::String), 1 => Just(json!("")), 1 => json()];
    let params = prop_oneof![3 => prop::collection::vec((key(), json()), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())), 1 => json()];
    prop_oneof![
        6 => (name, prop::option::of(params), prop::option::of(json())).prop_map(|(name, params, ts)| {
            let mut ev = json!({ "name": name });
            if let Some(p) = params { ev["params"] = p; }
            if let Some(ts) = ts { ev["timestamp_micros"] = ts; }
            ev
        }),
        1 => json(),
    ]
}

/// A Measurement Protocol body: an object with the request keys, arbitrary values.
fn mp_request() -> impl Strategy<Value = Value> {
    let client_id = prop_oneof![4 => mixed().prop_map(Value::String), 1 => json()];
    let shared = prop::collection::vec(
        (prop::sample::select(&["user_id", "user_data", "ip_override", "user_agent", "consent", "timestamp_micros", "user_location", "device", "user_properties", "app_instance_id", "api_secret"][..]), json()),
        0..5,
    );
    let props = prop::collection::vec((mixed(), prop_oneof![json(), json().prop_map(|v| json!({ "value": v }))]), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    (client_id, prop::collection::vec(mp_event(), 0..28), shared, prop::option::of(props)).prop_map(|(cid, events, shared, props)| {
        let mut req = json!({ "client_id": cid, "events": events });
        for (k, v) in shared {
            req[k] = v;
        }
        if let Some(p) = props {
            req["user_properties"] = p;
        }
        req
    })
}

proptest! {
    #[test]
    fn hit_parse_never_panics_on_arbitrary_text(query in "\\PC*", body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = hit::parse(&query, &body);
    }

    #[test]
    fn hit_parse_never_panics_on_any_string(query in any::<String>(), body in any::<String>()) {
        let _ = hit::parse(&query, body.as_bytes());
        let _ = hit::parse(&body, query.as_bytes());
    }

    /// Query strings and batched bodies built from arbitrary `k=v` pairs (arbitrary Unicode,
    /// valid and invalid percent-escapes): never a panic; an accepted hit has one event per
    /// body line, each with an `event_name`.
    #[test]
    fn hit_parse_structured(query in params(), body in body()) {
        if let Ok(events) = hit::parse(&query, &body) {
            check_events(&body, &events)?;
        }
    }

    /// Without a body, a query with `v=2`, a `tid` and an `en` is accepted, whatever follows.
    #[test]
    fn a_minimal_valid_hit_is_accepted_whatever_else_it_carries(rest in params()) {
        let query = format!("{rest}&v=2&tid=G-TEST&en=page_view");
        let events = hit::parse(&query, b"");
        prop_assert!(events.is_ok(), "{query:?}: {events:?}");
        if let Ok(events) = events {
            check_events(b"", &events)?;
        }
    }

    /// The client's own decoder reads a query as `form_urlencoded` (the URL standard's
    /// parser) does, pair for pair, whatever the text and its escapes.
    #[test]
    fn decode_agrees_with_form_urlencoded(query in prop_oneof![params(), mixed(), "\\PC*"]) {
        let ours: Vec<(String, String)> = hit::decode(&query).into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let standard: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        prop_assert_eq!(ours, standard);
    }

    #[test]
    fn brands_never_panics(header in prop_oneof!["\\PC*", any::<String>(), mixed()]) {
        for brand in hit::brands(&header) {
            prop_assert!(brand.get("brand").is_some_and(Value::is_string) && brand.get("version").is_some_and(Value::is_string));
        }
    }

    /// A well-formed `Sec-CH-UA` header (`"Brand";v="1", ...`) with arbitrary brand names
    /// (quotes aside) round-trips.
    #[test]
    fn brands_round_trips_well_formed_headers(entries in prop::collection::vec(("[^\"]*", prop::option::of("[^\"]*")), 0..5)) {
        let header = entries
            .iter()
            .map(|(b, v)| match v { Some(v) => format!("\"{b}\";v=\"{v}\""), None => format!("\"{b}\"") })
            .collect::<Vec<_>>()
            .join(", ");
        let expected: Vec<Value> = entries.iter().map(|(b, v)| json!({ "brand": b, "version": v.clone().unwrap_or_default() })).collect();
        prop_assert_eq!(hit::brands(&header), expected, "{:?}", header);
    }

    #[test]
    fn mp_parse_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256), id in prop::option::of("\\PC*")) {
        let parsed = mp::parse(&body, id.as_deref());
        if serde_json::from_slice::<Value>(&body).is_err() {
            prop_assert!(parsed.is_err());
        }
    }

    /// JSON bodies with arbitrary values: never a panic; an accepted request has 1 to 25 events,
    /// one per `events[]` entry, each named by its entry's non-empty `name`.
    #[test]
    fn mp_parse_structured(request in prop_oneof![4 => mp_request(), 1 => json()], id in prop::option::of(mixed()), pretty in any::<bool>()) {
        let body = if pretty { serde_json::to_vec_pretty(&request) } else { serde_json::to_vec(&request) };
        let body = body.map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Ok(events) = mp::parse(&body, id.as_deref()) {
            let entries = request["events"].as_array().cloned().unwrap_or_default();
            prop_assert!((1..=mp::MAX_EVENTS).contains(&events.len()));
            prop_assert_eq!(events.len(), entries.len());
            for (ev, entry) in events.iter().zip(&entries) {
                let name = ev.get("event_name").and_then(Value::as_str);
                prop_assert!(name.is_some_and(|n| !n.is_empty()));
                prop_assert_eq!(name, entry["name"].as_str());
            }
        }
    }
}
