//! Opening the database: pool settings per backend, SQLite's WAL mode and
//! busy timeout, the statement counter, and the start of write transactions.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::DatabaseConfig;

mod held;

pub use held::Hot;

/// Counters about the statements sent to the database.
#[derive(Debug, Default)]
pub struct DbStats {
    /// Statements executed since start, transactions' included; tests use it
    /// to prove that nested fields are batched.
    statements: AtomicU64,
}

impl DbStats {
    /// Statements executed since the pool was opened.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }
}

/// The pool and what we know about it.
#[derive(Debug, Clone)]
pub struct Db {
    /// The SeaORM connection pool.
    pub conn: DatabaseConnection,
    /// Statement counters, shared with the pool's metric callback.
    pub stats: Arc<DbStats>,
    /// SQLite only: writers of this process queue here, in order, rather
    /// than in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ms
    /// ... between tries and so turns a short queue into tens of milliseconds.
    write_gate: Option<Arc<Mutex<()>>>,
    /// PostgreSQL only: connections kept for hot single statements, out of
    /// the pool's ping on release (see `held`).
    held: Option<Arc<held::Held>>,
}

/// A write transaction, holding this process's SQLite write turn (if any)
/// until it ends. Derefs to the transaction.
pub struct WriteTxn {
    // Declared first: dropped (rolled back) before the turn passes on.
    txn: DatabaseTransaction,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTxn {
    /// Commits the transaction, then passes the write turn on.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl Db {
    /// Opens the pool for `config`; a SQLite file is created when missing.
    pub async fn connect(config: &DatabaseConfig) -> Result<Db, DbErr> {
        let url = &config.database_url;
        let mut options = ConnectOptions::new(url.clone());
        options
            .max_connections(config.max_connections())
            .acquire_timeout(Duration::from_secs(30))
            // sqlx pings every connection it hands out: a round trip per
            // request. Only connections idle this long are checked first.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // Validate the URL now: the mapping closure below cannot fail.
            SqliteConnectOptions::from_str(url).map_err(|e| {
                DbErr::Conn(sea_orm::RuntimeErr::Internal(format!(
                    "invalid SQLite URL: {e}"
                )))
            })?;
            // WAL lets readers run beside the writer; the busy timeout makes a
            // second writer wait for the lock instead of failing at once.
            options.map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
            });
        }
        if url.starts_with("postgres") {
            // The server's statements are short and many: JIT compiling one
            // (PostgreSQL does past an estimated cost of 100,000, which the
            // engine window's priority read reaches on a large run) takes
            // ~20 ms against the statement's ~1 ms.
            options.map_sqlx_postgres_opts(|opts| opts.options([("jit", "off")]));
        }
        let mut conn = Database::connect(options).await.map_err(|err| {
            let cause = match &err {
                DbErr::Conn(inner) => source_chain(inner),
                other => source_chain(other),
            };
            DbErr::Conn(sea_orm::RuntimeErr::Internal(format!(
                "cannot connect to the database at {}: {cause}",
                without_password(url)
            )))
        })?;
        let stats = Arc::new(DbStats::default());
        let counter = stats.clone();
        conn.set_metric_callback(move |_info| counter.count());
        let write_gate = (conn.get_database_backend() == DatabaseBackend::Sqlite)
            .then(|| Arc::new(Mutex::new(())));
        // Half the pool at most stays held: transactions and the rest
        // always find connections in the pool.
        let held = (conn.get_database_backend() == DatabaseBackend::Postgres).then(|| {
            let keep = (config.max_connections() as usize / 2).max(1);
            let pool = conn.get_postgres_connection_pool().clone();
            Arc::new(held::Held::new(pool, keep, stats.clone()))
        });
        Ok(Db {
            conn,
            stats,
            write_gate,
            held,
        })
    }

    /// Applies every pending migration. On SQLite they run in one
    /// transaction, on one connection: across the pool, a connection that
    /// last read the schema before a table was rebuilt may still see the
    /// old table, and a failed migration leaves nothing half done.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        if self.conn.get_database_backend() != DatabaseBackend::Sqlite {
            return Migrator::up(&self.conn, None).await;
        }
        let txn = self.conn.begin().await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await
    }

    /// Rolls the last `steps` migrations back (all when none), as
    /// [`Db::migrate`], in one transaction on SQLite; the migration tests'
    /// way down.
    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<(), DbErr> {
        if self.conn.get_database_backend() != DatabaseBackend::Sqlite {
            return Migrator::down(&self.conn, steps).await;
        }
        let txn = self.conn.begin().await?;
        Migrator::down(&txn, steps).await?;
        txn.commit().await
    }

    /// A connection for a hot single statement (or a few in a row, outside a
    /// transaction): on PostgreSQL one held out of the pool's release ping.
    pub fn hot(&self) -> Hot<'_> {
        match &self.held {
            Some(held) => Hot::held(held.clone()),
            None => Hot::Pool(&self.conn),
        }
    }

    /// The backend behind the pool.
    pub fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    /// Starts a transaction that will write. On SQLite it waits for this
    /// process's write turn, then takes the write lock at BEGIN (IMMEDIATE):
    /// a writer never fails when it upgrades from reading to writing, and
    /// another process's writer is waited for by the busy timeout.
    pub async fn begin_write(&self) -> Result<WriteTxn, DbErr> {
        let turn = self.write_turn().await;
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let txn = self.conn.begin_with_options(options).await?;
        Ok(WriteTxn { txn, _turn: turn })
    }

    /// Waits for this process's SQLite write turn (none on PostgreSQL).
    /// Most single-statement writes do not take it: their lock lasts one
    /// step on SQLite's thread, and queueing them here (a pool checkout and
    /// two thread hops each, one at a time) halved `saveEngineState`'s rate.
    /// A write that runs beside record transactions (a lease claim) takes
    /// it: otherwise it meets their lock and sleeps in the busy handler.
    pub async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        }
    }

    /// How many pooled connections are open, idle, and allowed.
    pub fn pool_use(&self) -> crate::metrics::PoolUse {
        match self.backend() {
            DatabaseBackend::Postgres => {
                let pool = self.conn.get_postgres_connection_pool();
                crate::metrics::PoolUse {
                    size: pool.size(),
                    idle: pool.num_idle() as u32,
                    max: pool.options().get_max_connections(),
                }
            }
            _ => {
                let pool = self.conn.get_sqlite_connection_pool();
                crate::metrics::PoolUse {
                    size: pool.size(),
                    idle: pool.num_idle() as u32,
                    max: pool.options().get_max_connections(),
                }
            }
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.ping().await
    }
}

/// How PostgreSQL must plan a transaction's statements whatever its
/// statistics say. A new database, or a new run far longer than the
/// table's average, has none that describe it (autovacuum analyzes a minute
/// or more later), and PostgreSQL's guesses then read whole tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// Statements that look rows up by lists of keys, for which an index
    /// is always right: no sequential scans. Without statistics a list of
    /// a hundred ids is reckoned to match half the table, and its prepared
    /// plan (a scan) was kept as the table grew: ~10 ms a batch and rising.
    KeyLookups,
    /// Reads that check each row against a rule of a few index probes and
    /// stop at a limit: rows in index order, no bitmap scan and sort. A run
    /// reckoned small was read whole and sorted, ~60 ms on 50,000 events
    /// against 0.5 ms in index order.
    IndexOrder,
}

/// Sets `plans` for the rest of `txn` (PostgreSQL; nothing on SQLite,
/// whose planner does not guess from statistics this way).
pub async fn plan<C: ConnectionTrait>(txn: &C, plans: Plans) -> Result<(), DbErr> {
    if txn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let settings = match plans {
        Plans::KeyLookups => "SELECT set_config('enable_seqscan', 'off', true)",
        Plans::IndexOrder => {
            "SELECT set_config('enable_sort', 'off', true), \
                    set_config('enable_bitmapscan', 'off', true)"
        }
    };
    txn.execute_unprepared(settings).await?;
    Ok(())
}

/// `url` with its password, if any, replaced by `***`, for messages.
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    let shown = if userinfo.contains(':') {
        format!("{user}:***@{host}")
    } else {
        format!("{user}@{host}")
    };
    format!("{}{shown}{}", &url[..scheme_end], &url[authority_end..])
}

/// `err` and each of its sources not already in its message: a refused TLS
/// handshake says why only in a source.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Runs `sql` on `conn`, with its parameters written `$1`, `$2`, ... as
/// PostgreSQL has them (SQLite reads them as `?1`, `?2`, ...): for the
/// set-based statements the query builder cannot express.
pub async fn execute_sql<C: sea_orm::ConnectionTrait>(
    conn: &C,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => sql.to_owned(),
        _ => sql.replace('$', "?"),
    };
    let result = conn
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            without_password("postgres://app:s3cret@db.example:5432/hub?sslmode=require"),
            "postgres://app:***@db.example:5432/hub?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://app@db/hub"),
            "postgres://app@db/hub"
        );
        assert_eq!(without_password("sqlite://hub.db"), "sqlite://hub.db");
    }
}
