//! Small readers for event data and URLs that templates keep needing.

use serde_json::{Map, Value};

/// The non-empty string at a dotted path (`user_data.address.city`) of an event object.
/// Paths follow the host's event-data rules (`items.0.item_id` indexes arrays).
pub fn str_at<'a>(event: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    let (first, rest) = path.split_once('.').map_or((path, None), |(f, r)| (f, Some(r)));
    let value = event.get(first)?;
    let value = match rest {
        Some(rest) => sluice_manifest::event_value(value, rest)?,
        None => value,
    };
    value.as_str().filter(|s| !s.is_empty())
}

/// The top-level `keys` of an event object, as [`crate::Event::select`] fetches them from the
/// host. A tag that selects its keys can check in a unit test that its payload builder reads
/// nothing else: the payload built from `select(full, KEYS)` must equal the one built from `full`.
pub fn select(event: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| Some(((*k).to_string(), event.get(*k)?.clone()))).collect()
}

/// The top-level `keys` of a JSON object given as text, parsed; the other keys' values are
/// skipped, not built. What [`crate::Item::json_keys`] does: a tag that reads a few keys of a
/// large event in `deliver` parses only those (building every key of every item into a map was
/// most of Meta's and TikTok's `deliver`). Text that is not a JSON object is an error.
pub fn select_json(text: &str, keys: &[&str]) -> Result<Map<String, Value>, serde_json::Error> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    use crate::fields::Text;

    struct Selecting<'k>(&'k [&'k str]);
    impl<'de> Visitor<'de> for Selecting<'_> {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                if self.0.contains(&key.as_ref()) {
                    out.insert(key.into_owned(), map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let selected = (&mut de).deserialize_map(Selecting(keys))?;
    de.end()?;
    Ok(selected)
}

/// The percent-decoded value of the first query parameter `name` in `url`; `None` when absent
/// or empty. The fragment is ignored.
/// (The host reads click ids for declared id cookies with the same rule.)
pub fn url_param(url: &str, name: &str) -> Option<String> {
    sluice_manifest::url_param(url, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selecting_keys_from_json_text_keeps_exactly_those() {
        let text = r#"{"event_name":"purchase","user_data":{"email_address":"a@b.c"},"x-ga-gcs":"G111","items":[{"id":"I\u0031"}],"skip":{"deep":[1,2,{"x":null}]},"v\u0061lue":3}"#;
        let full: Map<String, Value> = serde_json::from_str(text).expect("json");
        let keys = ["event_name", "user_data", "items", "value", "absent"];
        assert_eq!(select_json(text, &keys).expect("object"), select(&full, &keys), "escaped keys and values too");
        assert!(select_json("[1]", &keys).is_err() && select_json("{\"a\":1} x", &keys).is_err() && select_json("{\"a\":", &keys).is_err());
    }

    #[test]
    fn reads_paths_and_url_parameters() {
        let event = json!({"a": {"b": "x", "empty": ""}, "items": [{"id": "I1"}], "n": 1});
        let event = event.as_object().expect("object");
        assert_eq!(str_at(event, "a.b"), Some("x"));
        assert_eq!(str_at(event, "items.0.id"), Some("I1"));
        assert_eq!(str_at(event, "a.empty"), None);
        assert_eq!(str_at(event, "n"), None, "not a string");
        assert_eq!(str_at(event, "missing.path"), None);
        assert_eq!(url_param("https://x.example/p?a=1&fbclid=Iw%2BAR#frag", "fbclid").as_deref(), Some("Iw+AR"));
        assert_eq!(url_param("https://x.example/p?fbclid=", "fbclid"), None);
        assert_eq!(url_param("https://x.example/p", "fbclid"), None);
        assert_eq!(Value::Object(select(event, &["n", "a", "absent"])), json!({"n": 1, "a": {"b": "x", "empty": ""}}));
    }
}
