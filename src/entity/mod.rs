//! SeaORM models, one file per table of DESIGN.md's data model. Nothing here
//! knows about GraphQL or HTTP; JSON columns are plain `serde_json::Value` and
//! the service layer gives them their typed shape, except an event's payload,
//! read as text (`JsonText`) because it is passed through, not looked into.

pub mod agent_template;
pub mod api_key;
pub mod engine_group;
pub mod engine_state;
pub mod engine_state_version;
pub mod event_delivery;
pub mod event_instance;
pub mod event_processing;
pub mod event_type;
pub mod json_text;
pub mod run_metric;
pub mod run_relationship;
pub mod scenario_run;
pub mod scenario_template;
