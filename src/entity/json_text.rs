//! `JsonText`: a JSON column read as its text, not as a value tree.
//!
//! An event's payload is opaque to the server on its way out: read from the
//! database and written into a response or an export. Decoding it into a
//! `serde_json::Value` tree (a map and a string per key and leaf) only to
//! serialize it again was the largest allocation of a page of events; the
//! text is checked for being JSON on decode (no tree built) and kept as it is.
//! Code that needs to look inside parses it with `value()`.

use std::fmt;

use sea_orm::FromJsonQueryResult;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON document held as its (valid) text.
#[derive(Clone, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The text of `value`.
    pub fn of(value: &serde_json::Value) -> Self {
        JsonText(serde_json::value::to_raw_value(value).expect("a JSON value serializes"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Deserializes from any serde format through a value tree: for a
    /// `JsonText` inside data that serde buffers (an internally tagged enum),
    /// where the raw text is out of reach.
    pub fn deserialize_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(|v| JsonText::of(&v))
    }

    /// The document as a value tree, for code that looks inside it.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).expect("JsonText holds valid JSON")
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> Self {
        JsonText::of(&value)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Equal when they hold the same value (PostgreSQL's `jsonb` gives back its
/// own spacing and key order, so the texts may differ).
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.value() == other.value()
    }
}
