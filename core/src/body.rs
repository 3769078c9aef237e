//! Payloads and results: JSON, or bytes.
//!
//! A [`Body`] is what a task carries (its payload), what a worker answers (its result) and what a
//! publish sends. JSON travels inside a text frame's message; bytes travel after a binary frame's
//! JSON header, with no base64 (`docs/protocol.md`, *Binary frames*). The hub wraps a task's body
//! in records of its own (an outcome on a results queue, a dead-letter entry): such a record is
//! JSON that holds the bytes in one of its fields, [`Body::Holding`].
//!
//! `J` is how JSON is held: a [`Value`] tree for clients and workers ([`Payload`]), which read
//! it; [`crate::RawJson`] text for the hub, which only passes it on.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A payload or result as clients and workers see it.
pub type Payload = Body<Value>;

/// A payload or a result: JSON, or bytes.
#[derive(Clone, PartialEq)]
pub enum Body<J = Value> {
    /// A JSON value.
    Json(J),
    /// Bytes, sent as the attachment of a binary frame.
    Bytes(Bytes),
    /// A JSON object the hub built around bytes (boxed: rare, and it keeps every task's record
    /// small).
    Holding(Box<Held<J>>),
}

/// JSON holding bytes: `json` has `null` at `at`, a dot-separated path of object keys (`result`
/// in a task's outcome, `payload` in a dead-letter entry, `payload.result` in the dead-letter
/// entry of an outcome), and `bytes` belong there.
#[derive(Clone, PartialEq, Debug)]
pub struct Held<J> {
    pub json: J,
    pub at: String,
    pub bytes: Bytes,
}

impl<J> Body<J> {
    /// The JSON value, if this is plain JSON.
    pub fn into_json(self) -> Option<J> {
        match self {
            Body::Json(j) => Some(j),
            _ => None,
        }
    }

    /// The JSON value, if this is plain JSON.
    pub fn json(&self) -> Option<&J> {
        match self {
            Body::Json(j) => Some(j),
            _ => None,
        }
    }

    /// The bytes, if this is plain bytes.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes this carries outside its JSON, and where they go within it (`""`: they are the
    /// whole value).
    pub fn attachment(&self) -> Option<(&str, &Bytes)> {
        match self {
            Body::Json(_) => None,
            Body::Bytes(b) => Some(("", b)),
            Body::Holding(h) => Some((&h.at, &h.bytes)),
        }
    }

    /// A record `json` the hub built with `inner` serialized as its `field` (where bytes
    /// serialize as `null`): the record as a body, holding `inner`'s bytes if it has any.
    pub fn around<I>(json: J, field: &str, inner: &Body<I>) -> Body<J> {
        match inner.attachment() {
            None => Body::Json(json),
            Some((at, bytes)) => Body::Holding(Box::new(Held {
                json,
                at: if at.is_empty() {
                    field.to_string()
                } else {
                    format!("{field}.{at}")
                },
                bytes: bytes.clone(),
            })),
        }
    }
}

impl Body<crate::RawJson> {
    /// Whether both share one text or one buffer (a clone of the other), without comparing them.
    pub fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Body::Json(a), Body::Json(b)) => a.same(b),
            (Body::Bytes(a), Body::Bytes(b)) => a.as_ptr() == b.as_ptr() && a.len() == b.len(),
            _ => false,
        }
    }
}

impl Body<Value> {
    /// The JSON value, or what stands for bytes in it: `null`.
    pub fn json_or_null(&self) -> &Value {
        match self {
            Body::Json(v) => v,
            Body::Holding(h) => &h.json,
            Body::Bytes(_) => &Value::Null,
        }
    }

    /// Put `bytes` at `at` (a dot-separated path of object keys; empty for the whole value) of
    /// this JSON, where it must hold `null`: how a binary frame's attachment joins its header.
    pub fn attach(self, at: &str, bytes: Bytes) -> Result<Body<Value>, String> {
        let Body::Json(json) = self else {
            return Err("a message carries at most one attachment".into());
        };
        let mut spot = &json;
        if !at.is_empty() {
            for key in at.split('.') {
                spot = spot
                    .as_object()
                    .and_then(|o| o.get(key))
                    .ok_or_else(|| format!("the header has no field `{key}` for the attachment"))?;
            }
        }
        if !spot.is_null() {
            return Err(format!(
                "the header must hold null where the attachment goes (`{at}`)"
            ));
        }
        Ok(if at.is_empty() {
            Body::Bytes(bytes)
        } else {
            Body::Holding(Box::new(Held {
                json,
                at: at.to_string(),
                bytes,
            }))
        })
    }

    /// The JSON with the bytes as a JSON array of numbers where they belong: for showing a body
    /// to people and to tools that only read JSON (`taskhub get`), never to send it.
    pub fn to_json_lossy(&self) -> Value {
        let array = |b: &Bytes| Value::Array(b.iter().map(|&x| Value::from(x)).collect());
        match self {
            Body::Json(v) => v.clone(),
            Body::Bytes(b) => array(b),
            Body::Holding(h) => {
                let mut v = h.json.clone();
                let mut spot = &mut v;
                for key in h.at.split('.') {
                    match spot.get_mut(key) {
                        Some(next) => spot = next,
                        None => return v,
                    }
                }
                *spot = array(&h.bytes);
                v
            }
        }
    }
}

/// JSON that can say whether it is `null` (the placeholder for an attachment).
pub trait JsonNull {
    fn is_null(&self) -> bool;
}

impl JsonNull for Value {
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
}

impl JsonNull for crate::RawJson {
    fn is_null(&self) -> bool {
        self.get().trim() == "null"
    }
}

impl<J: Default> Default for Body<J> {
    fn default() -> Self {
        Body::Json(J::default())
    }
}

impl From<Value> for Body<Value> {
    fn from(v: Value) -> Self {
        Body::Json(v)
    }
}

impl From<Value> for Body<crate::RawJson> {
    fn from(v: Value) -> Self {
        Body::Json(crate::RawJson::of(&v))
    }
}

impl From<crate::RawJson> for Body<crate::RawJson> {
    fn from(j: crate::RawJson) -> Self {
        Body::Json(j)
    }
}

/// The JSON text as held, with bytes shown by their length.
impl std::fmt::Display for Body<crate::RawJson> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(j) => j.fmt(f),
            other => std::fmt::Debug::fmt(other, f),
        }
    }
}

impl<J> From<Bytes> for Body<J> {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}

impl<J> From<Vec<u8>> for Body<J> {
    fn from(b: Vec<u8>) -> Self {
        Body::Bytes(Bytes::from(b))
    }
}

impl<J> From<&[u8]> for Body<J> {
    fn from(b: &[u8]) -> Self {
        Body::Bytes(Bytes::copy_from_slice(b))
    }
}

/// `payload["id"]`: indexes the JSON (`null` where there is none, as for a [`Value`]).
impl<I: serde_json::value::Index> std::ops::Index<I> for Body<Value> {
    type Output = Value;
    fn index(&self, index: I) -> &Value {
        &self.json_or_null()[index]
    }
}

/// The JSON text, with bytes shown as an array of numbers ([`Body::to_json_lossy`]).
impl std::fmt::Display for Body<Value> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(v) => v.fmt(f),
            other => other.to_json_lossy().fmt(f),
        }
    }
}

impl PartialEq<Value> for Body<Value> {
    fn eq(&self, other: &Value) -> bool {
        self.json() == Some(other)
    }
}

impl<J: std::fmt::Debug> std::fmt::Debug for Body<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(j) => j.fmt(f),
            Body::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Body::Holding(h) => {
                write!(f, "{:?} with <{} bytes> at {}", h.json, h.bytes.len(), h.at)
            }
        }
    }
}

/// Bytes serialize as `null`: the placeholder a binary frame's header holds for them.
impl<J: Serialize> Serialize for Body<J> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Json(j) => j.serialize(s),
            Body::Holding(h) => h.json.serialize(s),
            Body::Bytes(_) => s.serialize_unit(),
        }
    }
}

/// Read from JSON text, a body is JSON; bytes join it from a binary frame's attachment.
impl<'de, J: Deserialize<'de>> Deserialize<'de> for Body<J> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        J::deserialize(d).map(Body::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_stand_as_null_and_records_around_them_say_where_they_go() {
        let bytes = Body::<Value>::from(vec![1u8, 2, 3]);
        assert_eq!(serde_json::to_string(&bytes).unwrap(), "null");
        let record = json!({"id": 4, "ok": true, "result": &bytes});
        let outcome = Body::around(record.clone(), "result", &bytes);
        assert_eq!(outcome.attachment().unwrap().0, "result");
        let entry = Body::around(json!({"payload": &outcome}), "payload", &outcome);
        assert_eq!(entry.attachment().unwrap().0, "payload.result");
        assert_eq!(
            entry.to_json_lossy(),
            json!({"payload": {"id": 4, "ok": true, "result": [1, 2, 3]}})
        );
        // JSON stays JSON.
        let plain = Body::around(json!({"payload": 5}), "payload", &Body::Json(json!(5)));
        assert_eq!(plain, json!({"payload": 5}));
    }

    #[test]
    fn an_attachment_goes_only_where_the_header_holds_null() {
        let b = Bytes::from_static(b"xyz");
        let whole = Body::Json(Value::Null).attach("", b.clone()).unwrap();
        assert_eq!(whole.bytes(), Some(&b));
        let nested = Body::Json(json!({"id": 1, "result": null}))
            .attach("result", b.clone())
            .unwrap();
        assert_eq!(nested.attachment(), Some(("result", &b)));
        for (json, at) in [
            (json!(5), ""),
            (json!({"result": 5}), "result"),
            (json!({"id": 1}), "result"),
            (json!([null]), "0"),
        ] {
            let err = Body::Json(json.clone()).attach(at, b.clone()).unwrap_err();
            assert!(
                err.contains("null") || err.contains("no field"),
                "{json} {at}: {err}"
            );
        }
    }
}
