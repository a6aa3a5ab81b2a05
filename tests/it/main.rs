//! Integration tests: the real server on 127.0.0.1 port 0, over HTTP, on
//! SQLite and PostgreSQL from the same test code.

mod common;

mod auth;
mod backpressure;
mod compiled;
mod compiled_records;
mod concurrency;
mod crash;
mod demo;
mod engines;
mod evaluation;
mod event_type_cache;
mod events;
mod example_engine;
mod export;
mod groups;
mod hostile;
mod json_inputs;
mod leases;
mod loaders;
mod observability;
mod pending;
mod processing;
mod properties;
mod protocol;
mod relationships;
mod rest;
mod runs;
mod shutdown;
mod socket;
mod subscriptions;
mod surface;
mod templates;
mod timeline;
mod tls;
