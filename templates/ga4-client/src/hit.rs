//! GA4 web hits (`/g/collect`) → sGTM event data.
//!
//! A hit carries shared parameters in the query string and, for batched hits, one event per
//! body line (`\r\n` or `\n`); each line's parameters add to or override the query's for that
//! event. [`parse`] is a pure function from bytes to events: it never panics, and a hit that is
//! not valid (no `v=2`, no `tid`, an event without `en`) is rejected whole with a reason, so no
//! half-built event reaches a tag.
//!
//! The key mapping follows the event models sGTM's own GA4 client produces
//! (`shared/reference/domain.md` §4.3; `shared/corpus/eventmodel/`).

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

/// Why a hit was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// One decoded `key=value` pair. Borrowed from the hit unless it had to be unescaped (most
/// keys and many values do not), so parsing allocates little beyond the events themselves.
type Param<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The last value of `key` (later duplicates win, as in GA4).
fn get<'p>(params: &'p [Param<'_>], key: &str) -> Option<&'p str> {
    params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
}

/// Parses a hit's query string and body into events.
pub fn parse(query: &str, body: &[u8]) -> Result<Vec<Map<String, Value>>, Invalid> {
    let shared: Vec<Param> = decode(query.as_bytes());
    let body = std::str::from_utf8(body).map_err(|_| Invalid("body is not UTF-8".into()))?;
    let lines: Vec<&str> = body.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect();

    if get(&shared, "v") != Some("2") && !lines.iter().any(|l| get(&decode(l.as_bytes()), "v") == Some("2")) {
        return Err(Invalid("not a GA4 hit: protocol version v=2 is missing".into()));
    }

    let per_event: Vec<Vec<Param>> = if lines.is_empty() {
        vec![shared.clone()]
    } else {
        lines
            .iter()
            .map(|line| {
                let own = decode(line.as_bytes());
                if own.is_empty() || own.iter().all(|(k, _)| k.is_empty()) {
                    return Err(Invalid(format!("body line {line:?} is not a parameter list")));
                }
                let mut merged: Vec<Param> = shared.iter().filter(|(k, _)| !own.iter().any(|(o, _)| o == k)).cloned().collect();
                merged.extend(own);
                Ok(merged)
            })
            .collect::<Result<_, _>>()?
    };

    per_event
        .iter()
        .enumerate()
        .map(|(i, params)| {
            if get(params, "tid").is_none_or(str::is_empty) {
                return Err(Invalid("not a GA4 hit: measurement id tid is missing".into()));
            }
            if get(params, "en").is_none_or(str::is_empty) {
                return Err(Invalid(format!("event {i} has no event name (en)")));
            }
            Ok(event(params))
        })
        .collect()
}

fn decode(bytes: &[u8]) -> Vec<Param<'_>> {
    form_urlencoded::parse(bytes).collect()
}

/// Builds one event from its parameters (later duplicates win). The protocol's own parameters
/// win over custom ones: `ep.event_name=` cannot rename or blank the event, nor `ep.client_id`
/// replace the client id.
fn event(params: &[Param]) -> Map<String, Value> {
    let mut ev = Map::new();
    let mut custom = Map::new();
    let mut items: Vec<(u32, Map<String, Value>)> = Vec::new();
    let mut hints = Map::new();
    for (key, value) in params {
        let key = key.as_ref();
        let value = value.as_ref();
        match key {
            "en" => set(&mut ev, "event_name", text(value)),
            "cid" => set(&mut ev, "client_id", text(value)),
            "uid" => set(&mut ev, "user_id", text(value)),
            "dl" => set(&mut ev, "page_location", text(value)),
            "dt" => set(&mut ev, "page_title", text(value)),
            "dr" => set(&mut ev, "page_referrer", text(value)),
            "ul" => set(&mut ev, "language", text(value)),
            "sr" => set(&mut ev, "screen_resolution", text(value)),
            "cu" => set(&mut ev, "currency", text(value)),
            "sid" => set(&mut ev, "ga_session_id", text(value)),
            "sct" => set_number(&mut ev, "ga_session_number", value),
            "_et" => set_number(&mut ev, "engagement_time_msec", value),
            "v" => set(&mut ev, "x-ga-protocol_version", text(value)),
            "tid" => set(&mut ev, "x-ga-measurement_id", text(value)),
            "gtm" => set(&mut ev, "x-ga-gtm_version", text(value)),
            "_p" => set_number(&mut ev, "x-ga-page_id", value),
            "_s" => set_number(&mut ev, "x-ga-request_count", value),
            "tfd" => set_number(&mut ev, "x-ga-tfd", value),
            "gcs" | "gcd" | "gcu" | "gcut" | "npa" | "dma_cps" | "ur" | "pscdl" => {
                set(&mut ev, &format!("x-ga-{key}"), text(value))
            }
            "dma" => set(&mut ev, "x-ga-dma", Value::Bool(value == "1")),
            "lps" => set(&mut ev, "x-ga-lps", Value::Bool(value == "1")),
            "uaa" => set(&mut hints, "architecture", text(value)),
            "uab" => set(&mut hints, "bitness", text(value)),
            "uafvl" => set(&mut hints, "full_version_list", version_list(value)),
            "uamb" => set(&mut hints, "mobile", Value::Bool(value == "1")),
            "uam" => set(&mut hints, "model", text(value)),
            "uap" => set(&mut hints, "platform", text(value)),
            "uapv" => set(&mut hints, "platform_version", text(value)),
            "uaw" => set(&mut hints, "wow64", Value::Bool(value == "1")),
            _ => {
                if let Some(name) = key.strip_prefix("ep.") {
                    set_path(&mut custom, name, text(value));
                } else if let Some(name) = key.strip_prefix("epn.") {
                    set_path(&mut custom, name, number(value).unwrap_or_else(|| text(value)));
                } else if let Some(name) = key.strip_prefix("up.") {
                    user_property(&mut ev, name, text(value));
                } else if let Some(name) = key.strip_prefix("upn.") {
                    user_property(&mut ev, name, number(value).unwrap_or_else(|| text(value)));
                } else if let Some(n) = key.strip_prefix("pr").and_then(|n| n.parse::<u32>().ok()) {
                    items.retain(|(i, _)| *i != n);
                    items.push((n, item(value)));
                } else if let Some(name) = key.strip_prefix("sst.") {
                    object(&mut ev, "x-sst-system_properties").insert(name.to_string(), text(value));
                } else if let Some(name) = key.strip_prefix('_') {
                    object(&mut ev, "x-ga-system_properties").insert(name.to_string(), text(value));
                } else if !key.is_empty() {
                    set(&mut ev, &format!("x-ga-mp2-{key}"), text(value));
                }
            }
        }
    }
    if !hints.is_empty() {
        ev.insert("client_hints".into(), Value::Object(hints));
    }
    for (key, value) in custom {
        ev.entry(key).or_insert(value);
    }
    if !items.is_empty() {
        items.sort_by_key(|(n, _)| *n);
        ev.insert("items".into(), Value::Array(items.into_iter().map(|(_, i)| Value::Object(i)).collect()));
    }
    // Some sites send ecommerce values as `ep.value`; vendors need a number.
    if let Some(Value::String(s)) = ev.get("value")
        && let Some(n) = number(s)
    {
        ev.insert("value".into(), n);
    }
    ev
}

fn text(v: &str) -> Value {
    Value::String(v.to_string())
}

/// A finite number (`NaN`, empty and non-numeric text give `None`).
fn number(v: &str) -> Option<Value> {
    if let Ok(i) = v.parse::<i64>() {
        return Some(Value::Number(i.into()));
    }
    v.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number)
}

fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.insert(key.to_string(), value);
}

fn set_number(map: &mut Map<String, Value>, key: &str, value: &str) {
    if let Some(n) = number(value) {
        map.insert(key.to_string(), n);
    }
}

fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

/// `ep.user_data.address.city` nests under `user_data`, the event model's object; every other
/// event parameter is a top-level key named as sent.
fn set_path(ev: &mut Map<String, Value>, name: &str, value: Value) {
    match name.strip_prefix("user_data.") {
        Some(rest) if !rest.is_empty() => {
            let mut parts: Vec<&str> = rest.split('.').filter(|p| !p.is_empty()).collect();
            let Some(last) = parts.pop() else { return };
            let mut node = object(ev, "user_data");
            for part in parts {
                node = object(node, part);
            }
            node.insert(last.to_string(), value);
        }
        _ => set(ev, name, value),
    }
}

fn user_property(ev: &mut Map<String, Value>, name: &str, value: Value) {
    object(ev, "x-ga-mp2-user_properties").insert(name.to_string(), value);
}

/// `Brand;version|Brand;version`, whose brand names arrive percent-encoded a second time.
fn version_list(v: &str) -> Value {
    Value::Array(
        v.split('|')
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (brand, version) = entry.split_once(';').unwrap_or((entry, ""));
                let mut m = Map::new();
                m.insert("brand".into(), text(&percent_decode(brand)));
                m.insert("version".into(), text(&percent_decode(version)));
                Value::Object(m)
            })
            .collect(),
    )
}

/// The `Sec-CH-UA` header (`"Chromium";v="116", "Not)A;Brand";v="24"`) as
/// `[{brand, version}]`. Brand names may contain `;` and `,` inside their quotes.
pub fn brands(header: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = header;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let brand = &after[..end];
        rest = &after[end + 1..];
        let version = rest
            .split_once("v=\"")
            .filter(|(before, _)| !before.contains('"'))
            .and_then(|(_, v)| v.split_once('"'))
            .map(|(v, tail)| {
                rest = tail;
                v
            })
            .unwrap_or("");
        let mut m = Map::new();
        m.insert("brand".into(), text(brand));
        m.insert("version".into(), text(version));
        out.push(Value::Object(m));
    }
    out
}

fn percent_decode(s: &str) -> String {
    // `form_urlencoded` would also turn `+` into a space, which is right for these values too.
    form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// One `prN` item: `~`-separated fields, each a two-letter key followed by its value;
/// `kN`/`vN` pairs are custom item parameters.
fn item(value: &str) -> Map<String, Value> {
    let mut item = Map::new();
    let mut custom_keys: Vec<(String, String)> = Vec::new();
    let mut custom_values: Vec<(String, String)> = Vec::new();
    for field in value.split('~') {
        let Some((key, val)) = field.char_indices().nth(2).map(|(i, _)| field.split_at(i)).or_else(|| (field.len() == 2).then_some((field, ""))) else {
            continue;
        };
        let name = match key {
            "id" => "item_id",
            "nm" => "item_name",
            "af" => "affiliation",
            "cp" => "coupon",
            "br" => "item_brand",
            "ca" => "item_category",
            "c2" => "item_category2",
            "c3" => "item_category3",
            "c4" => "item_category4",
            "c5" => "item_category5",
            "li" => "item_list_id",
            "ln" => "item_list_name",
            "va" => "item_variant",
            "lo" => "location_id",
            "cn" => "creative_name",
            "cs" => "creative_slot",
            "pi" => "promotion_id",
            "pn" => "promotion_name",
            "pr" | "qt" | "ds" | "lp" => {
                let name = match key {
                    "pr" => "price",
                    "qt" => "quantity",
                    "ds" => "discount",
                    _ => "index",
                };
                item.insert(name.into(), number(val).unwrap_or_else(|| text(val)));
                continue;
            }
            _ if key.starts_with('k') => {
                // `k0currency` → index "0", name "currency"; lenient about a missing index
                // (`kvariant_name` is seen in real hits and pairs with `v0`).
                let rest = &field[1..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                let (index, name) = rest.split_at(digits);
                custom_keys.push((if index.is_empty() { "0".into() } else { index.into() }, name.into()));
                continue;
            }
            _ if key.starts_with('v') => {
                let rest = &field[1..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                let (index, val) = rest.split_at(digits);
                custom_values.push((index.into(), val.into()));
                continue;
            }
            other => other,
        };
        item.insert(name.into(), text(val));
    }
    for (index, name) in custom_keys {
        if let Some((_, val)) = custom_values.iter().find(|(i, _)| *i == index) {
            item.insert(name, text(val));
        }
    }
    item
}
