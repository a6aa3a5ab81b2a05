//! The subscriptions of DESIGN.md: thin wrappers over `delivery::subscription`.

use std::sync::{Arc, Mutex};

use async_graphql::{Context, Result, Subscription};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::types::event::Event;
use super::types::run::ScenarioRun;
use super::types::service_ctx;
use crate::delivery::Hub;
use crate::delivery::subscription::{self, Delivered, EventsRequest};

/// The root of every subscription.
pub struct SubscriptionRoot;

/// The event behind the response an `events` subscription produced last:
/// set by the stream when it yields, read by the transport right after, so
/// that it can serialize each event once for every subscriber.
#[derive(Clone, Default)]
pub struct LastEvent(Arc<Mutex<Option<Delivered>>>);

impl LastEvent {
    /// The event of the latest response, if it was an `events` item.
    pub fn take(&self) -> Option<Delivered> {
        self.0.lock().expect("last event poisoned").take()
    }

    fn set(&self, delivered: &Delivered) {
        *self.0.lock().expect("last event poisoned") = Some(delivered.clone());
    }
}

fn hub<'a>(ctx: &Context<'a>) -> &'a Arc<Hub> {
    ctx.data_unchecked::<Arc<Hub>>()
}

#[Subscription]
impl SubscriptionRoot {
    /// The events of a run as they commit. With `engineId`: the events
    /// pending for that engine, most urgent first, at most `maxInFlight`
    /// (default 1) unrecorded at once: each record lets the next most
    /// urgent one go. Each is leased (`Event.delivery`) for `leaseSeconds`
    /// (default: its type's); an expired or released lease sends the event
    /// again. With `afterSequence`: every event after it in sequence order,
    /// then live ones. With neither: live events only. A reader's live
    /// events wait in a priority queue, so a slow reader gets the most
    /// urgent one next. Completes once the run is closed (for an engine:
    /// and nothing is left pending or in flight).
    // The arguments are DESIGN.md's names; an input object would change the API.
    #[allow(clippy::too_many_arguments)]
    async fn events(
        &self,
        ctx: &Context<'_>,
        run_id: Uuid,
        engine_id: Option<Uuid>,
        event_types: Option<Vec<String>>,
        min_priority: Option<i32>,
        after_sequence: Option<i64>,
        max_in_flight: Option<i32>,
        lease_seconds: Option<i32>,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let request = EventsRequest {
            run_id,
            engine_id,
            event_types,
            min_priority,
            after_sequence,
            max_in_flight,
            lease_seconds,
        };
        // Boxed: async-graphql keeps this resolver's future inline beside the
        // stream for the subscription's whole life, so the setup's database
        // reads would otherwise stay allocated in every idle subscription.
        let stream = Box::pin(subscription::events(service_ctx(ctx), hub(ctx), request)).await?;
        let last = ctx.data_opt::<LastEvent>().cloned();
        Ok(stream.map(move |item| {
            if let (Ok(delivered), Some(last)) = (&item, &last) {
                last.set(delivered);
            }
            item.map(|d| Event(d.event, d.delivery)).map_err(Into::into)
        }))
    }

    /// The run as it is, then after each status or relationship change,
    /// until it closes.
    async fn run_updated(
        &self,
        ctx: &Context<'_>,
        run_id: Uuid,
    ) -> Result<impl Stream<Item = Result<ScenarioRun>> + use<>> {
        let stream = Box::pin(subscription::run_updates(
            service_ctx(ctx),
            hub(ctx),
            run_id,
        ))
        .await?;
        Ok(stream.map(|item| item.map(ScenarioRun).map_err(Into::into)))
    }
}
