//! The GraphQL schema: roots, types, loaders, error codes and the executor
//! that the transports run it through. Transport lives in `http`; rules live
//! in `service`.

pub mod error;
pub mod execution;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use std::sync::Arc;

use async_graphql::{Schema, SchemaBuilder};

use crate::config::Limits;
use crate::delivery::Hub;
use crate::service::Ctx;
use loaders::Loaders;

/// The schema type served by scenario-hub.
pub type AppSchema =
    Schema<query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot>;

/// The builder of [`AppSchema`], for callers that add extensions.
pub type AppSchemaBuilder =
    SchemaBuilder<query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot>;

/// Builds the schema over `services` (the service context and the delivery
/// hub; none for printing the SDL), with the query limits of `limits`.
pub fn build_schema(services: Option<(Ctx, Arc<Hub>)>, limits: &Limits) -> AppSchema {
    build_schema_with(services, limits, |builder| builder)
}

/// [`build_schema`], with `customize` applied to the builder last (tests add
/// fault-injecting extensions this way).
pub fn build_schema_with(
    services: Option<(Ctx, Arc<Hub>)>,
    limits: &Limits,
    customize: impl FnOnce(AppSchemaBuilder) -> AppSchemaBuilder,
) -> AppSchema {
    let mut builder = Schema::build(
        query::QueryRoot,
        mutation::MutationRoot,
        subscription::SubscriptionRoot,
    )
    .limit_depth(limits.max_query_depth)
    .limit_complexity(limits.max_query_complexity);
    if let Some((ctx, hub)) = services {
        builder = builder.data(ctx).data(hub);
    }
    customize(builder).finish()
}

/// The SDL of the schema, as `scenario-hub schema` prints it.
pub fn sdl() -> String {
    build_schema(None, &Limits::default()).sdl()
}

/// A fresh DataLoader for one request: batches nested fields, caches for
/// that request only. (Subscriptions turn the cache off: they outlive the
/// data they would cache.)
pub fn request_loader(ctx: &Ctx) -> DataLoader<Loaders, HashMapCache> {
    DataLoader::with_cache(
        Loaders { ctx: ctx.clone() },
        tokio::spawn,
        HashMapCache::default(),
    )
}
