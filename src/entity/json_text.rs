//! `JsonText`: a JSON column read as its text, not as a value tree.
//!
//! An event's payload is opaque to the server on its way out: read from the
//! database and written into a response or an export. Decoding it into a
//! `serde_json::Value` tree (a map and a string per key and leaf) only to
//! serialize it again was the largest allocation of a page of events; the
//! text is kept as it is, checked for being JSON where it is read through
//! serde (no tree built), taken as it comes from a PostgreSQL `jsonb`
//! column. Code that needs to look inside parses it with `value()`.

use std::fmt;

use sea_orm::FromJsonQueryResult;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON document held as its text, valid JSON by construction: read
/// through serde (which checks it), made from a value tree, or taken from a
/// PostgreSQL `jsonb` column, whose text is valid by the column's type.
#[derive(Clone, FromJsonQueryResult)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// The text of `value`.
    pub fn of(value: &serde_json::Value) -> Self {
        JsonText(value.to_string().into_boxed_str())
    }

    /// The text of a PostgreSQL `jsonb` value, taken without parsing it
    /// again: the hot reads of events pass a page of payloads through, and
    /// checking each was a tenth of the server's work on a page.
    pub fn from_jsonb(text: &str) -> Self {
        JsonText(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Deserializes from any serde format through a value tree: for a
    /// `JsonText` inside data that serde buffers (an internally tagged enum),
    /// where the raw text is out of reach.
    pub fn deserialize_value<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(|v| JsonText::of(&v))
    }

    /// The document as a value tree, for code that looks inside it.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("JsonText holds valid JSON")
    }
}

/// Written as the JSON it holds (not as a string of it).
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde writes raw JSON only from a `RawValue`, which checks its text
        // (borrowed, no copy): exports pay that parse here instead of on
        // reading.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Read as raw JSON text, checked by the parse.
impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| JsonText(raw.into()))
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
