//! The subscriptions of DESIGN.md: thin wrappers over `delivery::subscription`.

use std::sync::{Arc, Mutex};

use async_graphql::{Context, Result, Subscription};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::types::event::Event;
use super::types::run::ScenarioRun;
use super::types::service_ctx;
use crate::delivery::Hub;
use crate::delivery::subscription::{self, EventsRequest};
use crate::entity::event_instance;

/// The root of every subscription.
pub struct SubscriptionRoot;

/// The event behind the response an `events` subscription produced last:
/// set by the stream when it yields, read by the transport right after, so
/// that it can serialize each event once for every subscriber.
#[derive(Clone, Default)]
pub struct LastEvent(Arc<Mutex<Option<Arc<event_instance::Model>>>>);

impl LastEvent {
    /// The event of the latest response, if it was an `events` item.
    pub fn take(&self) -> Option<Arc<event_instance::Model>> {
        self.0.lock().expect("last event poisoned").take()
    }

    fn set(&self, event: &Arc<event_instance::Model>) {
        *self.0.lock().expect("last event poisoned") = Some(event.clone());
    }
}

fn hub<'a>(ctx: &Context<'a>) -> &'a Arc<Hub> {
    ctx.data_unchecked::<Arc<Hub>>()
}

#[Subscription]
impl SubscriptionRoot {
    /// The events of a run as they commit. With `engineId`: first that
    /// engine's backlog (events routed to it and not yet recorded by it, or
    /// failed below `maxAttempts`), most urgent first, then live events
    /// routed to it. With `afterSequence`: every event after it in sequence
    /// order, then live ones. With neither: live events only. Live events
    /// wait in a priority queue, so a slow reader gets the most urgent one
    /// next. Completes after the status change that closes the run.
    async fn events(
        &self,
        ctx: &Context<'_>,
        run_id: Uuid,
        engine_id: Option<Uuid>,
        event_types: Option<Vec<String>>,
        min_priority: Option<i32>,
        after_sequence: Option<i64>,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let request = EventsRequest {
            run_id,
            engine_id,
            event_types,
            min_priority,
            after_sequence,
        };
        // Boxed: async-graphql keeps this resolver's future inline beside the
        // stream for the subscription's whole life, so the setup's database
        // reads would otherwise stay allocated in every idle subscription.
        let stream = Box::pin(subscription::events(service_ctx(ctx), hub(ctx), request)).await?;
        let last = ctx.data_opt::<LastEvent>().cloned();
        Ok(stream.map(move |item| {
            if let (Ok(event), Some(last)) = (&item, &last) {
                last.set(event);
            }
            item.map(Event).map_err(Into::into)
        }))
    }

    /// The run after each status or relationship change, until it closes.
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
