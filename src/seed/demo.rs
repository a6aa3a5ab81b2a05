//! `scenario-hub demo`: a small market-day scenario to explore in GraphiQL.
//! Every step finds what an earlier call made before making it, so running
//! the demo again (or after an interruption) completes it and changes nothing
//! else.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::entity::{
    agent_template as agent_entity, scenario_run, scenario_template as template_entity,
};
use crate::error::{AppError, AppResult};
use crate::service::Ctx;
use crate::service::agent_template::{self, NewAgentTemplate};
use crate::service::auth::Principal;
use crate::service::engine::{self, Registration};
use crate::service::event_type::{self, NewEventType};
use crate::service::publish::{self, NewEvent};
use crate::service::run::{self, NewRun, RunStatus};
use crate::service::scenario_template::{
    self, AgentRole, EventFlow, NewScenarioTemplate, ScenarioConfig,
};

/// The demo is loaded by whoever runs `scenario-hub demo` on the database:
/// the operator, who may do everything.
const OPERATOR: Principal = Principal::OPEN;

/// The demo's scenario template.
pub const TEMPLATE_NAME: &str = "demo-market-day";
/// The demo's run.
pub const RUN_NAME: &str = "market day, first light";

/// The actors: (role, agent template name, instructions).
const ACTORS: [(&str, &str, &str); 3] = [
    (
        "merchant",
        "demo-merchant",
        "Sell spices at a fair price; remember who haggled.",
    ),
    (
        "guard",
        "demo-guard",
        "Keep the peace on the square; trust slowly.",
    ),
    (
        "thief",
        "demo-thief",
        "Lift a purse without being seen; flee if the guard looks.",
    ),
];

/// What the demo made, for the command to print.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The scenario template.
    pub template_id: Uuid,
    /// The RUNNING run.
    pub run_id: Uuid,
    /// The engines registered on the run.
    pub engine_ids: Vec<Uuid>,
    /// Events in the run.
    pub events: i64,
}

/// Loads the demo, or completes an earlier load.
pub async fn load(ctx: &Ctx) -> AppResult<Loaded> {
    let mut agents = Vec::new();
    for (role, name, instructions) in ACTORS {
        let config = json!({
            "role": role, "instructions": instructions,
            "model": "gpt-4o-mini", "tools": ["look", "speak", "move"],
        });
        agents.push(agent(ctx, name, &format!("The {role} of the market."), config).await?);
    }
    let narrator = agent(
        ctx,
        "demo-narrator",
        "Tells the scene as it unfolds.",
        json!({"role": "narrator", "instructions": "Describe the square in two sentences.", "model": "gpt-4o"}),
    )
    .await?;
    let analyst = agent(
        ctx,
        "demo-analyst",
        "Measures how the day goes.",
        json!({"role": "analyst", "instructions": "Score trust and theft after each exchange.", "model": "gpt-4o-mini"}),
    )
    .await?;
    tracing::debug!(%narrator, %analyst, "demo agent templates ready");

    let template_id = template(ctx, &agents).await?;
    for event_type in event_types() {
        if event_type::get(ctx, &event_type.name).await?.is_none() {
            event_type::create(ctx, &OPERATOR, event_type).await?;
        }
    }
    let run_id = running_run(ctx, template_id).await?;

    // Fixed engine ids: registering again returns the engines already there.
    let engines = [
        (
            0x01,
            "ActorEngine",
            json!({"role": "merchant", "mood": "hopeful", "purse": 40}),
        ),
        (
            0x02,
            "ActorEngine",
            json!({"role": "guard", "mood": "watchful", "suspects": []}),
        ),
        (
            0x03,
            "ActorEngine",
            json!({"role": "thief", "mood": "restless", "stolen": 0}),
        ),
        (
            0x04,
            "NarratorEngine",
            json!({"scene": "square", "told": 0}),
        ),
        (0x05, "AnalystEngine", json!({"exchanges": 0, "trust": 0.5})),
    ];
    let mut engine_ids = Vec::new();
    for (n, engine_type, state) in engines {
        let engine_id = Uuid::from_u128(0x5ce0_0000_0000_4000_8000_0000_0000_0000 | n);
        engine::register(
            ctx,
            &OPERATOR,
            Registration {
                engine_id: Some(engine_id),
                run_id,
                engine_type: engine_type.into(),
                state: Some(state),
                group: None,
            },
        )
        .await?;
        engine_ids.push(engine_id);
    }

    // Idempotency keys make a second call publish nothing.
    let inputs = story(run_id, &engine_ids);
    publish::publish(ctx, &OPERATOR, inputs, "demo", |i| format!("demo.{i}")).await?;
    let events = run::get(ctx, run_id)
        .await?
        .map_or(0, |run| run.last_sequence);
    Ok(Loaded {
        template_id,
        run_id,
        engine_ids,
        events,
    })
}

/// The agent template `name`, created when missing.
async fn agent(ctx: &Ctx, name: &str, description: &str, config: Value) -> AppResult<Uuid> {
    let existing = agent_entity::Entity::find()
        .filter(agent_entity::Column::Name.eq(name))
        .one(&ctx.db.conn)
        .await?;
    if let Some(existing) = existing {
        return Ok(existing.id);
    }
    let created = agent_template::create(
        ctx,
        &OPERATOR,
        NewAgentTemplate {
            name: name.into(),
            description: Some(description.into()),
            config: Some(config),
        },
    )
    .await?;
    Ok(created.id)
}

/// The scenario template, every typed key filled, created when missing.
async fn template(ctx: &Ctx, agents: &[Uuid]) -> AppResult<Uuid> {
    let existing = template_entity::Entity::find()
        .filter(template_entity::Column::Name.eq(TEMPLATE_NAME))
        .one(&ctx.db.conn)
        .await?;
    if let Some(existing) = existing {
        return Ok(existing.id);
    }
    let config: ScenarioConfig = typed(json!({
        "sceneDescriptions": [
            {"key": "square", "description": "A busy market square at first light."},
            {"key": "alley", "description": "A narrow alley behind the spice stall."},
            {"key": "gate", "description": "The town gate, where the guard stands."},
        ],
        "metricsDefinitions": [
            {"name": "trust", "description": "How much the actors trust each other.", "unit": "ratio", "aggregation": "MEAN"},
            {"name": "thefts", "description": "Purses stolen.", "unit": "count", "aggregation": "SUM"},
        ],
        "successCriteria": [
            {"metric": "trust", "operator": "GTE", "threshold": 0.6},
            {"metric": "thefts", "operator": "LT", "threshold": 2.0},
        ],
        "extra": {"weather": "clear", "dayLengthTurns": 12},
    }))?;
    let roles: Vec<AgentRole> = typed(json!([
        {"role": "merchant", "agentTemplateId": agents[0], "relationships": [
            {"targetRole": "guard", "kind": "trusts", "strength": 0.7, "data": {"since": "years"}},
            {"targetRole": "thief", "kind": "suspects", "strength": 0.3, "data": null},
        ]},
        {"role": "guard", "agentTemplateId": agents[1], "relationships": [
            {"targetRole": "thief", "kind": "watches", "strength": 0.8, "data": {"warned": true}},
        ]},
        {"role": "thief", "agentTemplateId": agents[2], "relationships": [
            {"targetRole": "merchant", "kind": "targets", "strength": 0.9, "data": {"purse": "left hip"}},
        ]},
    ]))?;
    let flow: EventFlow = typed(json!({
        "worldRules": [
            {"key": "curfew", "description": "The gate closes at dusk.", "data": {"turn": 12}},
            {"key": "witnesses", "description": "A theft seen by two actors is reported.", "data": {"needed": 2}},
        ],
        "extra": {"turnOrder": ["narrator", "merchant", "thief", "guard", "analyst"]},
    }))?;
    let created = scenario_template::create(
        ctx,
        &OPERATOR,
        NewScenarioTemplate {
            name: TEMPLATE_NAME.into(),
            description: Some(
                "Three actors, a narrator and an analyst on a market morning.".into(),
            ),
            config: Some(config),
            agent_roles: Some(roles),
            event_flow: Some(flow),
        },
    )
    .await?;
    Ok(created.id)
}

/// The demo's own JSON as a typed value.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> AppResult<T> {
    serde_json::from_value(value).map_err(|e| AppError::internal(format!("demo data: {e}")))
}

/// The demo's event types.
fn event_types() -> Vec<NewEventType> {
    let text_schema = json!({
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string"}, "role": {"type": "string"}},
    });
    vec![
        NewEventType {
            name: "scene_set".into(),
            category: "narrative".into(),
            engine_type: Some("NarratorEngine".into()),
            description: Some("The narrator sets or changes the scene.".into()),
            payload_schema: Some(text_schema.clone()),
            default_priority: Some(10),
            max_attempts: Some(3),
            lease_seconds: None,
            retry_delay_seconds: None,
        },
        NewEventType {
            name: "actor_spoke".into(),
            category: "actor".into(),
            engine_type: Some("ActorEngine".into()),
            description: Some("An actor says something.".into()),
            payload_schema: Some(text_schema),
            default_priority: Some(5),
            max_attempts: Some(2),
            lease_seconds: None,
            retry_delay_seconds: None,
        },
        NewEventType {
            name: "action_taken".into(),
            category: "actor".into(),
            engine_type: Some("ActorEngine".into()),
            description: Some("An actor does something.".into()),
            payload_schema: None,
            default_priority: Some(5),
            max_attempts: Some(2),
            lease_seconds: None,
            retry_delay_seconds: None,
        },
    ]
}

/// The demo run of `template_id`, RUNNING.
async fn running_run(ctx: &Ctx, template_id: Uuid) -> AppResult<Uuid> {
    let existing = scenario_run::Entity::find()
        .filter(scenario_run::Column::TemplateId.eq(template_id))
        .filter(scenario_run::Column::Name.eq(RUN_NAME))
        .one(&ctx.db.conn)
        .await?;
    let run = match existing {
        Some(run) => run,
        None => {
            run::create(
                ctx,
                &OPERATOR,
                NewRun {
                    template_id,
                    name: RUN_NAME.into(),
                    parameters: Some(json!({"seed": 7, "turns": 12})),
                },
            )
            .await?
        }
    };
    if run.status == RunStatus::Pending {
        run::set_status(ctx, &OPERATOR, run.id, RunStatus::Running).await?;
    }
    Ok(run.id)
}

/// Thirty-odd events of mixed priority: the narrator sets scenes, actors
/// speak and act, the analyst records metrics, some aimed at one engine.
fn story(run_id: Uuid, engines: &[Uuid]) -> Vec<NewEvent> {
    let lines = [
        (
            "scene_set",
            None,
            json!({"text": "Dawn breaks over the square; stalls open.", "role": "narrator"}),
            None,
        ),
        (
            "actor_spoke",
            None,
            json!({"text": "Saffron! Fresh from the coast!", "role": "merchant"}),
            None,
        ),
        (
            "action_taken",
            Some(2),
            json!({"actor": "thief", "action": "drifts toward the spice stall"}),
            None,
        ),
        (
            "actor_spoke",
            None,
            json!({"text": "Move along, nothing to see here.", "role": "guard"}),
            None,
        ),
        (
            "metric_recorded",
            None,
            json!({"metric": "trust", "value": 0.55}),
            None,
        ),
        (
            "action_taken",
            Some(8),
            json!({"actor": "guard", "action": "watches the crowd"}),
            Some(1),
        ),
        (
            "actor_spoke",
            Some(3),
            json!({"text": "A fine purse you carry, sir.", "role": "thief"}),
            Some(0),
        ),
        (
            "scene_set",
            Some(12),
            json!({"text": "A cart overturns; oranges roll everywhere.", "role": "narrator"}),
            None,
        ),
        (
            "action_taken",
            Some(9),
            json!({"actor": "thief", "action": "reaches for the purse"}),
            None,
        ),
        (
            "actor_spoke",
            Some(7),
            json!({"text": "Thief! Stop that one!", "role": "merchant"}),
            Some(1),
        ),
        (
            "metric_recorded",
            Some(2),
            json!({"metric": "thefts", "value": 1}),
            None,
        ),
        (
            "action_taken",
            Some(10),
            json!({"actor": "guard", "action": "gives chase into the alley"}),
            None,
        ),
    ];
    let mut events = Vec::new();
    for round in 0..3 {
        for (i, (event_type, priority, payload, target)) in lines.iter().enumerate() {
            let mut payload = payload.clone();
            payload["turn"] = json!(round * lines.len() + i + 1);
            // The analyst's samples move: trust grows a little each round,
            // and the only theft is in the first.
            match payload["metric"].as_str() {
                Some("trust") => payload["value"] = json!([0.55, 0.62, 0.69][round]),
                Some("thefts") => payload["value"] = json!(if round == 0 { 1 } else { 0 }),
                _ => {}
            }
            events.push(NewEvent {
                run_id,
                event_type: (*event_type).into(),
                priority: priority.map(|p: i32| p - round as i32),
                payload: Some(payload),
                source_engine_id: None,
                parent_event_id: None,
                target_engine_id: target.map(|t: usize| engines[t]),
                target_engine_type: None,
                idempotency_key: Some(format!("demo-{round}-{i}")),
                deliver_at: None,
                partition_key: None,
            });
        }
    }
    events
}
