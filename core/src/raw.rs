//! JSON carried as its text.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON value kept as its validated text. The hub stores and forwards payloads and results this
/// way, byte for byte, and never builds a tree of them: decoding a frame copies the payload's
/// text once, encoding writes it back as is, and a clone (a delivery's envelope, a message for
/// each subscriber) shares the text. Clients and workers read the same protocol types with
/// [`Value`] payloads instead (the wire format is the same).
#[derive(Clone)]
pub struct RawJson(Arc<Box<RawValue>>);

impl RawJson {
    /// `null`.
    pub fn null() -> RawJson {
        RawJson(Arc::new(Box::<RawValue>::default()))
    }

    /// The JSON text of anything serializable (`null` in the impossible case that it fails:
    /// serializing the protocol's types cannot).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> RawJson {
        serde_json::value::to_raw_value(value).map_or_else(|_| RawJson::null(), RawJson::wrap)
    }

    /// Check that `text` is one JSON value and keep it.
    pub fn from_text(text: String) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(text).map(RawJson::wrap)
    }

    fn wrap(raw: Box<RawValue>) -> RawJson {
        RawJson(Arc::new(raw))
    }

    /// Whether both share one text (a clone of the other), without comparing it.
    pub fn same(&self, other: &RawJson) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The text, exactly as it came.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Bytes of text.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parse into a tree (for tests and tools; the hub never needs to).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

impl From<Value> for RawJson {
    fn from(v: Value) -> RawJson {
        RawJson::of(&v)
    }
}

impl From<&Value> for RawJson {
    fn from(v: &Value) -> RawJson {
        RawJson::of(v)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawJson, D::Error> {
        Box::<RawValue>::deserialize(d).map(RawJson::wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_goes_through_byte_for_byte() {
        // Spacing, key order, big integers and float digits are kept as sent.
        let text = r#"{"b": 1, "a": [18446744073709551616, 0.1000000000000000055511151231257827]}"#;
        let raw: RawJson = serde_json::from_str(text).unwrap();
        assert_eq!(raw.get(), text);
        let wrapped = serde_json::to_string(&serde_json::json!({"x": 1})).unwrap();
        assert_eq!(wrapped, r#"{"x":1}"#);
        assert_eq!(
            serde_json::to_string(&vec![raw.clone()]).unwrap(),
            format!("[{text}]")
        );
        assert!(RawJson::from_text("[1,".into()).is_err());
        assert_eq!(RawJson::null().get(), "null");
    }
}
