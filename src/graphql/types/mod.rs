//! GraphQL object, input and enum types. Output types wrap the service
//! layer's models; nested fields resolve through the request's DataLoader.

pub mod engine;
pub mod event;
pub mod json;
pub mod run;
pub mod template;

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, OutputType};

use super::RequestLoader;
use super::loaders::Loaders;
use crate::error::AppError;
use crate::service::Ctx;
use crate::service::auth::Principal;
use crate::service::page::{CursorKey, Page};

/// The service context of the schema.
pub fn service_ctx<'a>(ctx: &Context<'a>) -> &'a Ctx {
    ctx.data_unchecked::<Ctx>()
}

/// Who makes the request; the transport always puts it in the request data.
pub fn principal(ctx: &Context<'_>) -> async_graphql::Result<Principal> {
    ctx.data_opt::<Principal>()
        .copied()
        .ok_or_else(|| AppError::internal("request without a principal").into())
}

/// The DataLoader of the current request.
pub fn loader<'a>(ctx: &Context<'a>) -> &'a DataLoader<Loaders, HashMapCache> {
    ctx.data_unchecked::<RequestLoader>().get(service_ctx(ctx))
}

/// A Relay connection of a page, each row wrapped by `wrap`.
pub fn connection<K: CursorKey, T, N: OutputType>(
    page: Page<K, T>,
    had_cursor: bool,
    wrap: impl Fn(T) -> N,
) -> Connection<String, N> {
    let mut connection = Connection::new(had_cursor, page.has_next);
    connection.edges = page
        .rows
        .into_iter()
        .map(|(key, row)| Edge::new(key.encode(), wrap(row)))
        .collect();
    connection
}
