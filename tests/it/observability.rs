//! Operations' view: what a Prometheus scrape of `GET /metrics` sees after
//! real traffic, and what the JSON logs carry.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::process::ProcessServer;
use crate::common::ws::{PATIENCE, WsClient};
use crate::common::{Backend, TestDb, TestServer, event_type, publish, scenario};

both_backends!(
    a_fresh_server_exports_every_counter_at_zero,
    metrics_count_requests_errors_events_and_connections,
    json_logs_name_operations_in_spans_and_never_show_tokens,
);

/// The value of the series `name` whose labels include `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(server: &TestServer) -> String {
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    response.text().await.unwrap()
}

/// Before any traffic, a Prometheus parser finds every counter, each error
/// code among them, at 0: `rate()` and alerts work from the first scrape.
async fn a_fresh_server_exports_every_counter_at_zero(backend: Backend) {
    let server = TestServer::start(backend).await;
    let text = scrape(&server).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    for code in scenario_hub::error::CODES.into_iter().chain(["OTHER"]) {
        assert_eq!(
            value("scenario_hub_errors_total", Some(("code", code))),
            Some(0.0),
            "{code}"
        );
    }
    for name in [
        "scenario_hub_events_published_total",
        "scenario_hub_events_delivered_total",
        "scenario_hub_leases_expired_total",
    ] {
        assert_eq!(value(name, None), Some(0.0), "{name}");
    }
    for transport in ["http", "websocket", "rest"] {
        assert_eq!(
            value(
                "scenario_hub_requests_total",
                Some(("transport", transport))
            ),
            Some(0.0),
            "{transport}"
        );
    }
}

async fn metrics_count_requests_errors_events_and_connections(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.database.database_max_connections = Some(7);
    })
    .await;
    let s = scenario(&server, "metrics").await;
    event_type(&server, "tick", Value::Null, 0, 1).await;

    server
        .gql("query Probe { eventTypes { name } }", json!({}))
        .await;
    server
        .gql_err(
            "mutation Broken { setRunStatus(runId: \"nope\", status: RUNNING) { status } }",
            json!({}),
        )
        .await;
    let missing = server
        .http
        .get(server.url("/api/v1/engine_instances/00000000-0000-4000-8000-000000000000/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "live",
        "subscription Watch($r: UUID!) { events(runId: $r, eventTypes: [\"tick\"], afterSequence: 0) { id } }",
        json!({ "r": s.run }),
    )
    .await;
    for _ in 0..2 {
        publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    }
    ws.next_event("live").await;
    ws.next_event("live").await;

    let text = scrape(&server).await;
    let at = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        at(
            "scenario_hub_requests_total",
            &[
                ("transport", "http"),
                ("operation", "Probe"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert_eq!(
        at(
            "scenario_hub_requests_total",
            &[("operation", "Broken"), ("outcome", "error")]
        ),
        1.0
    );
    assert_eq!(
        at(
            "scenario_hub_requests_total",
            &[
                ("transport", "rest"),
                (
                    "operation",
                    "GET /api/v1/engine_instances/{engine_id}/state"
                ),
                ("outcome", "error")
            ]
        ),
        1.0
    );
    assert_eq!(
        at(
            "scenario_hub_requests_total",
            &[("transport", "websocket"), ("operation", "Watch")]
        ),
        1.0
    );
    assert!(at("scenario_hub_errors_total", &[("code", "BAD_USER_INPUT")]) >= 1.0);
    assert_eq!(
        at("scenario_hub_errors_total", &[("code", "NOT_FOUND")]),
        1.0
    );

    // Every event in the database was counted once when published.
    let stored = server
        .gql(
            "query($r: UUID!) { events(runId: $r, first: 500) { nodes { id } } }",
            json!({ "r": s.run }),
        )
        .await["events"]["nodes"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        at("scenario_hub_events_published_total", &[]),
        stored as f64
    );
    assert_eq!(at("scenario_hub_events_delivered_total", &[]), 2.0);
    assert_eq!(at("scenario_hub_delivery_lag_seconds_count", &[]), 2.0);
    assert!(
        at(
            "scenario_hub_delivery_lag_seconds_bucket",
            &[("le", "+Inf")]
        ) == 2.0
    );
    assert_eq!(at("scenario_hub_websocket_connections", &[]), 1.0);
    assert_eq!(at("scenario_hub_subscriptions", &[]), 1.0);
    assert_eq!(at("scenario_hub_db_pool_max_connections", &[]), 7.0);
    assert!(at("scenario_hub_db_pool_connections", &[]) >= 1.0);

    // A closed connection leaves the gauges.
    ws.drop_connection().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(&server).await;
        let open = sample(&text, "scenario_hub_websocket_connections", &[]);
        let running = sample(&text, "scenario_hub_subscriptions", &[]);
        if open == Some(0.0) && running == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges stay at {open:?} / {running:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn json_logs_name_operations_in_spans_and_never_show_tokens(backend: Backend) {
    let db = TestDb::new(backend).await;
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_scenario-hub"))
        .args(["keys", "create", "--role", "admin", "--name", "ops"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(created.status.success());
    let token = String::from_utf8(created.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let server = ProcessServer::spawn(
        &db.url,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,scenario_hub=debug,tower_http=debug"),
        ],
    )
    .await;

    let answer: Value = reqwest::Client::new()
        .post(format!("http://{}/graphql", server.addr))
        .bearer_auth(&token)
        .json(&json!({"query": "query Probe { eventTypes { name } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("errors").is_none(), "{answer}");
    let mut ws = WsClient::init_with(server.addr, Some(&format!("Bearer {token}"))).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
    ws.subscribe("1", "query Look { eventTypes { name } }", json!({}))
        .await;
    ws.next_data("1").await;
    assert_eq!(ws.message().await["type"], "complete");

    // The lines arrive through a pipe: wait for the operation's own.
    let in_span = |line: &Value, span: &str, operation: &str| {
        line["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s["name"] == span && s["operation"] == operation)
        })
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = server
            .logs()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON line: {line}"))
            })
            .collect();
        let http = lines.iter().any(|l| in_span(l, "request", "Probe"));
        let websocket = lines.iter().any(|l| {
            in_span(l, "operation", "Look")
                && l["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["name"] == "websocket"))
        });
        if http && websocket {
            break lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line in the Probe request span and the Look operation span: {lines:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let secret = &token["shk_".len()..];
    for line in &lines {
        assert!(
            !line.to_string().contains(secret),
            "the token leaked: {line}"
        );
    }
}
