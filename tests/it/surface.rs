//! The server's surface: the SDL file, GraphiQL and its introspection, the
//! health routes, query limits, and the binary's embedded default.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestDb, TestServer};

both_backends!(
    graphiql_health_and_introspection_work,
    query_limits_answer_limit_exceeded,
    malformed_requests_get_codes_and_change_nothing,
    graphiql_can_serve_its_scripts_from_a_local_folder,
    migrations_roll_back_and_apply_again,
    records_from_before_delivery_rows_keep_their_outcome,
);

/// The introspection query GraphiQL and code generators send.
pub const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;

#[test]
fn schema_file_matches_the_server() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql at the repository root");
    assert!(
        committed == scenario_hub::graphql::sdl(),
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}

async fn graphiql_health_and_introspection_work(backend: Backend) {
    let server = TestServer::start(backend).await;
    let page = server
        .http
        .get(server.url("/graphiql"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("graphiql") && html.contains("/graphql"));
    // The page's scripts come from the server itself: built into the binary,
    // with their licences.
    assert!(!html.contains("https://"), "{html}");
    for (file, content_type) in [
        ("react.production.min.js", "text/javascript"),
        ("react-dom.production.min.js", "text/javascript"),
        ("graphiql.min.js", "text/javascript"),
        ("graphiql.min.css", "text/css"),
    ] {
        let url = format!("/graphiql/assets/{file}");
        assert!(html.contains(&url), "{html}");
        let asset = server.http.get(server.url(&url)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{url}");
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        assert!(asset.bytes().await.unwrap().len() > 10_000, "{url}");
    }
    let missing = server
        .http
        .get(server.url("/graphiql/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let licences = server
        .http
        .get(server.url("/graphiql/licenses"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for package in [
        "graphiql@4.1.2 (MIT)",
        "react@18.3.1 (MIT)",
        "react-dom@18.3.1 (MIT)",
    ] {
        assert!(licences.contains(package), "{package}");
    }

    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), body);
    }

    let schema = server.gql(INTROSPECTION, json!({})).await;
    let types = schema["__schema"]["types"].as_array().unwrap();
    for name in [
        "Event",
        "ScenarioRun",
        "EngineInstance",
        "EventInput",
        "UUID",
        "JSON",
        "DateTime",
    ] {
        assert!(
            types.iter().any(|t| t["name"] == name),
            "{name} in introspection"
        );
    }

    // GET works for queries too.
    let response: serde_json::Value = server
        .http
        .get(server.url("/graphql"))
        .query(&[(
            "query",
            "{ eventType(name: \"error_occurred\") { category maxAttempts } }",
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        response["data"]["eventType"],
        json!({"category": "system", "maxAttempts": 1})
    );
}

async fn query_limits_answer_limit_exceeded(backend: Backend) {
    let server = TestServer::start(backend).await;
    // 17 levels of nesting: over the default depth of 16.
    let deep = "{ scenarioRuns { nodes { template { agentRoles { agentTemplate { id } } } } } }";
    server.gql(deep, json!({})).await;
    let mut too_deep =
        String::from("{ events(runId: \"00000000-0000-0000-0000-000000000000\") { nodes ");
    for _ in 0..15 {
        too_deep.push_str("{ parent ");
    }
    too_deep.push_str("{ id }");
    for _ in 0..15 {
        too_deep.push_str(" }");
    }
    too_deep.push_str(" } }");
    let err = server.gql_err(&too_deep, json!({})).await;
    assert_eq!(err.code, "LIMIT_EXCEEDED", "{}", err.message);

    // Every alias counts: 1,100 of them, each a field with a subfield.
    let aliases: String = (0..1100)
        .map(|i| {
            format!("a{i}: agentTemplate(id: \"00000000-0000-0000-0000-000000000000\") {{ id }} ")
        })
        .collect();
    let err = server.gql_err(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(err.code, "LIMIT_EXCEEDED", "{}", err.message);

    let err = server.gql_err("{ nope }", json!({})).await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    let err = server
        .gql_err("{ events(runId: 5) { nodes { id } } }", json!({}))
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
}

async fn malformed_requests_get_codes_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Not JSON at all.
    let response = server
        .http
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // An invalid UUID names its argument, inline or through a variable.
    let err = server
        .gql_err("{ events(runId: \"nope\") { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("runId"))
    );
    let err = server
        .gql_err(
            "query($r: UUID!) {\n  events(runId: $r) { nodes { id } } }",
            json!({ "r": "nope" }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("runId"))
    );
    let err = server
        .gql_err(
            "{ agentTemplates(first: 99999999999) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("first"))
    );
    let err = server
        .gql_err(
            "mutation($i: CreateAgentTemplateInput!) { createAgentTemplate(input: $i) { id } }",
            json!({ "i": {"name": 5} }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.name"))
    );

    // A mutation over GET is refused and does nothing.
    let response = server
        .http
        .get(server.url("/graphql"))
        .query(&[(
            "query",
            "mutation { createAgentTemplate(input: {name: \"via-get\"}) { id } }",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let templates = server
        .gql("{ agentTemplates { nodes { id } } }", json!({}))
        .await;
    assert_eq!(templates["agentTemplates"]["nodes"], json!([]));
}

async fn graphiql_can_serve_its_scripts_from_a_local_folder(backend: Backend) {
    let assets = tempfile::tempdir().unwrap();
    for file in [
        "react/umd/react.production.min.js",
        "react-dom/umd/react-dom.production.min.js",
        "graphiql/graphiql.min.js",
        "graphiql/graphiql.min.css",
    ] {
        let path = assets.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("/* {file} */")).unwrap();
    }
    let dir = assets.path().to_owned();
    let server = TestServer::start_with(backend, |c| c.graphiql_assets = Some(dir)).await;
    let html = server
        .http
        .get(server.url("/graphiql"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/graphiql/assets/graphiql/graphiql.min.js"));
    let script = server
        .http
        .get(server.url("/graphiql/assets/graphiql/graphiql.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.text().await.unwrap(),
        "/* graphiql/graphiql.min.js */"
    );

    // A folder without the packages is refused at startup, saying what is missing.
    let empty = tempfile::tempdir().unwrap();
    let mut config = scenario_hub::config::ServeConfig::for_database(server.database_url());
    config.graphiql_assets = Some(empty.path().to_owned());
    let err = scenario_hub::server::App::new(&config).await.err().unwrap();
    assert!(err.to_string().contains("graphiql.min.js"), "{err}");
}

/// `scenario-hub serve` with no configuration uses `scenario-hub.db` in the
/// working directory, in WAL mode, and answers GraphQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_defaults_to_an_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scenario-hub"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start scenario-hub");
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.split("address=").nth(1) {
                // Keep reading: the server logs until it stops.
                std::thread::spawn(move || lines.for_each(drop));
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the server never said where it listens");
    })
    .await
    .unwrap();

    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .json(&json!({"query": "{ eventTypes(category: \"system\") { name } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["data"]["eventTypes"].as_array().unwrap().len(), 4);

    let db = dir.path().join("scenario-hub.db");
    assert!(db.exists(), "scenario-hub.db in the working directory");
    let conn = sea_orm::Database::connect(format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    let mode = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode.try_get_by_index::<String>(0).unwrap(), "wal");
    conn.close().await.unwrap();

    // SIGTERM stops it cleanly.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn migrate_applies_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_scenario-hub"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    }
}

/// Every migration's `down` undoes its `up`: all of them roll back on a
/// migrated database, and apply again.
async fn migrations_roll_back_and_apply_again(backend: Backend) {
    use migration::{Migrator, MigratorTrait};
    use scenario_hub::config::DatabaseConfig;
    use scenario_hub::db::Db;

    let db = TestDb::new(backend).await;
    let config = DatabaseConfig {
        database_url: db.url.clone(),
        database_max_connections: Some(4),
    };
    let pool = Db::connect(&config).await.unwrap();
    pool.migrate().await.unwrap();
    pool.migrate_down(None).await.unwrap();
    let pending = Migrator::get_pending_migrations(&pool.conn).await.unwrap();
    assert_eq!(pending.len(), Migrator::migrations().len());
    pool.migrate().await.unwrap();
    assert!(
        Migrator::get_pending_migrations(&pool.conn)
            .await
            .unwrap()
            .is_empty()
    );
    pool.conn.close().await.ok();
}

/// Records written before `event_deliveries` held every outcome (no
/// delivery row) keep their meaning once the groups migration runs: a
/// PROCESSED event and a final failure are done, a failure with attempts
/// left is still pending, with its failure counted.
async fn records_from_before_delivery_rows_keep_their_outcome(backend: Backend) {
    use scenario_hub::config::DatabaseConfig;
    use scenario_hub::db::Db;
    use scenario_hub::entity::event_delivery;
    use sea_orm::EntityTrait;

    let server = TestServer::start(backend).await;
    let s = crate::common::scenario(&server, "legacy").await;
    crate::common::event_type(&server, "once", json!(null), 0, 1).await;
    crate::common::event_type(&server, "thrice", json!(null), 0, 3).await;
    let engine = crate::common::register(&server, &s.run, "ActorEngine").await;
    let mut ids = Vec::new();
    for (event_type, status) in [
        ("once", "PROCESSED"),
        ("once", "FAILED"),
        ("thrice", "FAILED"),
    ] {
        let event =
            crate::common::publish(&server, json!({"runId": s.run, "eventType": event_type})).await;
        server
            .gql(
                "mutation($ev: UUID!, $e: UUID!, $s: ProcessingStatus!) {
                    recordProcessing(input: {eventId: $ev, engineId: $e, status: $s, error: \"x\"}) { attempts } }",
                json!({"ev": event["id"], "e": engine, "s": status}),
            )
            .await;
        ids.push(event["id"].as_str().unwrap().to_owned());
    }
    let pending = || async {
        let data = server
            .gql(
                "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e, eventTypes: [\"once\", \"thrice\"]}) { nodes { id } } }",
                json!({"r": s.run, "e": engine}),
            )
            .await;
        data["events"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(pending().await, vec![ids[2].clone()]);

    // As before delivery rows: the records alone, then the migration again.
    let pool = Db::connect(&DatabaseConfig {
        database_url: server.database_url().to_owned(),
        database_max_connections: Some(2),
    })
    .await
    .unwrap();
    pool.migrate_down(Some(crate::common::steps_back_past(
        "m20261203_000001_add_engine_groups",
    )))
    .await
    .unwrap();
    use sea_orm::ConnectionTrait;
    pool.conn
        .execute_unprepared("DELETE FROM event_deliveries")
        .await
        .unwrap();
    pool.migrate().await.unwrap();
    pool.conn.close().await.ok();

    assert_eq!(pending().await, vec![ids[2].clone()]);
    let rows = event_delivery::Entity::find()
        .all(&server.ctx().db.conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let failures: Vec<i32> = ids
        .iter()
        .map(|id| {
            rows.iter()
                .find(|r| r.event_id.to_string() == *id)
                .unwrap()
                .failures
        })
        .collect();
    assert_eq!(failures, vec![0, 1, 1]);
}
