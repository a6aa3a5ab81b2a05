//! Wiring and running: open the database, migrate, start delivery, build the
//! schema, serve until the shutdown future resolves. Tests and `main` start
//! it the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::db::Db;
use crate::delivery::{DeliveryConfig, Hub};
use crate::graphql::execution::Executor;
use crate::graphql::{AppSchemaBuilder, build_schema_with};
use crate::http::{AppState, GraphiqlAssets, RenderCache, Shared, WsSettings, router};
use crate::service::Ctx;

/// Startup and serving failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A migrated database, a running delivery hub and a built schema, ready to serve.
pub struct App {
    state: AppState,
    /// Event delivery: shutdown waits for it to settle.
    hub: Arc<Hub>,
    /// Cancelled on shutdown: stops delivery and closes every websocket (1001).
    shutdown: CancellationToken,
}

impl App {
    /// Opens the database of `config`, applies pending migrations, starts
    /// delivery and builds the schema.
    pub async fn new(config: &ServeConfig) -> Result<App, BoxError> {
        Self::with_schema(config, |builder| builder).await
    }

    /// [`App::new`], with `customize` applied to the schema builder.
    pub async fn with_schema(
        config: &ServeConfig,
        customize: impl FnOnce(AppSchemaBuilder) -> AppSchemaBuilder,
    ) -> Result<App, BoxError> {
        let graphiql = match &config.graphiql_assets {
            Some(dir) => GraphiqlAssets::local(dir)?,
            None => GraphiqlAssets::Embedded,
        };
        let db = Db::connect(&config.database).await?;
        db.migrate().await?;
        let shutdown = CancellationToken::new();
        let delivery = DeliveryConfig {
            poll_interval: Duration::from_millis(config.realtime.delivery_poll_interval_ms),
            feed_capacity: config.realtime.delivery_feed_capacity.max(1),
            queue_capacity: config.realtime.subscription_queue_capacity.max(1),
            ..DeliveryConfig::default()
        };
        let ctx = Ctx::new(db.clone(), config.limits.clone());
        let hub = Hub::start(
            db,
            &config.database.database_url,
            delivery,
            ctx.event_types.clone(),
            shutdown.clone(),
        );
        hub.listening().await;
        let ctx = ctx.with_listener(hub.clone());
        let schema = build_schema_with(Some((ctx.clone(), hub.clone())), &config.limits, customize);
        let ws = WsSettings::new(&config.realtime, &config.limits);
        Ok(App {
            state: AppState::new(Shared {
                graphql: Executor::new(schema, ctx.metrics.clone(), hub.clone()),
                ctx,
                ws: Arc::new(ws),
                shutdown: shutdown.clone(),
                renders: Arc::new(RenderCache::default()),
                graphiql,
            }),
            hub,
            shutdown,
        })
    }

    /// Cancelling it stops delivery and closes every websocket, as shutdown does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The websocket render cache (tests read its counts).
    pub fn renders(&self) -> Arc<RenderCache> {
        self.state.renders.clone()
    }

    /// The service context (tests read its statement counter).
    pub fn ctx(&self) -> &Ctx {
        &self.state.ctx
    }

    /// Serves on `listener` until `shutdown` resolves; then websockets are
    /// closed with 1001 and in-flight requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = self.shutdown.clone();
        let hub = self.hub.clone();
        let send_buffer =
            crate::http::socket_send_buffer(self.state.ctx.limits.ws_send_buffer_bytes);
        let app = router(self.state);
        // Without TCP_NODELAY a small write (a websocket message, a short
        // response) that follows unacknowledged data waits for the peer's
        // delayed ACK: up to 40 ms on Linux, the whole tail of fan-out latency.
        let listener = listener.tap_io(move |tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY");
            }
            // A fixed send buffer: on loopback the kernel would grow it to
            // megabytes, and whatever waits there is out of priority order
            // (part of WS_SEND_BUFFER_BYTES; the writer's queue holds the rest).
            if let Err(err) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                tracing::debug!(error = %err, "could not set SO_SNDBUF");
            }
        });
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                token.cancel();
            })
            .await;
        self.shutdown.cancel();
        // Ended engine subscriptions release their leases: let them finish.
        hub.settle(Duration::from_secs(5)).await;
        result
    }
}

/// Runs `serve` as the command line asked: bind, serve, stop on SIGINT or SIGTERM.
pub async fn run(config: ServeConfig) -> Result<(), BoxError> {
    let app = App::new(&config).await?;
    // Without keys the server is open: only this machine may reach it.
    if !config.bind.ip().is_loopback()
        && !config.insecure_no_auth
        && !app.ctx().keys.any(app.ctx()).await?
    {
        return Err(format!(
            "refusing to listen on {} without API keys: anyone who reaches it could do anything. \
             Create a key first (scenario-hub keys create --role admin --name NAME), \
             bind a loopback address, or pass --insecure-no-auth",
            config.bind
        )
        .into());
    }
    let signals = ShutdownSignals::install()?;
    let listener = TcpListener::bind(config.bind).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        graphiql = %format!("http://{}/graphiql", listener.local_addr()?),
        "scenario-hub listening"
    );
    // A client that never finishes its request must not hold the process:
    // once signalled, in-flight requests get `shutdown_timeout_ms`.
    let (signalled, mut signal_seen) = tokio::sync::oneshot::channel();
    let serving = app.serve(listener, async move {
        signals.received().await;
        let _ = signalled.send(());
    });
    let grace = Duration::from_millis(config.shutdown_timeout_ms);
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result?,
        () = async {
            if (&mut signal_seen).await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(
                timeout_ms = config.shutdown_timeout_ms,
                "requests still in flight after the shutdown timeout are cut off"
            );
            // Exit now: tearing the runtime down under the cut requests'
            // tasks and pooled connections gains nothing, and everything
            // committed is already durable.
            std::process::exit(0);
        }
    }
    tracing::info!("scenario-hub stopped");
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is made: a signal that
/// arrives while the server starts is a clean shutdown too, not a kill.
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers now.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
    pub async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    }
}
