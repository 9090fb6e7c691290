//! Event data as borrowed JSON: [`Fields`] (an object) and [`Node`] (any value).
//!
//! `serde_json::Value` owns every string and keeps objects in a sorted tree, so building one
//! allocates per key and per value and compares keys on every insert. In a sandbox that runs
//! for every hit (a client) or every queued event (a `deliver`), that is most of a template's
//! time. `Fields` keeps an object's fields in a vector, in the order they were first set, and
//! borrows its text from what it was read from — the hit's query string, the queued event's
//! JSON — wherever that text needed no unescaping. Reading it from JSON
//! ([`crate::Item::fields`], `serde_json::from_str`) and writing it ([`Fields::to_json`], or any
//! `serde` serializer) need no `Value` in between.
//!
//! Setting a field again replaces its value (later duplicates win, as in GA4 hits and in
//! `serde_json`). Lookups scan while an object is small, which is faster than any tree for the
//! few dozen fields of an event; past [`INDEXED_FROM`] fields an index keeps them logarithmic,
//! so text with thousands of keys costs what it would with a map.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};

/// From this many fields on, an object keeps an index of its keys. Events have a few dozen
/// (the GA4 client's ~45 for a typical hit): below this a scan is cheaper than building the
/// index, whose keys are allocated; above it, text with thousands of keys stays linearithmic.
pub const INDEXED_FROM: usize = 128;

/// A JSON value, borrowing its text where it could.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A finite number.
    Number(Number),
    /// A string.
    Text(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object.
    Object(Fields<'a>),
}

/// A JSON object as its fields, in the order they were first set (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    entries: Vec<(Cow<'a, str>, Node<'a>)>,
    /// Each key's place in `entries`, once there are [`INDEXED_FROM`] of them.
    index: Option<BTreeMap<String, usize>>,
}

impl PartialEq for Fields<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<'a> Fields<'a> {
    /// An empty object with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Fields { entries: Vec::with_capacity(n), index: None }
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    fn push(&mut self, key: Cow<'a, str>, value: Node<'a>) -> usize {
        let at = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key.to_string(), at);
            }
            None if at + 1 >= INDEXED_FROM => {
                let mut index: BTreeMap<String, usize> = self.entries.iter().enumerate().map(|(i, (k, _))| (k.to_string(), i)).collect();
                index.insert(key.to_string(), at);
                self.index = Some(index);
            }
            None => {}
        }
        self.entries.push((key, value));
        at
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// The text of `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Node::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// How many fields are set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The fields, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Sets `key`, returning the value it replaced.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Node<'a>) -> Option<Node<'a>> {
        let key = key.into();
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.push(key, value);
                None
            }
        }
    }

    /// Sets `key` unless it is set already.
    pub fn insert_if_absent(&mut self, key: impl Into<Cow<'a, str>>, value: Node<'a>) {
        let key = key.into();
        if self.position(&key).is_none() {
            self.push(key, value);
        }
    }

    /// The object under `key`, made (replacing whatever else was there) if it is not one.
    pub fn object(&mut self, key: impl Into<Cow<'a, str>>) -> &mut Fields<'a> {
        let key = key.into();
        let at = match self.position(&key) {
            Some(i) => i,
            None => self.push(key, Node::Object(Fields::default())),
        };
        let slot = &mut self.entries[at].1;
        if !matches!(slot, Node::Object(_)) {
            *slot = Node::Object(Fields::default());
        }
        match slot {
            Node::Object(fields) => fields,
            _ => unreachable!("made an object just above"),
        }
    }

    /// The fields as one JSON object.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(64 * self.entries.len());
        // Writing a `Fields` cannot fail: its keys are strings and its numbers finite.
        let _ = serde_json::to_writer(&mut out, self);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The fields as a `serde_json` map (read back from [`Fields::to_json`]).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(&self.to_json()).unwrap_or_default()
    }

    /// The same fields, owning their text.
    pub fn into_owned(self) -> Fields<'static> {
        Fields { entries: self.entries.into_iter().map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned())).collect(), index: self.index }
    }
}

impl<'a> IntoIterator for Fields<'a> {
    type Item = (Cow<'a, str>, Node<'a>);
    type IntoIter = std::vec::IntoIter<(Cow<'a, str>, Node<'a>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl Node<'_> {
    /// The same value, owning its text.
    pub fn into_owned(self) -> Node<'static> {
        match self {
            Node::Null => Node::Null,
            Node::Bool(b) => Node::Bool(b),
            Node::Number(n) => Node::Number(n),
            Node::Text(s) => Node::Text(Cow::Owned(s.into_owned())),
            Node::Array(items) => Node::Array(items.into_iter().map(Node::into_owned).collect()),
            Node::Object(fields) => Node::Object(fields.into_owned()),
        }
    }

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<Value> for Node<'static> {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::Text(Cow::Owned(s)),
            Value::Array(items) => Node::Array(items.into_iter().map(Node::from).collect()),
            Value::Object(map) => Node::Object(Fields::from(map)),
        }
    }
}

impl From<Map<String, Value>> for Fields<'static> {
    fn from(map: Map<String, Value>) -> Self {
        let mut fields = Fields::with_capacity(map.len());
        for (k, v) in map {
            fields.push(Cow::Owned(k), Node::from(v));
        }
        fields
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Number(n) => n.serialize(serializer),
            Node::Text(s) => serializer.serialize_str(s),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(fields) => fields.serialize(serializer),
        }
    }
}

/// A string that borrows from the input when the deserializer can lend it (JSON text without
/// escapes): object keys here and in [`crate::data::select_json`].
pub(crate) struct Text<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((Text(key), value)) = map.next_entry::<Text, Node>()? {
            fields.insert(key, value);
        }
        Ok(Node::Object(fields))
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Node::deserialize(deserializer)? {
            Node::Object(fields) => Ok(fields),
            _ => Err(serde::de::Error::custom("expected a JSON object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_json_as_serde_json_does() {
        let value = json!({"b": 1, "a": "x\"y", "n": null, "f": 1.5, "t": true, "list": [1, "two", {"k": []}], "o": {"z": -3}});
        let text = value.to_string();
        let fields: Fields = serde_json::from_str(&text).unwrap();
        assert_eq!(fields.len(), 7);
        assert_eq!(serde_json::from_str::<Value>(&fields.to_json()).unwrap(), value);
        assert_eq!(Value::Object(fields.to_map()), value);
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        let text = r#"{"plain": "abc", "escaped": "a\nb"}"#;
        let fields: Fields = serde_json::from_str(text).unwrap();
        assert!(matches!(fields.get("plain"), Some(Node::Text(Cow::Borrowed("abc")))));
        assert!(matches!(fields.get("escaped"), Some(Node::Text(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn a_later_duplicate_wins_in_the_first_place() {
        let fields: Fields = serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(fields.to_json(), r#"{"a":3,"b":2}"#);
        let mut fields = fields;
        assert_eq!(fields.insert("b", Node::Bool(true)), Some(Node::Number(2.into())));
        fields.insert_if_absent("a", Node::Null);
        fields.insert_if_absent("c", Node::Null);
        assert_eq!(fields.to_json(), r#"{"a":3,"b":true,"c":null}"#);
        fields.object("a").insert("inner", Node::Text("x".into()));
        assert_eq!(fields.to_json(), r#"{"a":{"inner":"x"},"b":true,"c":null}"#);
    }

    #[test]
    fn many_keys_stay_correct_past_the_index_threshold() {
        let mut fields = Fields::default();
        for i in 0..(INDEXED_FROM * 3) {
            fields.insert(format!("k{}", i % (INDEXED_FROM * 2)), Node::Number(i.into()));
        }
        assert_eq!(fields.len(), INDEXED_FROM * 2);
        assert_eq!(fields.get("k0"), Some(&Node::Number((INDEXED_FROM * 2).into())), "replaced in place");
        assert_eq!(fields.get(&format!("k{}", INDEXED_FROM * 2 - 1)), Some(&Node::Number((INDEXED_FROM * 2 - 1).into())));
        assert!(fields.get("missing").is_none());
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k).take(2).collect();
        assert_eq!(keys, ["k0", "k1"], "first-set order");
    }

    #[test]
    fn anything_but_an_object_is_not_fields() {
        for text in ["[]", "1", "\"x\"", "null", "{", ""] {
            assert!(serde_json::from_str::<Fields>(text).is_err(), "{text}");
        }
    }
}
