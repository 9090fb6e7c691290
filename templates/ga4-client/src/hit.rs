//! GA4 web hits (`/g/collect`) → sGTM event data.
//!
//! A hit carries shared parameters in the query string and, for batched hits, one event per
//! body line (`\r\n` or `\n`); each line's parameters add to or override the query's for that
//! event. [`events`] is a pure function from text to events: it never panics, and a hit that is
//! not valid (no `v=2`, no `tid`, an event without `en`) is rejected whole with a reason, so no
//! half-built event reaches a tag.
//!
//! The key mapping follows the event models sGTM's own GA4 client produces
//! (`shared/reference/domain.md` §4.3; `shared/corpus/eventmodel/`).
//!
//! This runs for every hit, in the visitor's request, so it is written for speed: parameters
//! are decoded only when they carry an escape, the event borrows the hit's text wherever it
//! can ([`sluice_sdk::fields`]), and it is written straight to the JSON the host receives
//! ([`Fields::to_json`]) instead of being built as a `serde_json` map and serialised from it
//! (measured: BENCHMARKS.md).

use std::borrow::Cow;

use serde_json::{Map, Number, Value};
pub use sluice_sdk::fields::{Fields, Node};

/// Why a hit was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// One decoded `key=value` pair, borrowed from the hit unless it had to be unescaped.
pub type Param<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The last value of `key` (later duplicates win, as in GA4).
fn get<'p>(params: &'p [Param<'_>], key: &str) -> Option<&'p str> {
    params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
}

/// Parses a hit's query string and body into events.
pub fn events<'a>(query: &'a str, body: &'a [u8]) -> Result<Vec<Fields<'a>>, Invalid> {
    let shared: Vec<Param> = decode(query);
    let body = std::str::from_utf8(body).map_err(|_| Invalid("body is not UTF-8".into()))?;
    let lines: Vec<&str> = body.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect();

    if get(&shared, "v") != Some("2") && !lines.iter().any(|l| get(&decode(l), "v") == Some("2")) {
        return Err(Invalid("not a GA4 hit: protocol version v=2 is missing".into()));
    }

    let per_event: Vec<Vec<Param>> = if lines.is_empty() {
        vec![shared]
    } else {
        lines
            .iter()
            .map(|line| {
                let own = decode(line);
                if own.is_empty() || own.iter().all(|(k, _)| k.is_empty()) {
                    return Err(Invalid(format!("body line {line:?} is not a parameter list")));
                }
                // The line's own keys as a set: a line and a query of thousands of keys each must
                // not cost their product.
                let own_keys: std::collections::BTreeSet<&str> = own.iter().map(|(k, _)| k.as_ref()).collect();
                let mut merged: Vec<Param> = shared.iter().filter(|(k, _)| !own_keys.contains(k.as_ref())).cloned().collect();
                merged.extend(own);
                Ok(merged)
            })
            .collect::<Result<_, _>>()?
    };

    for (i, params) in per_event.iter().enumerate() {
        if get(params, "tid").is_none_or(str::is_empty) {
            return Err(Invalid("not a GA4 hit: measurement id tid is missing".into()));
        }
        if get(params, "en").is_none_or(str::is_empty) {
            return Err(Invalid(format!("event {i} has no event name (en)")));
        }
    }
    Ok(per_event.into_iter().map(event).collect())
}

/// [`events`] as `serde_json` maps, as the host receives them (for tests and tools).
pub fn parse(query: &str, body: &[u8]) -> Result<Vec<Map<String, Value>>, Invalid> {
    Ok(events(query, body)?.iter().map(Fields::to_map).collect())
}

/// `application/x-www-form-urlencoded` pairs, as `form_urlencoded::parse` decodes them (`&`
/// separates, empty pairs are skipped, the first `=` splits, `+` is a space, `%XX` a byte, an
/// invalid escape stays as written, bytes that are not UTF-8 become U+FFFD), borrowing what has
/// nothing to decode.
pub fn decode(input: &str) -> Vec<Param<'_>> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(key), unescape(value))
        })
        .collect()
}

fn unescape(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let rest = bytes.as_slice();
                match (hex(rest.first()), hex(rest.get(1))) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        bytes.nth(1);
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// `part`, a slice of `whole`'s text, with `whole`'s lifetime when `whole` borrows the hit.
fn rebase<'a>(whole: &Cow<'a, str>, part: &str) -> Cow<'a, str> {
    if let Cow::Borrowed(text) = whole {
        let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        if let Some(slice) = text.get(start..start.wrapping_add(part.len()))
            && std::ptr::eq(slice.as_ptr(), part.as_ptr())
        {
            return Cow::Borrowed(slice);
        }
    }
    Cow::Owned(part.to_owned())
}

/// Builds one event from its parameters (later duplicates win). The protocol's own parameters
/// win over custom ones: `ep.event_name=` cannot rename or blank the event, nor `ep.client_id`
/// replace the client id.
fn event(params: Vec<Param<'_>>) -> Fields<'_> {
    let mut ev = Fields::with_capacity(params.len() + 4);
    let mut custom = Fields::default();
    // By index: a later `prN` replaces an earlier one, and they come out in index order.
    let mut items: std::collections::BTreeMap<u32, Fields> = std::collections::BTreeMap::new();
    let mut hints = Fields::default();
    for (key, value) in params {
        let text = || Node::Text(value.clone());
        match key.as_ref() {
            "en" => ev.insert("event_name", text()),
            "cid" => ev.insert("client_id", text()),
            "uid" => ev.insert("user_id", text()),
            "dl" => ev.insert("page_location", text()),
            "dt" => ev.insert("page_title", text()),
            "dr" => ev.insert("page_referrer", text()),
            "ul" => ev.insert("language", text()),
            "sr" => ev.insert("screen_resolution", text()),
            "cu" => ev.insert("currency", text()),
            "sid" => ev.insert("ga_session_id", text()),
            "sct" => set_number(&mut ev, "ga_session_number", &value),
            "_et" => set_number(&mut ev, "engagement_time_msec", &value),
            "v" => ev.insert("x-ga-protocol_version", text()),
            "tid" => ev.insert("x-ga-measurement_id", text()),
            "gtm" => ev.insert("x-ga-gtm_version", text()),
            "_p" => set_number(&mut ev, "x-ga-page_id", &value),
            "_s" => set_number(&mut ev, "x-ga-request_count", &value),
            "tfd" => set_number(&mut ev, "x-ga-tfd", &value),
            "gcs" | "gcd" | "gcu" | "gcut" | "npa" | "dma_cps" | "ur" | "pscdl" => ev.insert(format!("x-ga-{key}"), text()),
            "dma" => ev.insert("x-ga-dma", Node::Bool(value == "1")),
            "lps" => ev.insert("x-ga-lps", Node::Bool(value == "1")),
            "uaa" => hints.insert("architecture", text()),
            "uab" => hints.insert("bitness", text()),
            "uafvl" => hints.insert("full_version_list", version_list(&value)),
            "uamb" => hints.insert("mobile", Node::Bool(value == "1")),
            "uam" => hints.insert("model", text()),
            "uap" => hints.insert("platform", text()),
            "uapv" => hints.insert("platform_version", text()),
            "uaw" => hints.insert("wow64", Node::Bool(value == "1")),
            k => {
                if let Some(name) = k.strip_prefix("ep.") {
                    set_path(&mut custom, rebase(&key, name), text());
                } else if let Some(name) = k.strip_prefix("epn.") {
                    let node = number(&value).map_or_else(text, Node::Number);
                    set_path(&mut custom, rebase(&key, name), node);
                } else if let Some(name) = k.strip_prefix("up.") {
                    ev.object("x-ga-mp2-user_properties").insert(rebase(&key, name), text());
                } else if let Some(name) = k.strip_prefix("upn.") {
                    let node = number(&value).map_or_else(text, Node::Number);
                    ev.object("x-ga-mp2-user_properties").insert(rebase(&key, name), node);
                } else if let Some(n) = k.strip_prefix("pr").and_then(|n| n.parse::<u32>().ok()) {
                    let fields = match &value {
                        Cow::Borrowed(v) => item(v),
                        Cow::Owned(v) => item(v).into_owned(),
                    };
                    items.insert(n, fields);
                } else if let Some(name) = k.strip_prefix("sst.") {
                    ev.object("x-sst-system_properties").insert(rebase(&key, name), text());
                } else if let Some(name) = k.strip_prefix('_') {
                    ev.object("x-ga-system_properties").insert(rebase(&key, name), text());
                } else if !k.is_empty() {
                    ev.insert(format!("x-ga-mp2-{k}"), text());
                }
                None
            }
        };
    }
    if !hints.is_empty() {
        ev.insert("client_hints", Node::Object(hints));
    }
    for (key, value) in custom {
        ev.insert_if_absent(key, value);
    }
    if !items.is_empty() {
        ev.insert("items", Node::Array(items.into_values().map(Node::Object).collect()));
    }
    // Some sites send ecommerce values as `ep.value`; vendors need a number.
    if let Some(Node::Text(s)) = ev.get("value")
        && let Some(n) = number(s)
    {
        ev.insert("value", Node::Number(n));
    }
    ev
}

/// A finite number (`NaN`, empty and non-numeric text give `None`).
fn number(v: &str) -> Option<Number> {
    if let Ok(i) = v.parse::<i64>() {
        return Some(i.into());
    }
    v.parse::<f64>().ok().and_then(Number::from_f64)
}

fn set_number<'a>(ev: &mut Fields<'a>, key: &'static str, value: &str) -> Option<Node<'a>> {
    ev.insert(key, Node::Number(number(value)?))
}

/// `ep.user_data.address.city` nests under `user_data`, the event model's object; every other
/// event parameter is a top-level key named as sent.
fn set_path<'a>(ev: &mut Fields<'a>, name: Cow<'a, str>, value: Node<'a>) {
    match name.strip_prefix("user_data.") {
        Some(rest) if !rest.is_empty() => {
            let mut parts: Vec<Cow<'a, str>> = rest.split('.').filter(|p| !p.is_empty()).map(|p| rebase(&name, p)).collect();
            let Some(last) = parts.pop() else { return };
            let mut node = ev.object("user_data");
            for part in parts {
                node = node.object(part);
            }
            node.insert(last, value);
        }
        _ => {
            ev.insert(name, value);
        }
    }
}

/// `Brand;version|Brand;version`, whose brand names arrive percent-encoded a second time.
fn version_list(v: &str) -> Node<'static> {
    Node::Array(
        v.split('|')
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (brand, version) = entry.split_once(';').unwrap_or((entry, ""));
                let mut m = Fields::default();
                m.insert("brand", Node::Text(Cow::Owned(unescape(brand).into_owned())));
                m.insert("version", Node::Text(Cow::Owned(unescape(version).into_owned())));
                Node::Object(m)
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
        m.insert("brand".into(), Value::String(brand.into()));
        m.insert("version".into(), Value::String(version.into()));
        out.push(Value::Object(m));
    }
    out
}

/// One `prN` item: `~`-separated fields, each a two-letter key followed by its value;
/// `kN`/`vN` pairs are custom item parameters.
fn item(value: &str) -> Fields<'_> {
    let mut item = Fields::default();
    let mut custom_keys: Vec<(&str, &str)> = Vec::new();
    let mut custom_values: Vec<(&str, &str)> = Vec::new();
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
                item.insert(name, number(val).map_or_else(|| Node::Text(Cow::Borrowed(val)), Node::Number));
                continue;
            }
            _ if let Some(rest) = field.strip_prefix('k') => {
                // `k0currency` → index "0", name "currency"; lenient about a missing index
                // (`kvariant_name` is seen in real hits and pairs with `v0`).
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                let (index, name) = rest.split_at(digits);
                custom_keys.push((if index.is_empty() { "0" } else { index }, name));
                continue;
            }
            _ if let Some(rest) = field.strip_prefix('v') => {
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                custom_values.push(rest.split_at(digits));
                continue;
            }
            other => other,
        };
        item.insert(name, Node::Text(Cow::Borrowed(val)));
    }
    // Each index's first value (reversed, so the first is inserted last and stays).
    let values: std::collections::BTreeMap<&str, &str> = custom_values.into_iter().rev().collect();
    for (index, name) in custom_keys {
        if let Some(val) = values.get(index) {
            item.insert(name, Node::Text(Cow::Borrowed(val)));
        }
    }
    item
}
