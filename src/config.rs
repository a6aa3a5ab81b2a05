//! Command line and environment configuration: one typed struct per
//! subcommand, every field documented, read by clap from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// scenario-hub: the coordination service of multi-agent scenario simulations.
#[derive(Debug, Parser)]
#[command(name = "scenario-hub", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve GraphQL over HTTP.
    Serve(ServeConfig),
    /// Apply pending migrations and exit.
    Migrate(DatabaseConfig),
    /// Print the GraphQL schema (SDL) to standard output.
    Schema,
    /// Create, list and revoke API keys.
    Keys(KeysCommand),
    /// Load a small demo scenario (templates, a RUNNING run with events,
    /// engines with state); running it again changes nothing.
    Demo(DatabaseConfig),
    /// Write a run as JSON Lines (standard output unless --output is given).
    Export(ExportCommand),
    /// Load a run written by `export`, in one transaction.
    Import(ImportCommand),
}

/// `scenario-hub export RUN_ID`.
#[derive(Debug, Clone, Args)]
pub struct ExportCommand {
    /// The database to read.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// The run to export.
    pub run_id: uuid::Uuid,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `scenario-hub import FILE`.
#[derive(Debug, Clone, Args)]
pub struct ImportCommand {
    /// The database to load into.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// An export's file; `-` reads standard input.
    pub file: PathBuf,
}

/// `scenario-hub keys ...`.
#[derive(Debug, Clone, Args)]
pub struct KeysCommand {
    /// The database holding the keys.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// What to do with keys.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// The key actions.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Create a key and print its token once (alone on the last line).
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        role: KeyRole,
        /// A unique name for people.
        #[arg(long)]
        name: String,
    },
    /// List keys: id, name, role, created, revoked.
    List,
    /// Revoke a key at once, its open websockets included.
    Revoke {
        /// The key's name or id.
        name_or_id: String,
    },
}

/// The roles of API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyRole {
    /// Everything.
    Admin,
    /// Read, publish, record, register engines, save their state.
    Engine,
    /// Read and subscribe.
    Viewer,
}

/// Every setting's default, written once: the flags' defaults and the
/// `Default` impls (the configuration tests and embedders use) read these.
pub mod defaults {
    /// Default of `database_url`: a file in the working directory.
    pub const DATABASE_URL: &str = "sqlite://scenario-hub.db";
    /// Default of `bind`: loopback only.
    pub const BIND: &str = "127.0.0.1:8000";
    /// Default of `database_max_connections` on PostgreSQL.
    pub const DATABASE_MAX_CONNECTIONS: u32 = 16;
    /// Default of `shutdown_timeout_ms`.
    pub const SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
    /// Default of `ws_init_timeout_ms`.
    pub const WS_INIT_TIMEOUT_MS: u64 = 10_000;
    /// Default of `ws_ping_interval_ms`.
    pub const WS_PING_INTERVAL_MS: u64 = 10_000;
    /// Default of `ws_pong_timeout_ms`.
    pub const WS_PONG_TIMEOUT_MS: u64 = 10_000;
    /// Default of `delivery_poll_interval_ms`.
    pub const DELIVERY_POLL_INTERVAL_MS: u64 = 2_000;
    /// Default of `delivery_feed_capacity`.
    pub const DELIVERY_FEED_CAPACITY: usize = 256;
    /// Default of `subscription_queue_capacity`.
    pub const SUBSCRIPTION_QUEUE_CAPACITY: usize = 10_000;
    /// Default of `max_body_bytes`.
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Default of `max_payload_bytes`.
    pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
    /// Default of `max_state_bytes`.
    pub const MAX_STATE_BYTES: usize = 1024 * 1024;
    /// Default of `max_batch`.
    pub const MAX_BATCH: usize = 1000;
    /// Default of `max_page_size`.
    pub const MAX_PAGE_SIZE: usize = 500;
    /// Default of `max_query_depth`.
    pub const MAX_QUERY_DEPTH: usize = 16;
    /// Default of `max_query_complexity`.
    pub const MAX_QUERY_COMPLEXITY: usize = 2000;
    /// Default of `max_ws_connections`.
    pub const MAX_WS_CONNECTIONS: usize = 10_000;
    /// Default of `max_subscriptions_per_connection`.
    pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 100;
    /// Default of `max_in_flight`.
    pub const MAX_IN_FLIGHT: usize = 1000;
    /// Default of `ws_send_buffer_bytes`.
    pub const WS_SEND_BUFFER_BYTES: usize = 256 * 1024;
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite://PATH` (created when missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = defaults::DATABASE_URL)]
    pub database_url: String,
    /// Most connections the pool opens [default: 16 on PostgreSQL; on
    /// SQLite four per core, at least 8].
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
}

impl DatabaseConfig {
    /// The pool size: the one configured, or the backend's default. Each
    /// SQLite connection is a worker thread of its own with its own page
    /// cache (~1 MB), and SQLite writes one at a time: far more connections
    /// than cores only contend (on 2 cores a pool of 8 read W1 pages
    /// 30-40% faster than one of 16, with W3's p99 halved).
    pub fn max_connections(&self) -> u32 {
        self.database_max_connections.unwrap_or_else(|| {
            if self.database_url.starts_with("sqlite:") {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                u32::try_from(cores * 4).unwrap_or(u32::MAX).max(8)
            } else {
                defaults::DATABASE_MAX_CONNECTIONS
            }
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = defaults::BIND)]
    pub bind: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve a non-loopback address although no API key exists (anyone who
    /// reaches it may do anything).
    #[arg(long, env = "INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Milliseconds that requests in flight at SIGINT/SIGTERM get to finish
    /// before the process stops anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = defaults::SHUTDOWN_TIMEOUT_MS)]
    pub shutdown_timeout_ms: u64,
    /// Serve GraphiQL's scripts from this folder (holding npm's graphiql@4,
    /// react@18 and react-dom@18 packages, e.g. a node_modules folder)
    /// instead of the ones built into the binary.
    #[arg(long, env = "GRAPHIQL_ASSETS")]
    pub graphiql_assets: Option<PathBuf>,
    /// Request and data limits.
    #[command(flatten)]
    pub limits: Limits,
    /// Websocket and delivery timing.
    #[command(flatten)]
    pub realtime: Realtime,
}

/// Websocket protocol timing and event delivery tuning.
#[derive(Debug, Clone, Args)]
pub struct Realtime {
    /// Milliseconds a websocket may take to send `connection_init` (then 4408).
    #[arg(long, env = "WS_INIT_TIMEOUT_MS", default_value_t = defaults::WS_INIT_TIMEOUT_MS)]
    pub ws_init_timeout_ms: u64,
    /// Milliseconds of silence after which the server pings a websocket.
    #[arg(long, env = "WS_PING_INTERVAL_MS", default_value_t = defaults::WS_PING_INTERVAL_MS)]
    pub ws_ping_interval_ms: u64,
    /// Milliseconds a client has to answer a ping before it is dropped.
    #[arg(long, env = "WS_PONG_TIMEOUT_MS", default_value_t = defaults::WS_PONG_TIMEOUT_MS)]
    pub ws_pong_timeout_ms: u64,
    /// Milliseconds between checks of every watched run's last sequence: the
    /// most a lost doorbell can delay delivery.
    #[arg(long, env = "DELIVERY_POLL_INTERVAL_MS", default_value_t = defaults::DELIVERY_POLL_INTERVAL_MS)]
    pub delivery_poll_interval_ms: u64,
    /// Batches of new events a run's feed keeps for slow subscribers; one
    /// that falls further behind reads the gap from the database.
    #[arg(long, env = "DELIVERY_FEED_CAPACITY", default_value_t = defaults::DELIVERY_FEED_CAPACITY)]
    pub delivery_feed_capacity: usize,
    /// Events one subscription holds in memory; past that it reads later
    /// events from the database when the client catches up.
    #[arg(long, env = "SUBSCRIPTION_QUEUE_CAPACITY", default_value_t = defaults::SUBSCRIPTION_QUEUE_CAPACITY)]
    pub subscription_queue_capacity: usize,
}

impl Default for Realtime {
    fn default() -> Self {
        Realtime {
            ws_init_timeout_ms: defaults::WS_INIT_TIMEOUT_MS,
            ws_ping_interval_ms: defaults::WS_PING_INTERVAL_MS,
            ws_pong_timeout_ms: defaults::WS_PONG_TIMEOUT_MS,
            delivery_poll_interval_ms: defaults::DELIVERY_POLL_INTERVAL_MS,
            delivery_feed_capacity: defaults::DELIVERY_FEED_CAPACITY,
            subscription_queue_capacity: defaults::SUBSCRIPTION_QUEUE_CAPACITY,
        }
    }
}

/// Limits on what one client may send or ask for (DESIGN.md's defaults).
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest event payload (serialized JSON), in bytes.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = defaults::MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
    /// Largest engine state (serialized JSON), in bytes.
    #[arg(long, env = "MAX_STATE_BYTES", default_value_t = defaults::MAX_STATE_BYTES)]
    pub max_state_bytes: usize,
    /// Most events in one `publishEvents` call or one `completeEvent` emit list.
    #[arg(long, env = "MAX_BATCH", default_value_t = defaults::MAX_BATCH)]
    pub max_batch: usize,
    /// Largest `first` of a connection.
    #[arg(long, env = "MAX_PAGE_SIZE", default_value_t = defaults::MAX_PAGE_SIZE)]
    pub max_page_size: usize,
    /// Deepest query nesting.
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = defaults::MAX_QUERY_DEPTH)]
    pub max_query_depth: usize,
    /// Highest query complexity (every field, aliases included, counts).
    #[arg(long, env = "MAX_QUERY_COMPLEXITY", default_value_t = defaults::MAX_QUERY_COMPLEXITY)]
    pub max_query_complexity: usize,
    /// Most open websocket connections per server.
    #[arg(long, env = "MAX_WS_CONNECTIONS", default_value_t = defaults::MAX_WS_CONNECTIONS)]
    pub max_ws_connections: usize,
    /// Most subscriptions on one websocket connection.
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    pub max_subscriptions_per_connection: usize,
    /// Highest `maxInFlight` of an engine subscription.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = defaults::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Bytes a websocket connection may hold past its subscriptions'
    /// priority queues (its writer queue and the socket's send buffer): a
    /// bound in bytes keeps priority and fairness for large payloads.
    #[arg(long, env = "WS_SEND_BUFFER_BYTES", default_value_t = defaults::WS_SEND_BUFFER_BYTES)]
    pub ws_send_buffer_bytes: usize,
    /// Saved states kept per engine: `all`, or the last N (at least 1).
    #[arg(long, env = "STATE_HISTORY", default_value_t = StateHistory::All)]
    pub state_history: StateHistory,
}

/// How many saved states of each engine the timeline keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateHistory {
    /// Every version.
    #[default]
    All,
    /// The newest N versions.
    Last(std::num::NonZeroU32),
}

impl std::fmt::Display for StateHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateHistory::All => f.write_str("all"),
            StateHistory::Last(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for StateHistory {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("all") {
            return Ok(StateHistory::All);
        }
        text.parse()
            .map(StateHistory::Last)
            .map_err(|_| format!("{text:?} is neither `all` nor a count of at least 1"))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_payload_bytes: defaults::MAX_PAYLOAD_BYTES,
            max_state_bytes: defaults::MAX_STATE_BYTES,
            max_batch: defaults::MAX_BATCH,
            max_page_size: defaults::MAX_PAGE_SIZE,
            max_query_depth: defaults::MAX_QUERY_DEPTH,
            max_query_complexity: defaults::MAX_QUERY_COMPLEXITY,
            max_ws_connections: defaults::MAX_WS_CONNECTIONS,
            max_subscriptions_per_connection: defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            ws_send_buffer_bytes: defaults::WS_SEND_BUFFER_BYTES,
            state_history: StateHistory::All,
        }
    }
}

impl ServeConfig {
    /// A configuration for `database_url` with every other setting at its default.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        ServeConfig {
            database: DatabaseConfig {
                database_url: database_url.into(),
                database_max_connections: None,
            },
            bind: defaults::BIND.parse().expect("the default address parses"),
            log_format: LogFormat::Text,
            insecure_no_auth: false,
            graphiql_assets: None,
            shutdown_timeout_ms: defaults::SHUTDOWN_TIMEOUT_MS,
            limits: Limits::default(),
            realtime: Realtime::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn serve_defaults_to_the_embedded_database_on_loopback() {
        // clap reads the environment too: only check what no variable overrides.
        let cli = Cli::try_parse_from(["scenario-hub", "serve"]).expect("parses");
        let Command::Serve(config) = cli.command else {
            panic!("serve parses as Serve");
        };
        if std::env::var_os("DATABASE_URL").is_none() {
            assert_eq!(config.database.database_url, "sqlite://scenario-hub.db");
        }
        if std::env::var_os("BIND").is_none() {
            assert_eq!(config.bind.to_string(), "127.0.0.1:8000");
        }
        assert_eq!(config.limits.max_page_size, 500);
        assert_eq!(config.limits.max_query_depth, 16);
        assert_eq!(config.limits.max_query_complexity, 2000);
    }

    #[test]
    fn the_pool_size_defaults_by_backend() {
        let config = |url: &str, size: Option<u32>| super::DatabaseConfig {
            database_url: url.to_owned(),
            database_max_connections: size,
        };
        assert_eq!(config("postgres://h/db", None).max_connections(), 16);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        assert_eq!(
            config("sqlite://hub.db", None).max_connections(),
            (cores * 4).max(8)
        );
        assert_eq!(config("sqlite://hub.db", Some(9)).max_connections(), 9);
        assert_eq!(config("postgres://h/db", Some(3)).max_connections(), 3);
    }
}
