//! Wiring and running: open the database, migrate, build the schema, serve
//! until the shutdown future resolves. Tests and `main` start it the same way.

use std::future::Future;

use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::db::Db;
use crate::graphql::build_schema;
use crate::http::{AppState, router};
use crate::service::Ctx;

/// Startup and serving failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A migrated database and a built schema, ready to serve.
pub struct App {
    state: AppState,
}

impl App {
    /// Opens the database of `config`, applies pending migrations and builds the schema.
    pub async fn new(config: &ServeConfig) -> Result<App, BoxError> {
        let db = Db::connect(&config.database).await?;
        db.migrate().await?;
        let ctx = Ctx::new(db, config.limits.clone());
        let schema = build_schema(Some(ctx.clone()), &config.limits);
        Ok(App {
            state: AppState { schema, ctx },
        })
    }

    /// The service context (tests read its statement counter).
    pub fn ctx(&self) -> &Ctx {
        &self.state.ctx
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight
    /// requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.state);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Runs `serve` as the command line asked: bind, serve, stop on SIGINT or SIGTERM.
pub async fn run(config: ServeConfig) -> Result<(), BoxError> {
    let app = App::new(&config).await?;
    let listener = TcpListener::bind(config.bind).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        graphiql = %format!("http://{}/graphiql", listener.local_addr()?),
        "scenario-hub listening"
    );
    app.serve(listener, shutdown_signal()).await?;
    tracing::info!("scenario-hub stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
