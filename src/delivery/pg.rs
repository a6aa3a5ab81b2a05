//! The cross-replica doorbell on PostgreSQL: NOTIFY after commit from one
//! dedicated connection, coalesced per run, and one LISTEN connection that
//! rings this process's feeds, re-established (followed by a catch-up) when
//! it is lost. NOTIFY stays out of the publishing transactions: PostgreSQL
//! serializes the commits of notifying transactions on one lock.
//!
//! A NOTIFY is a transaction of its own, with a transaction id and a commit
//! record: a burst's doorbells go in one statement, so one commit, and that
//! connection commits without waiting for the WAL flush
//! (`synchronous_commit = off`). That is safe because a doorbell only says
//! where to read: what it points at was committed, flushed, before it was
//! rung, and a doorbell lost with a crashed database is made up for by the
//! listeners' catch-up when they reconnect.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnection, PgListener};
use sea_orm::sqlx::{self, Connection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Doorbell, Hub};

/// The channel every replica listens on.
pub const CHANNEL: &str = "scenario_hub_events";

/// Event ids in one record payload: 150 of 37 bytes keep it under
/// PostgreSQL's 8,000-byte NOTIFY limit.
const RECORDS_PER_PAYLOAD: usize = 150;

/// Sends one NOTIFY per run for each burst of commits, carrying the
/// highest sequence of the burst as `replica/run_id:sequence`; records go
/// as `replica/rec:run_id:engine_id:again:event_id,event_id,...` (`again` 1
/// or 0; a batch of records in payloads of at most [`RECORDS_PER_PAYLOAD`]
/// events), released leases as
/// `replica/rel:run_id` (once per run and burst), a changed event type as
/// `replica/types`.
pub async fn send_notifications(
    url: String,
    replica: Uuid,
    mut doorbells: mpsc::UnboundedReceiver<Doorbell>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    loop {
        let first = tokio::select! {
            first = doorbells.recv() => match first { Some(first) => first, None => return },
            () = shutdown.cancelled() => return,
        };
        let mut heads: HashMap<Uuid, i64> = HashMap::new();
        let mut payloads = Vec::new();
        let mut next = Some(first);
        while let Some(doorbell) = next {
            match doorbell {
                Doorbell::Committed { run_id, sequence } => {
                    let head = heads.entry(run_id).or_insert(sequence);
                    *head = (*head).max(sequence);
                }
                Doorbell::Recorded {
                    run_id,
                    engine_id,
                    event_ids,
                    again,
                } => {
                    let again = u8::from(again);
                    // A NOTIFY payload holds at most 8,000 bytes.
                    for chunk in event_ids.chunks(RECORDS_PER_PAYLOAD) {
                        let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
                        payloads.push(format!(
                            "{replica}/rec:{run_id}:{engine_id}:{again}:{}",
                            ids.join(",")
                        ));
                    }
                }
                Doorbell::Released { run_id } => {
                    let payload = format!("{replica}/rel:{run_id}");
                    if !payloads.contains(&payload) {
                        payloads.push(payload);
                    }
                }
                Doorbell::EventTypesChanged => {
                    let payload = format!("{replica}/types");
                    if !payloads.contains(&payload) {
                        payloads.push(payload);
                    }
                }
            }
            next = doorbells.try_recv().ok();
        }
        payloads.extend(
            heads
                .iter()
                .map(|(run, sequence)| format!("{replica}/{run}:{sequence}")),
        );
        // A failed NOTIFY only delays the other replicas until their periodic check.
        for attempt in 0..2 {
            if conn.is_none() {
                match connect_notifier(&url).await {
                    Ok(c) => conn = Some(c),
                    Err(err) => {
                        tracing::warn!(error = %err, "NOTIFY connection failed");
                        break;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match notify(c, &payloads).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "NOTIFY failed, reconnecting");
                    conn = None;
                }
            }
        }
    }
}

/// The notifying connection: its commits do not wait for the WAL flush.
async fn connect_notifier(url: &str) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("SET synchronous_commit TO off")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Sends `payloads` in one statement: one transaction, one commit.
async fn notify(conn: &mut PgConnection, payloads: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// Listens for other replicas' commits and rings the local feeds. A lost
/// connection is re-established, then every watched run is checked, so
/// nothing committed meanwhile waits for the periodic check.
pub async fn listen(
    url: String,
    hub: Weak<Hub>,
    listened: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    // Shutdown drops the loop wherever it waits. Not a `select!` per
    // notification: sqlx's receive future is large (a pool acquire is
    // inside), and a `select!` copied a new one twice for every
    // notification, and every publish notifies (this replica too).
    tokio::select! {
        () = listen_until_dropped(url, hub, listened) => {}
        () = shutdown.cancelled() => {}
    }
}

/// [`listen`]'s loop, ending only when the hub is gone.
async fn listen_until_dropped(url: String, hub: Weak<Hub>, listened: watch::Sender<bool>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = connect(&url).await;
        if connected.is_err() {
            // The server serves meanwhile, reading event types around the cache.
            listened.send_replace(true);
        }
        let mut listener = match connected {
            Ok(listener) => {
                backoff = Duration::from_millis(50);
                listener
            }
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Anything committed or changed while we were not listening.
        match hub.upgrade() {
            Some(hub) => {
                hub.event_types().trust(true);
                listened.send_replace(true);
                hub.check_all().await;
            }
            None => return,
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let Some(hub) = hub.upgrade() else { return };
                    match parse(notification.payload()) {
                        Some((from, _)) if from == hub.replica_id() => {}
                        Some((_, doorbell)) => hub.ring_local(doorbell),
                        None => {
                            tracing::warn!(payload = notification.payload(), "unreadable doorbell")
                        }
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
        // Deaf now to other replicas' changes: read event types around the cache.
        match hub.upgrade() {
            Some(hub) => hub.event_types().trust(false),
            None => return,
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Reads a doorbell and the replica that sent it.
fn parse(payload: &str) -> Option<(Uuid, Doorbell)> {
    let (replica, payload) = payload.split_once('/')?;
    let replica = replica.parse().ok()?;
    if let Some(record) = payload.strip_prefix("rec:") {
        let mut parts = record.split(':');
        let doorbell = Doorbell::Recorded {
            run_id: parts.next()?.parse().ok()?,
            engine_id: parts.next()?.parse().ok()?,
            again: match parts.next()? {
                "1" => true,
                "0" => false,
                _ => return None,
            },
            event_ids: parts
                .next()?
                .split(',')
                .map(|id| id.parse().ok())
                .collect::<Option<Vec<Uuid>>>()?
                .into(),
        };
        return Some((replica, doorbell));
    }
    if payload == "types" {
        return Some((replica, Doorbell::EventTypesChanged));
    }
    if let Some(run) = payload.strip_prefix("rel:") {
        let doorbell = Doorbell::Released {
            run_id: run.parse().ok()?,
        };
        return Some((replica, doorbell));
    }
    let (run, sequence) = payload.split_once(':')?;
    let doorbell = Doorbell::Committed {
        run_id: run.parse().ok()?,
        sequence: sequence.parse().ok()?,
    };
    Some((replica, doorbell))
}

#[cfg(test)]
mod tests {
    use super::{Doorbell, parse};
    use uuid::Uuid;

    #[test]
    fn doorbells_read_back() {
        let (replica, run, event, engine) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        assert_eq!(
            parse(&format!("{replica}/{run}:42")),
            Some((
                replica,
                Doorbell::Committed {
                    run_id: run,
                    sequence: 42
                }
            ))
        );
        let other = Uuid::new_v4();
        assert_eq!(
            parse(&format!("{replica}/rec:{run}:{engine}:1:{event},{other}")),
            Some((
                replica,
                Doorbell::Recorded {
                    run_id: run,
                    engine_id: engine,
                    event_ids: vec![event, other].into(),
                    again: true,
                }
            ))
        );
        assert_eq!(
            parse(&format!("{replica}/rec:{run}:{engine}:0:{event}")),
            Some((
                replica,
                Doorbell::Recorded {
                    run_id: run,
                    engine_id: engine,
                    event_ids: vec![event].into(),
                    again: false,
                }
            ))
        );
        assert_eq!(parse(&format!("{replica}/rec:{run}:{engine}:1")), None);
        assert_eq!(
            parse(&format!("{replica}/rec:{run}:{engine}:1:{event},x")),
            None
        );
        assert_eq!(
            parse(&format!("{replica}/rel:{run}")),
            Some((replica, Doorbell::Released { run_id: run }))
        );
        assert_eq!(
            parse(&format!("{replica}/types")),
            Some((replica, Doorbell::EventTypesChanged))
        );
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(&format!("{replica}/{run}:x")), None);
    }
}
