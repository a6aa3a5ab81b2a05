//! Evaluation: metric samples aggregated by the publishing transaction, and
//! the run judged against its template's success criteria.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, create_run, publish, publish_batch};

both_backends!(
    concurrent_samples_aggregate_exactly,
    the_evaluation_follows_the_criteria,
    run_updated_pushes_evaluation_changes,
    runs_compare_in_one_query_at_a_constant_cost,
    stored_aggregations_are_mapped_or_reported,
);

/// A template defining one metric per aggregation (`m_sum`, `m_mean`, ...)
/// with `criteria`; returns its id.
async fn template(server: &TestServer, name: &str, criteria: Value) -> String {
    let definitions: Vec<Value> = ["SUM", "MEAN", "MIN", "MAX", "LAST", "COUNT"]
        .iter()
        .map(|a| json!({"name": format!("m_{}", a.to_lowercase()), "unit": "u", "aggregation": a}))
        .collect();
    server
        .gql(
            "mutation($input: CreateScenarioTemplateInput!) { createScenarioTemplate(input: $input) { id } }",
            json!({ "input": { "name": name, "config": {
                "metricsDefinitions": definitions, "successCriteria": criteria } } }),
        )
        .await["createScenarioTemplate"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

const METRICS: &str = "query($r: UUID!) { scenarioRun(id: $r) {
    metrics { name unit aggregation value samples updatedAt }
    evaluation { status criteria { metric operator threshold value passed } } } }";

fn sample(run: &str, metric: &str, value: f64) -> Value {
    json!({"runId": run, "eventType": "metric_recorded", "payload": {"metric": metric, "value": value}})
}

async fn concurrent_samples_aggregate_exactly(backend: Backend) {
    const PUBLISHERS: usize = 8;
    const SAMPLES: usize = 500;
    let server = TestServer::start(backend).await;
    let template = template(&server, "agg", json!([])).await;
    let run = create_run(&server, &template, "RUNNING").await;
    let names = ["m_sum", "m_mean", "m_min", "m_max", "m_last", "m_count"];

    // Eight publishers at once, one sample per event, alone or in batches
    // of ten (both publish paths); values with no exact binary form.
    let publishers = (0..PUBLISHERS).map(|p| {
        let (server, run) = (&server, run.clone());
        async move {
            let value = |i: usize| (p * SAMPLES + i) as f64 * 0.1 + 0.037;
            let mut i = 0;
            while i < SAMPLES {
                if p % 2 == 0 {
                    let batch: Vec<Value> = (i..i + 10)
                        .map(|j| sample(&run, names[(p + j) % 6], value(j)))
                        .collect();
                    publish_batch(server, &batch).await;
                    i += 10;
                } else {
                    publish(server, sample(&run, names[(p + i) % 6], value(i))).await;
                    i += 1;
                }
            }
        }
    });
    futures::future::join_all(publishers).await;
    // A sample of a metric the template does not define is an event only;
    // a replayed idempotency key counts once.
    publish(&server, sample(&run, "undefined", 5.0)).await;
    let mut keyed = sample(&run, "m_count", 1.0);
    keyed["idempotencyKey"] = json!("once");
    publish(&server, keyed.clone()).await;
    publish(&server, keyed).await;

    // Expected: the samples in sequence (commit) order.
    let mut by_metric: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut after: Option<String> = None;
    loop {
        let page = server
            .gql(
                "query($r: UUID!, $after: String) { events(runId: $r, filter: {eventTypes: [\"metric_recorded\"]}, first: 500, after: $after) {
                    nodes { payload } pageInfo { hasNextPage endCursor } } }",
                json!({ "r": run, "after": after }),
            )
            .await["events"]
            .clone();
        for node in page["nodes"].as_array().unwrap() {
            by_metric
                .entry(node["payload"]["metric"].as_str().unwrap().to_owned())
                .or_default()
                .push(node["payload"]["value"].as_f64().unwrap());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let total = |m: &str| by_metric[m].iter().fold(0.0, |a, v| a + v);
    let metrics = server.gql(METRICS, json!({ "r": run })).await["scenarioRun"]["metrics"].clone();
    let got = |name: &str| {
        metrics
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(got("m_sum")["value"].as_f64(), Some(total("m_sum")));
    let n = by_metric["m_mean"].len() as f64;
    assert_eq!(got("m_mean")["value"].as_f64(), Some(total("m_mean") / n));
    let min = by_metric["m_min"]
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    assert_eq!(got("m_min")["value"].as_f64(), Some(min));
    let max = by_metric["m_max"]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(got("m_max")["value"].as_f64(), Some(max));
    assert_eq!(
        got("m_last")["value"].as_f64(),
        by_metric["m_last"].last().copied()
    );
    let counted = by_metric["m_count"].len();
    assert_eq!(got("m_count")["value"].as_f64(), Some(counted as f64));
    assert_eq!(got("m_count")["samples"], counted);
    let all: usize = names.iter().map(|m| by_metric[*m].len()).sum();
    assert_eq!(all, PUBLISHERS * SAMPLES + 1, "every sample stored once");
    assert_eq!(got("m_sum")["aggregation"], "SUM");
    assert!(got("m_sum")["updatedAt"].is_string());
    assert!(
        metrics
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != "undefined")
    );
    server.stop().await;
}

async fn evaluation(server: &TestServer, run: &str) -> Value {
    server.gql(METRICS, json!({ "r": run })).await["scenarioRun"]["evaluation"].clone()
}

async fn the_evaluation_follows_the_criteria(backend: Backend) {
    let server = TestServer::start(backend).await;
    let template = template(
        &server,
        "eval",
        json!([
            {"metric": "m_sum", "operator": "GTE", "threshold": 10},
            {"metric": "m_max", "operator": "LT", "threshold": 5}
        ]),
    )
    .await;
    let run = create_run(&server, &template, "RUNNING").await;
    let pending = evaluation(&server, &run).await;
    assert_eq!(pending["status"], "PENDING");
    assert_eq!(
        pending["criteria"][0],
        json!({"metric": "m_sum", "operator": "GTE", "threshold": 10.0, "value": null, "passed": null})
    );
    publish(&server, sample(&run, "m_sum", 4.0)).await;
    assert_eq!(
        evaluation(&server, &run).await["status"],
        "PENDING",
        "m_max has no value"
    );
    publish(&server, sample(&run, "m_max", 3.0)).await;
    let failed = evaluation(&server, &run).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["criteria"][0]["passed"], false);
    assert_eq!(failed["criteria"][1]["passed"], true);
    publish(&server, sample(&run, "m_sum", 6.0)).await;
    assert_eq!(
        evaluation(&server, &run).await["status"],
        "PASSED",
        "10 >= 10"
    );
    publish(&server, sample(&run, "m_max", 5.0)).await;
    assert_eq!(
        evaluation(&server, &run).await["status"],
        "FAILED",
        "5 is not < 5"
    );

    // A fork is evaluated alike: at the sequence where both held.
    let last = crate::common::last_sequence(&server, &run).await;
    let fork = server
        .gql(
            "mutation($r: UUID!, $s: Int!) { forkRun(input: {runId: $r, atSequence: $s}) { id } }",
            json!({ "r": run, "s": last - 1 }),
        )
        .await["forkRun"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forked = server.gql(METRICS, json!({ "r": fork })).await["scenarioRun"].clone();
    assert_eq!(forked["evaluation"]["status"], "PASSED");

    // A sample emitted by a completion counts in the completion's
    // transaction, as a published one does.
    crate::common::event_type(&server, "ev_job", Value::Null, 0, 1).await;
    let engine = crate::common::register(&server, &run, "AnalystEngine").await;
    let job = publish(&server, json!({"runId": run, "eventType": "ev_job"})).await;
    server
        .gql(
            "mutation($ev: UUID!, $e: UUID!, $emit: [EventInput!]) { completeEvent(input:
                {eventId: $ev, engineId: $e, status: PROCESSED, emit: $emit}) { emitted { sequence } } }",
            json!({ "ev": job["id"], "e": engine, "emit": [sample(&run, "m_count", 7.0)] }),
        )
        .await;
    let metrics = server.gql(METRICS, json!({ "r": run })).await["scenarioRun"]["metrics"].clone();
    let count = metrics
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m_count")
        .unwrap()
        .clone();
    assert_eq!(
        (count["value"].as_f64(), count["samples"].as_i64()),
        (Some(1.0), Some(1))
    );
    server.stop().await;
}

async fn run_updated_pushes_evaluation_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let template = template(
        &server,
        "push",
        json!([{"metric": "m_sum", "operator": "GTE", "threshold": 10}]),
    )
    .await;
    let run = create_run(&server, &template, "RUNNING").await;
    let mut ws = crate::common::ws::WsClient::ready(server.addr).await;
    ws.subscribe(
        "run",
        "subscription($r: UUID!) { runUpdated(runId: $r) { status evaluation { status } } }",
        json!({ "r": run }),
    )
    .await;
    let status = |data: Value| {
        (
            data["runUpdated"]["status"].as_str().unwrap().to_owned(),
            data["runUpdated"]["evaluation"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert_eq!(
        status(ws.next_data("run").await),
        ("RUNNING".into(), "PENDING".into())
    );
    publish(&server, sample(&run, "m_sum", 4.0)).await;
    assert_eq!(
        status(ws.next_data("run").await),
        ("RUNNING".into(), "FAILED".into())
    );
    // A sample that leaves the evaluation as it is sends nothing: the next
    // message is the one after the sample that moves it.
    publish(&server, sample(&run, "m_mean", 1.0)).await;
    publish(&server, sample(&run, "m_sum", 6.0)).await;
    assert_eq!(
        status(ws.next_data("run").await),
        ("RUNNING".into(), "PASSED".into())
    );

    // The event that closes the run carries the final evaluation.
    server
        .gql(
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: COMPLETED) { status } }",
            json!({ "r": run }),
        )
        .await;
    assert_eq!(
        status(ws.next_data("run").await),
        ("COMPLETED".into(), "PASSED".into())
    );
    let closing = server
        .gql(
            "query($r: UUID!) { events(runId: $r, filter: {eventTypes: [\"run_status_changed\"]}) { nodes { payload } } }",
            json!({ "r": run }),
        )
        .await["events"]["nodes"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["payload"]
        .clone();
    assert_eq!(closing["to"], "COMPLETED");
    assert_eq!(
        closing["evaluation"],
        json!({"status": "PASSED", "criteria": [{"metric": "m_sum", "operator": "GTE",
            "threshold": 10.0, "value": 10.0, "passed": true}]})
    );
    server.stop().await;
}

/// Statements of `scenarioRuns(templateId) { metrics evaluation }` (the
/// least of two reads) and the runs it returned.
async fn compare_cost(server: &TestServer, template: &str) -> (u64, Vec<Value>) {
    let mut least = u64::MAX;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let before = server.statements();
        let data = server
            .gql(
                "query($t: UUID!) { scenarioRuns(templateId: $t) { nodes { name forkedAtSequence
                    metrics { name value samples } evaluation { status criteria { value passed } } } } }",
                json!({ "t": template }),
            )
            .await;
        least = least.min(server.statements() - before);
        runs = data["scenarioRuns"]["nodes"].as_array().unwrap().clone();
    }
    (least, runs)
}

async fn runs_compare_in_one_query_at_a_constant_cost(backend: Backend) {
    let server = TestServer::start(backend).await;
    let template = template(
        &server,
        "compare",
        json!([{"metric": "m_max", "operator": "LTE", "threshold": 3}]),
    )
    .await;
    let run = create_run(&server, &template, "RUNNING").await;
    for value in [1.0, 2.0, 3.0, 4.0] {
        publish(&server, sample(&run, "m_max", value)).await;
    }
    let (one, runs) = compare_cost(&server, &template).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["evaluation"]["status"], "FAILED");

    // A parent and its forks at each sample, side by side.
    let last = crate::common::last_sequence(&server, &run).await;
    for at in last - 3..last {
        server
            .gql(
                "mutation($r: UUID!, $s: Int!) { forkRun(input: {runId: $r, atSequence: $s}) { id } }",
                json!({ "r": run, "s": at }),
            )
            .await;
    }
    let (many, runs) = compare_cost(&server, &template).await;
    assert_eq!(runs.len(), 4);
    assert_eq!(many, one, "4 runs cost what 1 costs");
    let mut seen: Vec<(Value, Value, Value)> = runs
        .iter()
        .map(|r| {
            let max = r["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "m_max")
                .unwrap()
                .clone();
            (
                r["forkedAtSequence"].clone(),
                max["value"].clone(),
                r["evaluation"]["status"].clone(),
            )
        })
        .collect();
    seen.sort_by_key(|s| s.0.as_i64().unwrap_or(i64::MAX));
    assert_eq!(
        seen,
        [
            (json!(last - 3), json!(1.0), json!("PASSED")),
            (json!(last - 2), json!(2.0), json!("PASSED")),
            (json!(last - 1), json!(3.0), json!("PASSED")),
            (Value::Null, json!(4.0), json!("FAILED")),
        ]
    );
    server.stop().await;
}

async fn stored_aggregations_are_mapped_or_reported(backend: Backend) {
    use scenario_hub::config::DatabaseConfig;
    use scenario_hub::db::Db;
    use sea_orm::ConnectionTrait;

    let server = TestServer::start(backend).await;
    let template = template(&server, "legacy", json!([])).await;
    let pool = Db::connect(&DatabaseConfig {
        database_url: server.database_url().to_owned(),
        database_max_connections: Some(2),
    })
    .await
    .unwrap();
    pool.migrate_down(Some(crate::common::steps_back_past(
        "m20261203_000003_add_run_metrics",
    )))
    .await
    .unwrap();
    let set = |aggregation: &str| {
        format!(
            "UPDATE scenario_templates SET config = '{{\"metricsDefinitions\": [\
             {{\"name\": \"a\", \"aggregation\": \"{aggregation}\"}}, {{\"name\": \"b\"}}]}}'"
        )
    };
    pool.conn.execute_unprepared(&set("median")).await.unwrap();
    let err = pool.migrate().await.unwrap_err().to_string();
    assert!(err.contains("\"median\""), "{err}");
    assert!(err.contains("legacy"), "{err}");
    // Nothing was changed: the value is still there, the migration not applied.
    let row = pool
        .conn
        .query_one_raw(sea_orm::Statement::from_string(
            pool.conn.get_database_backend(),
            "SELECT COUNT(*) FROM scenario_templates WHERE CAST(config AS TEXT) LIKE '%median%'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 1);

    pool.conn.execute_unprepared(&set("avg")).await.unwrap();
    pool.migrate().await.unwrap();
    pool.conn.close().await.ok();
    let config = server
        .gql(
            "query($t: UUID!) { scenarioTemplate(id: $t) { config { metricsDefinitions { name aggregation } } } }",
            json!({ "t": template }),
        )
        .await["scenarioTemplate"]["config"]["metricsDefinitions"]
        .clone();
    assert_eq!(
        config,
        json!([{"name": "a", "aggregation": "MEAN"}, {"name": "b", "aggregation": "LAST"}])
    );
    server.stop().await;
}
