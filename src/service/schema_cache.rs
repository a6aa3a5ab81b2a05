//! Compiled JSON Schema validators of event types' payloads. Compiling a
//! schema costs far more than validating with it, so each is compiled once
//! and reused for as long as the stored schema stays the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{AppError, AppResult};

/// A compiled schema, with the JSON it was compiled from.
struct Compiled {
    source: Value,
    validator: Arc<jsonschema::Validator>,
}

/// Validators by event type name.
#[derive(Default)]
pub struct SchemaCache {
    /// A std Mutex, not a Tokio one: nothing awaits while it is held.
    compiled: Mutex<HashMap<String, Compiled>>,
}

/// Compiles `schema`, or says why it is not a usable JSON Schema.
pub fn compile(field: &str, schema: &Value) -> AppResult<jsonschema::Validator> {
    jsonschema::validator_for(schema)
        .map_err(|e| AppError::bad_input(field, format!("{field} is not a valid JSON Schema: {e}")))
}

impl SchemaCache {
    /// Checks `payload` against `schema`, the stored schema of `event_type`.
    pub fn validate(
        &self,
        event_type: &str,
        schema: &Value,
        payload: &Value,
        field: &str,
    ) -> AppResult<()> {
        let validator = self.validator(event_type, schema)?;
        let violations: Vec<String> = validator
            .iter_errors(payload)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                };
                format!("{path}: {e}")
            })
            .collect();
        if violations.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = violations.iter().take(3).map(String::as_str).collect();
        Err(AppError::PayloadSchemaViolation {
            field: field.to_owned(),
            message: format!(
                "payload does not match the schema of event type {event_type}: {}",
                shown.join("; ")
            ),
            violations,
        })
    }

    fn validator(&self, event_type: &str, schema: &Value) -> AppResult<Arc<jsonschema::Validator>> {
        let mut compiled = self.compiled.lock().expect("schema cache poisoned");
        if let Some(entry) = compiled.get(event_type)
            && entry.source == *schema
        {
            return Ok(entry.validator.clone());
        }
        // A stored schema was checked when it was written; failing here means
        // the row was edited behind our back.
        let validator = Arc::new(jsonschema::validator_for(schema).map_err(|e| {
            AppError::internal(format!(
                "stored schema of {event_type} does not compile: {e}"
            ))
        })?);
        compiled.insert(
            event_type.to_owned(),
            Compiled {
                source: schema.clone(),
                validator: validator.clone(),
            },
        );
        Ok(validator)
    }
}
