//! scenario-hub: the coordination service of multi-agent scenario
//! simulations.
//!
//! Layers, each in its own folder: [`entity`] (SeaORM models of the tables),
//! [`service`] (every rule and transaction, no GraphQL types), [`delivery`]
//! (event fan-out to subscriptions: feeds, engine windows, leases' timers,
//! PostgreSQL NOTIFY), [`graphql`] (the schema: thin resolvers over the
//! services, DataLoaders for nested fields) and [`http`] (axum routes and
//! the websocket). [`server`] wires them together and runs them until a
//! shutdown signal; [`seed`] loads the demo; `main.rs` only parses the
//! command line.

pub mod config;
pub mod db;
pub mod delivery;
pub mod entity;
pub mod error;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod seed;
pub mod server;
pub mod service;
pub mod telemetry;
