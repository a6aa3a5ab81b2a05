//! The pending rule's SQL condition and its in-memory twin agree, on both
//! backends, over every combination of routing, recipients (an engine, a
//! group), leases, backoffs, delivery times and partition keys.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::TimeDelta;
use scenario_hub::entity::{engine_state, event_delivery, event_instance};
use scenario_hub::service::pending::{self, Facts, Scope};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};
use serde_json::json;
use uuid::Uuid;

use crate::both_backends;
use crate::common::{
    Backend, TestServer, event_type, publish, register, register_in_group, scenario,
};

both_backends!(the_pending_rule_and_its_twin_agree);

async fn the_pending_rule_and_its_twin_agree(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "twin").await;
    event_type(&server, "job", json!(null), 0, 2).await;
    let actor = register(&server, &s.run, "ActorEngine").await;
    let idle = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
    let busy = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
    let conn = &server.ctx().db.conn;
    let now = scenario_hub::service::now();
    let past = now - TimeDelta::seconds(60);
    let future = now + TimeDelta::seconds(60);
    let id = |s: &str| -> Uuid { s.parse().unwrap() };
    let (actor_id, idle_id, busy_id) = (id(&actor), id(&idle), id(&busy));
    // `busy` has a subscription open: the keys it had stay with it.
    engine_state::Entity::update_many()
        .col_expr(engine_state::Column::SubscribedUntil, Expr::value(future))
        .filter(engine_state::Column::EngineId.eq(busy_id))
        .exec(conn)
        .await
        .unwrap();
    let group = engine_state::Entity::find_by_id(busy_id)
        .one(conn)
        .await
        .unwrap()
        .unwrap()
        .group_id
        .unwrap();

    // Every routing, delivery time and delivery state, for each recipient
    // (the actor, the group held by one member or the other, a member
    // alone), with partition keys spread over them.
    let routes = [
        json!({}),
        json!({"targetEngineId": actor}),
        json!({"targetEngineId": idle}),
        json!({"targetEngineType": "ActorEngine"}),
        json!({"targetEngineType": "NarratorEngine"}),
    ];
    let times = [None, Some(past), Some(future)];
    type Holds = (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        bool,
    );
    let states: [Option<Holds>; 6] = [
        None,
        Some((Some(future), None, false)),
        Some((Some(past), None, false)),
        Some((None, Some(future), false)),
        Some((None, Some(past), false)),
        Some((None, None, true)),
    ];
    let recipients = [
        (actor_id, actor_id),
        (group, idle_id),
        (group, busy_id),
        (idle_id, idle_id),
    ];
    let keys = [None, Some("k1"), Some("k2")];
    let mut n = 0;
    for route in &routes {
        for time in &times {
            for state in &states {
                for (recipient, holder) in &recipients {
                    n += 1;
                    let mut input = json!({"runId": s.run, "eventType": "job"});
                    for (k, v) in route.as_object().unwrap() {
                        input[k] = v.clone();
                    }
                    if let Some(at) = time {
                        input["deliverAt"] = json!(at.to_rfc3339());
                    }
                    if let Some(key) = keys[n % keys.len()] {
                        input["partitionKey"] = json!(key);
                    }
                    let event = id(publish(&server, input).await["id"].as_str().unwrap());
                    if let Some((lease, not_before, done)) = state {
                        event_delivery::Entity::insert(
                            event_delivery::Model {
                                event_id: event,
                                recipient_id: *recipient,
                                engine_id: Some(*holder),
                                lease_id: Some(Uuid::now_v7()),
                                attempt: 1,
                                lease_expires_at: *lease,
                                not_before: *not_before,
                                done: *done,
                                delivered_at: Some(past),
                                failures: 0,
                            }
                            .into_active_model(),
                        )
                        .exec_without_returning(conn)
                        .await
                        .unwrap();
                    }
                }
            }
        }
    }

    let run = id(&s.run);
    let events = event_instance::Entity::find()
        .filter(event_instance::Column::RunId.eq(run))
        .order_by_asc(event_instance::Column::Sequence)
        .all(conn)
        .await
        .unwrap();
    let deliveries: HashMap<(Uuid, Uuid), event_delivery::Model> = event_delivery::Entity::find()
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|d| ((d.event_id, d.recipient_id), d))
        .collect();
    let subscribed: HashSet<Uuid> = [busy_id].into();
    let engines = engine_state::Entity::find().all(conn).await.unwrap();
    let mut outcomes = (0, 0);
    for engine in &engines {
        for scope in [Scope::Outstanding, Scope::Deliverable] {
            let sql: BTreeSet<Uuid> = event_instance::Entity::find()
                .filter(event_instance::Column::RunId.eq(run))
                .filter(pending::condition(scope, engine, now))
                .all(conn)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect();
            let twin: BTreeSet<Uuid> = events
                .iter()
                .filter(|e| {
                    let earlier: Vec<&event_instance::Model> = events
                        .iter()
                        .filter(|p| {
                            p.partition_key.is_some()
                                && p.partition_key == e.partition_key
                                && p.sequence < e.sequence
                        })
                        .collect();
                    pending::holds(
                        scope,
                        &Facts {
                            event: e,
                            engine,
                            deliveries: &deliveries,
                            earlier: &earlier,
                            subscribed: &subscribed,
                        },
                        now,
                    )
                })
                .map(|e| e.id)
                .collect();
            assert_eq!(sql, twin, "{scope:?} for {}", engine.engine_id);
            outcomes.0 += sql.len();
            outcomes.1 += events.len() - sql.len();
        }
    }
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "both outcomes occurred");
}
