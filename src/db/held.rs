//! PostgreSQL connections kept between statements, out of the pool's release.
//!
//! sqlx pings every connection it takes back into its pool (a Sync and a
//! wait for ReadyForQuery, in `return_to_pool`, unconditionally): a second
//! round trip for every statement, paid in both processes' CPU. The hot
//! single statements (a page of events, a state save, a one-statement
//! publish) run on a connection taken from here instead: one the pool
//! handed out earlier and that was given back here, not to the pool, when
//! its statement finished cleanly. A statement that failed for any reason
//! but the database refusing it, or whose future was dropped midway (the
//! connection may hold half an exchange), gives its connection back to the
//! pool, whose ping then checks or closes it, and so does one held for
//! `MAX_HELD` (the pool's own `max_lifetime` then applies). Transactions use
//! the pool.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::sea_query::Values;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{PgPool, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, ExecResult, QueryResult,
    RuntimeErr, Statement,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{Mutex, MutexGuard, Notify, oneshot};

use super::DbStats;

/// Idle connections kept here, at most `keep`; the rest go back to the pool.
pub struct Held {
    pool: PgPool,
    idle: StdMutex<Vec<Kept>>,
    /// Rung when a connection is kept: a statement waiting for the pool
    /// takes it instead (it would otherwise wait while one sits here).
    returned: Notify,
    keep: usize,
    /// The pool's acquires under way in tasks of their own, at most the
    /// pool's size: more could not be served sooner, and one left behind
    /// by a statement that took a kept connection waits for its turn.
    acquiring: AtomicUsize,
    max_acquiring: usize,
    stats: Arc<DbStats>,
}

/// A connection, when it left the pool, and when it was last kept here.
struct Kept {
    conn: PoolConnection<Postgres>,
    since: Instant,
    idle_since: Instant,
}

/// A connection kept idle this long goes back to the pool when next taken,
/// whose ping checks it (as the pool checks its own idle connections
/// before handing them out): a database restarted meanwhile costs no
/// request.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How often a statement waiting without an acquire of its own looks again.
const RECHECK: Duration = Duration::from_millis(50);

/// A connection goes back to the pool (and so to its checks and its
/// `max_lifetime`) after this long held, whatever its health.
const MAX_HELD: Duration = Duration::from_secs(10 * 60);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// A kept connection, or the pool's next one, whichever comes first.
    ///
    /// The pool's acquire may be opening a new connection (TLS included),
    /// which dropping it midway would abandon: PostgreSQL forks a backend
    /// for every attempt, and a pool below its size under load kept
    /// starting and abandoning them (hundreds a second, most of a core).
    /// So the acquire runs in a task of its own; when a kept connection
    /// comes first, the task finishes and keeps what it gets for the next
    /// statement. When the pool's size of acquires are under way already,
    /// a statement waits for what they bring (each rings `returned` when it
    /// ends, with or without a connection).
    async fn take(self: &Arc<Self>) -> Result<Kept, DbErr> {
        let mut acquiring: Option<oneshot::Receiver<Result<Kept, DbErr>>> = None;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            let popped = self.idle.lock().expect("held connections").pop();
            match popped {
                Some(kept) if kept.idle_since.elapsed() <= MAX_IDLE => return Ok(kept),
                // Dropped: back to the pool, through its ping.
                Some(_) => continue,
                None => {}
            }
            if acquiring.is_none() {
                acquiring = self.start_acquire();
            }
            let acquired = async {
                match acquiring.as_mut() {
                    Some(rx) => Some(rx.await),
                    // Without an acquire of its own a statement looks again
                    // now and then as well: a connection that failed goes
                    // back to the pool without ringing.
                    None => {
                        tokio::time::sleep(RECHECK).await;
                        None
                    }
                }
            };
            tokio::select! {
                conn = acquired => if let Some(conn) = conn {
                    return conn.unwrap_or_else(|_| Err(DbErr::Custom("the pool's acquire was cancelled".into())));
                },
                () = &mut returned => {}
            }
        }
    }

    /// Starts an acquire from the pool in a task of its own, unless the
    /// pool's size of them are under way; its connection goes to the
    /// receiver or, once that is gone, is kept here.
    fn start_acquire(self: &Arc<Self>) -> Option<oneshot::Receiver<Result<Kept, DbErr>>> {
        self.acquiring
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_acquiring).then_some(n + 1)
            })
            .ok()?;
        let (tx, rx) = oneshot::channel();
        let held = self.clone();
        tokio::spawn(async move {
            let conn = held.pool.acquire().await.map_err(sqlx_err).map(|conn| {
                let now = Instant::now();
                Kept {
                    conn,
                    since: now,
                    idle_since: now,
                }
            });
            held.acquiring.fetch_sub(1, Ordering::AcqRel);
            if let Err(Ok(kept)) = tx.send(conn) {
                held.keep(kept);
            }
            // A statement waiting without an acquire of its own may start
            // one now.
            held.returned.notify_one();
        });
        Some(rx)
    }

    /// Keeps `kept` idle for the next statement when there is room (and
    /// wakes a statement waiting for one), else gives it back to the pool.
    fn keep(&self, mut kept: Kept) {
        let mut idle = self.idle.lock().expect("held connections");
        if idle.len() < self.keep {
            kept.idle_since = Instant::now();
            idle.push(kept);
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// Keeps up to `keep` of `pool`'s connections; counts statements into
    /// `stats` as the pool's callback does.
    pub fn new(pool: PgPool, keep: usize, stats: Arc<DbStats>) -> Self {
        Held {
            max_acquiring: pool.options().get_max_connections() as usize,
            acquiring: AtomicUsize::new(0),
            pool,
            idle: StdMutex::new(Vec::with_capacity(keep)),
            returned: Notify::new(),
            keep,
            stats,
        }
    }
}

/// A connection for one service call's hot statements: the pool's own
/// `DatabaseConnection` on SQLite, a held one on PostgreSQL.
pub enum Hot<'a> {
    /// The pool, as every other statement uses it.
    Pool(&'a DatabaseConnection),
    /// A connection from [`Held`], taken at the first statement.
    Held(HeldConnection),
}

impl Hot<'_> {
    /// A held connection over `held`.
    pub fn held(held: Arc<Held>) -> Hot<'static> {
        Hot::Held(HeldConnection {
            held,
            conn: Mutex::new(None),
        })
    }
}

/// A connection borrowed from [`Held`] for the life of this value.
pub struct HeldConnection {
    held: Arc<Held>,
    /// None until the first statement, and after a statement that failed.
    conn: Mutex<Option<Clean>>,
}

/// A connection and whether its last exchange finished.
struct Clean {
    kept: Kept,
    in_statement: bool,
}

impl HeldConnection {
    /// This value's connection (taken on first use), marked as inside an
    /// exchange until [`HeldConnection::finish`].
    async fn start(&self) -> Result<MutexGuard<'_, Option<Clean>>, DbErr> {
        self.held.stats.count();
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            let kept = self.held.take().await?;
            *slot = Some(Clean {
                kept,
                in_statement: false,
            });
        }
        if let Some(clean) = slot.as_mut() {
            clean.in_statement = true;
        }
        Ok(slot)
    }

    /// Ends an exchange: a connection that failed for another reason than a
    /// refusal by the database goes back to the pool, whose ping checks it.
    fn finish<T>(
        slot: &mut Option<Clean>,
        result: Result<T, sea_orm::sqlx::Error>,
    ) -> Result<T, DbErr> {
        match result {
            Ok(value) => {
                if let Some(clean) = slot.as_mut() {
                    clean.in_statement = false;
                }
                Ok(value)
            }
            Err(err) => {
                if matches!(err, sea_orm::sqlx::Error::Database(_)) {
                    if let Some(clean) = slot.as_mut() {
                        clean.in_statement = false;
                    }
                } else {
                    slot.take();
                }
                Err(sqlx_err(err))
            }
        }
    }
}

/// `stmt` as a sqlx query.
fn query(stmt: &Statement) -> sea_orm::sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(Values(Vec::new()));
    sea_orm::sqlx::query_with(
        sea_orm::sqlx::AssertSqlSafe(stmt.sql.as_str()),
        SqlxValues(values),
    )
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        let Some(clean) = self.conn.get_mut().take() else {
            return;
        };
        if clean.in_statement || clean.kept.since.elapsed() > MAX_HELD {
            // Dropped inside an exchange, or held long enough: the pool's
            // ping sorts it out.
            return;
        }
        self.held.keep(clean.kept);
    }
}

fn sqlx_err(err: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

/// The pool's `$method` for `Hot::Pool`; for `Hot::Held`, `$run` with the
/// statement as a sqlx query and the held connection, between
/// `HeldConnection::start` and `finish`.
macro_rules! on_held {
    ($self:ident, $stmt:ident, $method:ident, |$query:ident, $conn:ident| $run:expr) => {{
        let held = match $self {
            Hot::Pool(conn) => return conn.$method($stmt).await,
            Hot::Held(held) => held,
        };
        let mut slot = held.start().await?;
        let $conn = &mut *slot.as_mut().expect("started").kept.conn;
        let $query = query(&$stmt);
        let result = $run;
        HeldConnection::finish(&mut slot, result)
    }};
}

#[sea_orm::prelude::async_trait::async_trait]
impl ConnectionTrait for Hot<'_> {
    fn get_database_backend(&self) -> DatabaseBackend {
        match self {
            Hot::Pool(conn) => conn.get_database_backend(),
            Hot::Held(_) => DatabaseBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        on_held!(self, stmt, execute_raw, |query, conn| query
            .execute(conn)
            .await
            .map(ExecResult::from))
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Hot::Pool(conn) => conn.execute_unprepared(sql).await,
            Hot::Held(_) => Err(DbErr::Custom(
                "unprepared statements go through the pool".into(),
            )),
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        on_held!(self, stmt, query_one_raw, |query, conn| query
            .fetch_optional(conn)
            .await
            .map(|row| row.map(QueryResult::from)))
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        on_held!(self, stmt, query_all_raw, |query, conn| query
            .fetch_all(conn)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect()))
    }
}
