//! JSON output that skips async-graphql's value tree. A `JSON` field of
//! type `serde_json::Value` is converted into a `ConstValue` (an `IndexMap`
//! and a shared name per key, a string per leaf) and serialized from that;
//! a payload is opaque to GraphQL, so it is serialized once to text here
//! and written into the response as it is.

use std::borrow::Cow;
use std::sync::OnceLock;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, InputType, InputValueError, InputValueResult, Name, OutputType,
    Positioned, ServerResult, Value,
};

/// A JSON value served as the `JSON` scalar, from its serialized text.
pub struct RawJson(String);

impl RawJson {
    /// The text of `value`.
    pub fn of(value: &serde_json::Value) -> Self {
        RawJson(value.to_string())
    }

    /// Valid JSON text, served as it is.
    pub fn text(json: &str) -> Self {
        RawJson(json.to_owned())
    }
}

/// The key by which async-graphql's serializer (feature `raw_value`) knows
/// a value to write as raw JSON text; one shared name, not one per value.
fn raw_value_key() -> &'static Name {
    static KEY: OnceLock<Name> = OnceLock::new();
    KEY.get_or_init(|| Name::new(async_graphql_value::RAW_VALUE_TOKEN))
}

impl OutputType for RawJson {
    fn type_name() -> Cow<'static, str> {
        <serde_json::Value as OutputType>::type_name()
    }

    // The same scalar as `serde_json::Value`'s, registered by that type, so
    // the schema has one `JSON` whichever way a field produces it.
    fn create_type_info(registry: &mut Registry) -> String {
        <serde_json::Value as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        _ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let mut raw = IndexMap::with_capacity(1);
        raw.insert(raw_value_key().clone(), Value::String(self.0.clone()));
        Ok(Value::Object(raw))
    }
}

/// Free JSON that always has a value: as an input it is nullable (`JSON`),
/// and `null` or leaving it out both mean JSON `null`; as an output it is
/// `JSON!` (`null` is a value there too). One type for the fields that
/// input and output objects share.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct FreeJson(pub serde_json::Value);

impl From<serde_json::Value> for FreeJson {
    fn from(value: serde_json::Value) -> Self {
        FreeJson(value)
    }
}

impl From<FreeJson> for serde_json::Value {
    fn from(value: FreeJson) -> Self {
        value.0
    }
}

impl InputType for FreeJson {
    type RawValueType = serde_json::Value;

    fn type_name() -> Cow<'static, str> {
        <serde_json::Value as InputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Self as InputType>::type_name().into_owned()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <serde_json::Value as InputType>::create_type_info(registry);
        <Self as InputType>::qualified_type_name()
    }

    fn parse(value: Option<Value>) -> InputValueResult<Self> {
        match value {
            None | Some(Value::Null) => Ok(FreeJson(serde_json::Value::Null)),
            Some(value) => Ok(FreeJson(
                value.into_json().map_err(InputValueError::custom)?,
            )),
        }
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or_default()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }
}

impl OutputType for FreeJson {
    fn type_name() -> Cow<'static, str> {
        <serde_json::Value as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <serde_json::Value as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        RawJson::of(&self.0).resolve(ctx, field).await
    }
}
