//! The GraphQL schema: roots, types, loaders and error codes. Transport
//! lives in `http`; rules live in `service`.

pub mod error;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod types;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{EmptySubscription, Schema};

use crate::config::Limits;
use crate::service::Ctx;
use loaders::Loaders;

/// The schema type served by scenario-hub.
pub type AppSchema = Schema<query::QueryRoot, mutation::MutationRoot, EmptySubscription>;

/// Builds the schema over `ctx`, with the query limits of `limits`.
pub fn build_schema(ctx: Option<Ctx>, limits: &Limits) -> AppSchema {
    let mut builder = Schema::build(query::QueryRoot, mutation::MutationRoot, EmptySubscription)
        .limit_depth(limits.max_query_depth)
        .limit_complexity(limits.max_query_complexity)
        .extension(error::ErrorCodes);
    if let Some(ctx) = ctx {
        builder = builder.data(ctx);
    }
    builder.finish()
}

/// The SDL of the schema, as `scenario-hub schema` prints it.
pub fn sdl() -> String {
    build_schema(None, &Limits::default()).sdl()
}

/// A fresh DataLoader for one request: batches nested fields, caches for
/// that request only.
pub fn request_loader(ctx: &Ctx) -> DataLoader<Loaders, HashMapCache> {
    DataLoader::with_cache(
        Loaders { ctx: ctx.clone() },
        tokio::spawn,
        HashMapCache::default(),
    )
}
