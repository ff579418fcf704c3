//! A station payload parsed once into a borrowed JSON tree, and the content hash of its
//! canonical form.
//!
//! The canonical form is what `serde_json::Value`'s `to_string` has always printed, and every
//! stored `content_sha256` is the SHA-256 of it: no whitespace, object keys sorted by bytes,
//! a repeated key keeping its last value, strings and numbers as serde_json writes them. The
//! tree gives the same bytes without building a `Value`: strings without escapes borrow the
//! payload, objects are sorted vectors, and the canonical form is streamed into the hasher.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

/// serde_json's private key that makes an object stand for the JSON text in its value, when
/// it is an object's first key (the `raw_value` feature). `Value` honours it, so a payload
/// using it is parsed the way `Value` parses it.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The error message this module's visitor gives when it meets [`RAW_VALUE_TOKEN`].
const RAW_VALUE_MARKER: &str = "soilmon: raw value token";

/// One JSON value, borrowing from the payload text where it can.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number as serde_json parsed it.
    Number(Number),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object.
    Object(Object<'a>),
}

/// An object's entries, sorted by key, each key once (the last value the payload gave it).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Json<'a> {
    /// Parses payload text. Errors are serde_json's, as parsing into a `Value` gives them.
    pub(super) fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        match serde_json::from_str(text) {
            Err(e) if e.to_string().starts_with(RAW_VALUE_MARKER) => {
                let value: Value = serde_json::from_str(text)?;
                Ok(Json::from_value(value))
            }
            other => other,
        }
    }

    /// The tree of a parsed `Value` (only for payloads that use [`RAW_VALUE_TOKEN`]).
    fn from_value(value: Value) -> Json<'a> {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Number(n),
            Value::String(s) => Json::String(Cow::Owned(s)),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from_value).collect()),
            // A `Map` iterates in key order, each key once: already canonical.
            Value::Object(map) => Json::Object(Object {
                entries: map
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Json::from_value(v)))
                    .collect(),
            }),
        }
    }

    /// True for `null`.
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The string, if this is one.
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub(super) fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub(super) fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Lower-case hex SHA-256 of the canonical form, streamed into the hasher.
    pub(super) fn content_sha256(&self) -> Result<String, serde_json::Error> {
        let mut hasher = Sha256::new();
        serde_json::to_writer(&mut hasher, self)?;
        Ok(hex::encode(hasher.finalize()))
    }
}

impl<'a> Object<'a> {
    /// Sorts entries in payload order by key; a repeated key keeps its last value.
    fn from_entries(mut entries: Vec<(Cow<'a, str>, Json<'a>)>) -> Object<'a> {
        // Stable: entries of one key stay in payload order, the last one wins below.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sorted: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            match sorted.last_mut() {
                Some(last) if last.0 == key => last.1 = value,
                _ => sorted.push((key, value)),
            }
        }
        Object { entries: sorted }
    }

    /// The value of a key.
    pub(super) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.entries
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &self.entries[i].1)
    }
}

impl Serialize for Json<'_> {
    /// The same calls `Value`'s `Serialize` makes, so serde_json writes the same bytes.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => serializer.collect_seq(items),
            Json::Object(o) => serializer.collect_map(o.entries.iter().map(|(k, v)| (k, v))),
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json<'de>, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Builds a [`Json`] from whatever the parser meets, as `Value`'s visitor does.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(key)) = map.next_key()? {
            if entries.is_empty() && key == RAW_VALUE_TOKEN {
                return Err(de::Error::custom(RAW_VALUE_MARKER));
            }
            entries.push((key, map.next_value()?));
        }
        Ok(Json::Object(Object::from_entries(entries)))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads a [`Key`].
struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form of a payload, as `Value` prints it and as this tree prints it.
    fn both(text: &str) -> (Result<String, String>, Result<String, String>) {
        let value = serde_json::from_str::<Value>(text)
            .map(|v| v.to_string())
            .map_err(|e| e.to_string());
        let tree = Json::parse(text)
            .and_then(|t| serde_json::to_string(&t))
            .map_err(|e| e.to_string());
        (value, tree)
    }

    #[test]
    fn the_tree_prints_what_value_prints() {
        let cases = [
            r#"{"b":1,"a":[1.0,1e2,-0,-0.0,1e-400,18446744073709551616,-9223372036854775809]}"#,
            r#"{"k":1,"k":2,"\u006b":3,"z":{"y":{},"x":[]}}"#,
            r#"{"s":"\u00e9\ud83d\ude00\"\\\/\n\u0001\u007f","é":"é","":null}"#,
            r#"{"$serde_json::private::RawValue":"{\"b\":1,\"a\":2}"}"#,
            r#"{"a":{"$serde_json::private::RawValue":"[1, 2]"}}"#,
            r#"{"x":1,"$serde_json::private::RawValue":"[1]"}"#,
            r#"{"$serde_json::private::RawValue":5}"#,
            r#"[1,2"#,
            r#"{"a":NaN}"#,
            r#"{"a":1e400}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\ud800"}"#,
            "",
        ];
        for text in cases {
            let (value, tree) = both(text);
            assert_eq!(tree, value, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let (value, tree) = both(&deep);
        assert_eq!(tree, value, "deep nesting");
    }

    #[test]
    fn get_finds_keys_in_any_payload_order() {
        let tree = Json::parse(r#"{"z":1,"a":2,"m":3,"a":4}"#).unwrap_or(Json::Null);
        let Some(obj) = tree.as_object() else {
            panic!("not an object");
        };
        let n = |key: &str| obj.get(key).cloned();
        assert_eq!(n("a"), Some(Json::Number(4.into())));
        assert_eq!(n("m"), Some(Json::Number(3.into())));
        assert_eq!(n("z"), Some(Json::Number(1.into())));
        assert_eq!(n("b"), None);
    }
}
