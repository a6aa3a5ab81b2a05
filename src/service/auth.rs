//! API keys and what each role may do. A request is made by a [`Principal`]:
//! the key it presented, or nobody on a server that has no key (open mode,
//! loopback only, where everyone is an admin).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Ctx, now};
use crate::entity::api_key;
use crate::error::{AppError, AppResult};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read, publish, record, register engines, save its engines' state.
    Engine,
    /// Read and subscribe.
    Viewer,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Engine => "engine",
            Role::Viewer => "viewer",
        }
    }

    /// Reads a role name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "engine" => Some(Role::Engine),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Kinds of operations, by the least role that may do them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries and subscriptions.
    Read,
    /// Publishing, recording, registering engines, saving engine state.
    Engine,
    /// Templates, event types, runs, relationships.
    Admin,
}

/// Who makes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The key presented; none on an open server.
    pub key_id: Option<Uuid>,
    /// Its role.
    pub role: Role,
}

impl Principal {
    /// Anyone, on a server without keys.
    pub const OPEN: Principal = Principal {
        key_id: None,
        role: Role::Admin,
    };

    /// `FORBIDDEN` unless the role allows `access`.
    pub fn require(&self, access: Access) -> AppResult<()> {
        let allowed = matches!(
            (self.role, access),
            (Role::Admin, _)
                | (Role::Engine, Access::Read | Access::Engine)
                | (Role::Viewer, Access::Read)
        );
        if allowed {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "a {} key may not do this",
                self.role.as_str()
            )))
        }
    }

    /// `FORBIDDEN` unless this principal may save the state of an engine
    /// registered by `registered_by`: admins may, engine keys their own.
    pub fn require_owner(&self, registered_by: Option<Uuid>) -> AppResult<()> {
        self.require(Access::Engine)?;
        if self.role == Role::Engine && registered_by != self.key_id {
            return Err(AppError::Forbidden(
                "an engine key saves the state of the engines it registered only".into(),
            ));
        }
        Ok(())
    }
}

/// Whether any key is active, looked up at most once a second: the answer
/// decides whether anonymous requests are let in.
#[derive(Default)]
pub struct KeyPresence {
    /// A std Mutex: held for a check of the clock, never across an await.
    checked: Mutex<Checked>,
    /// One lookup at a time: the requests that find the answer stale wait
    /// for it instead of each asking the database (32 concurrent requests
    /// made 32 lookups every second).
    lookup: tokio::sync::Mutex<()>,
}

/// The last answer and when it was looked up; `generation` counts the
/// changes of keys, so that a lookup started before one is not kept.
#[derive(Default)]
struct Checked {
    answer: Option<(Instant, bool)>,
    generation: u64,
}

const PRESENCE_TTL: Duration = Duration::from_secs(1);

/// How long a key's validity is trusted on an open websocket.
pub const REVALIDATE_EVERY: Duration = Duration::from_secs(2);

fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a key; returns it with its token, which is stored only as a hash.
pub async fn create(ctx: &Ctx, name: &str, role: Role) -> AppResult<(api_key::Model, String)> {
    let name = super::check_name("name", name)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(AppError::internal)?;
    let token = format!("shk_{}", URL_SAFE_NO_PAD.encode(secret));
    let model = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        role: Set(role.as_str().to_owned()),
        token_hash: Set(hash(&token)),
        created_at: Set(now()),
        revoked_at: Set(None),
    };
    let stored = model.insert(&ctx.db.conn).await?;
    ctx.keys.forget();
    Ok((stored, token))
}

/// Every key, oldest first.
pub async fn list(ctx: &Ctx) -> AppResult<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .order_by_asc(api_key::Column::CreatedAt)
        .all(&ctx.db.conn)
        .await?)
}

/// Revokes the key named or numbered `name_or_id`, at once.
pub async fn revoke(ctx: &Ctx, name_or_id: &str) -> AppResult<api_key::Model> {
    let by = match name_or_id.parse::<Uuid>() {
        Ok(id) => api_key::Column::Id.eq(id),
        Err(_) => api_key::Column::Name.eq(name_or_id),
    };
    let revoked = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now()))
        .filter(by)
        .filter(api_key::Column::RevokedAt.is_null())
        .exec_with_returning(&ctx.db.conn)
        .await?;
    ctx.keys.forget();
    revoked.into_iter().next().ok_or_else(|| {
        AppError::not_found(
            "key",
            format!("no active key is named or numbered {name_or_id}"),
        )
    })
}

/// The principal of `token`, if it is an active key.
pub async fn authenticate(ctx: &Ctx, token: &str) -> AppResult<Option<Principal>> {
    let key = api_key::Entity::find()
        .filter(api_key::Column::TokenHash.eq(hash(token)))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(&ctx.db.conn)
        .await?;
    Ok(key.and_then(|k| {
        Role::parse(&k.role).map(|role| Principal {
            key_id: Some(k.id),
            role,
        })
    }))
}

/// Whether the key `key_id` is still active.
pub async fn is_active(ctx: &Ctx, key_id: Uuid) -> AppResult<bool> {
    Ok(api_key::Entity::find_by_id(key_id)
        .filter(api_key::Column::RevokedAt.is_null())
        .count(&ctx.db.conn)
        .await?
        > 0)
}

impl KeyPresence {
    fn forget(&self) {
        let mut checked = self.checked.lock().expect("key presence poisoned");
        checked.answer = None;
        checked.generation += 1;
    }

    /// The answer, if it is fresh; else the generation a lookup starts from.
    fn fresh(&self) -> Result<bool, u64> {
        let checked = self.checked.lock().expect("key presence poisoned");
        match checked.answer {
            Some((at, any)) if at.elapsed() < PRESENCE_TTL => Ok(any),
            _ => Err(checked.generation),
        }
    }

    /// Whether any key is active (cached for a second).
    pub async fn any(&self, ctx: &Ctx) -> AppResult<bool> {
        if let Ok(any) = self.fresh() {
            return Ok(any);
        }
        let _turn = self.lookup.lock().await;
        // Whoever held the turn before may have looked it up meanwhile.
        let generation = match self.fresh() {
            Ok(any) => return Ok(any),
            Err(generation) => generation,
        };
        let any = api_key::Entity::find()
            .filter(api_key::Column::RevokedAt.is_null())
            .count(&ctx.db.conn)
            .await?
            > 0;
        let mut checked = self.checked.lock().expect("key presence poisoned");
        if checked.generation == generation {
            checked.answer = Some((Instant::now(), any));
        }
        Ok(any)
    }
}

/// The principal of a request that presented `authorization` (the value of
/// an `Authorization` header or `connection_init` field, `Bearer` optional).
pub async fn principal(ctx: &Ctx, authorization: Option<&str>) -> AppResult<Principal> {
    match authorization.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value)
                .trim();
            authenticate(ctx, token).await?.ok_or_else(|| {
                AppError::Unauthenticated("the API key is unknown or revoked".into())
            })
        }
        None if ctx.keys.any(ctx).await? => Err(AppError::Unauthenticated(
            "an API key is required: Authorization: Bearer <token>".into(),
        )),
        None => Ok(Principal::OPEN),
    }
}
