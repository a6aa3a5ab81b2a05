//! The cross-replica doorbell on PostgreSQL: NOTIFY after commit from one
//! dedicated connection, coalesced per run, and one LISTEN connection that
//! rings this process's feeds, re-established (followed by a catch-up) when
//! it is lost. NOTIFY stays out of the publishing transactions: PostgreSQL
//! serializes the commits of notifying transactions on one lock.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnection, PgListener};
use sea_orm::sqlx::{self, Connection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Hub;

/// The channel every replica listens on.
pub const CHANNEL: &str = "scenario_hub_events";

/// Sends one NOTIFY per run for each burst of commits, carrying the
/// highest sequence of the burst as `run_id:sequence`.
pub async fn send_notifications(
    url: String,
    mut commits: mpsc::UnboundedReceiver<(Uuid, i64)>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    loop {
        let first = tokio::select! {
            first = commits.recv() => match first { Some(first) => first, None => return },
            () = shutdown.cancelled() => return,
        };
        let mut burst: HashMap<Uuid, i64> = HashMap::from([first]);
        while let Ok((run, sequence)) = commits.try_recv() {
            let entry = burst.entry(run).or_insert(sequence);
            *entry = (*entry).max(sequence);
        }
        // A failed NOTIFY only delays the other replicas until their periodic check.
        for attempt in 0..2 {
            if conn.is_none() {
                match PgConnection::connect(&url).await {
                    Ok(c) => conn = Some(c),
                    Err(err) => {
                        tracing::warn!(error = %err, "NOTIFY connection failed");
                        break;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match notify(c, &burst).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "NOTIFY failed, reconnecting");
                    conn = None;
                }
            }
        }
    }
}

async fn notify(conn: &mut PgConnection, burst: &HashMap<Uuid, i64>) -> Result<(), sqlx::Error> {
    for (run, sequence) in burst {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{run}:{sequence}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Listens for other replicas' commits and rings the local feeds. A lost
/// connection is re-established, then every watched run is checked, so
/// nothing committed meanwhile waits for the periodic check.
pub async fn listen(url: String, hub: Weak<Hub>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut listener = match connect(&url).await {
            Ok(listener) => {
                backoff = Duration::from_millis(50);
                listener
            }
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed, retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Anything committed while we were not listening.
        match hub.upgrade() {
            Some(hub) => hub.check_all().await,
            None => return,
        }
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = shutdown.cancelled() => return,
            };
            match received {
                Ok(Some(notification)) => {
                    let Some(hub) = hub.upgrade() else { return };
                    if let Some((run, sequence)) = parse(notification.payload()) {
                        hub.ring(run, sequence);
                    }
                }
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost, reconnecting");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "LISTEN connection failed, reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

fn parse(payload: &str) -> Option<(Uuid, i64)> {
    let (run, sequence) = payload.split_once(':')?;
    Some((run.parse().ok()?, sequence.parse().ok()?))
}
