//! The GraphQL schema: roots, types, loaders, error codes and the executor
//! that the transports run it through. Transport lives in `http`; rules live
//! in `service`.

mod compiled;
pub mod error;
pub mod execution;
pub mod loaders;
pub mod mutation;
pub mod query;
mod spec;
pub mod subscription;
pub mod types;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use std::sync::{Arc, OnceLock};

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
    .limit_complexity(limits.max_query_complexity)
    // Spec-conformant built-ins where the crate's differ: see `spec`.
    .directive(spec::SpecConformance);
    if let Some((ctx, hub)) = services {
        builder = builder.data(ctx).data(hub);
    }
    customize(builder).finish()
}

/// The SDL of the schema, as `scenario-hub schema` prints it: the crate's
/// export with the built-in directive definitions it leaves out (see
/// `spec`), so that it and introspection say the same.
pub fn sdl() -> String {
    spec::complete_sdl(build_schema(None, &Limits::default()).sdl())
}

/// The DataLoader of one request, made when a field first asks for it:
/// many operations (mutations, most subscriptions) never do, and an idle
/// subscription should not carry one. It batches nested fields and caches
/// for that request only; subscriptions turn the cache off, as they outlive
/// the data they would cache.
pub struct RequestLoader {
    cache: bool,
    loader: OnceLock<DataLoader<Loaders, HashMapCache>>,
}

impl RequestLoader {
    /// A loader that caches for the request (queries and mutations).
    pub fn cached() -> Self {
        RequestLoader {
            cache: true,
            loader: OnceLock::new(),
        }
    }

    /// A loader that batches but never caches (subscriptions).
    pub fn uncached() -> Self {
        RequestLoader {
            cache: false,
            loader: OnceLock::new(),
        }
    }

    /// The loader, made over `ctx` on first use.
    pub fn get(&self, ctx: &Ctx) -> &DataLoader<Loaders, HashMapCache> {
        self.loader.get_or_init(|| {
            let loader = DataLoader::with_cache(
                Loaders { ctx: ctx.clone() },
                tokio::spawn,
                HashMapCache::default(),
            );
            loader.enable_all_cache(self.cache);
            loader
        })
    }
}
