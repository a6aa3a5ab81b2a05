//! The test harness: starts the real server on 127.0.0.1 port 0 over a
//! fresh database of the backend under test, and talks to it over HTTP.
//!
//! Every behaviour test is written once as `async fn name(backend: Backend)`
//! and instantiated for both backends by [`both_backends!`]. PostgreSQL tests
//! read `TEST_DATABASE_URL`; without it they are reported as ignored, with
//! the reason, by the test runner itself.

pub mod pg_cluster;
pub mod process;
pub mod ws;

use std::net::SocketAddr;

use scenario_hub::config::ServeConfig;
use scenario_hub::graphql::AppSchemaBuilder;
use scenario_hub::server::App;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the `TEST_DATABASE_URL` server.
    Postgres,
}

/// Writes `$name::sqlite` and `$name::postgres` tests that run `$name(backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(pg_tests), ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped")]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    )*};
}

/// A database made for one test and dropped after it.
pub struct TestDb {
    /// The URL the server connects to.
    pub url: String,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL admin URL and database name, to drop it afterwards.
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh, empty database of `backend`.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let admin = std::env::var("TEST_DATABASE_URL")
                    .expect("TEST_DATABASE_URL must be set for PostgreSQL tests");
                let name = format!("sh_test_{}", uuid::Uuid::new_v4().simple());
                let conn = Database::connect(&admin)
                    .await
                    .expect("connect TEST_DATABASE_URL");
                conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                TestDb {
                    url: with_database(&admin, &name),
                    _dir: None,
                    pg: Some((admin, name)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which must not block on
        // itself: drop the database from a runtime of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(conn) = Database::connect(&admin).await {
                    let _ = conn
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    conn.close().await.ok();
                }
            });
        })
        .join()
        .ok();
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_end..]
        .find('/')
        .map_or(base.len(), |i| authority_end + i);
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A running server and a client for it.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The HTTP client.
    pub http: reqwest::Client,
    ctx: scenario_hub::service::Ctx,
    stop: tokio_util::sync::CancellationToken,
    renders: std::sync::Arc<scenario_hub::http::RenderCache>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Declared last: dropped after the server has stopped. A replica has none.
    db: Option<TestDb>,
}

impl TestServer {
    /// Starts a server on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server whose configuration `tweak` adjusts.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        // RUST_LOG=debug shows the server's logs of a failing test.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let db = TestDb::new(backend).await;
        let mut server = Self::start_on(&db.url, tweak).await;
        server.db = Some(db);
        server
    }

    /// Starts a server on the existing database at `url`.
    pub async fn start_on(url: &str, tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let mut config = ServeConfig::for_database(url.to_owned());
        tweak(&mut config);
        Self::serve(App::new(&config).await.expect("server starts")).await
    }

    /// Starts a server on a fresh database whose schema builder `customize`
    /// adjusts (to add an extension that injects faults).
    pub async fn start_with_schema(
        backend: Backend,
        customize: impl FnOnce(AppSchemaBuilder) -> AppSchemaBuilder,
    ) -> TestServer {
        let db = TestDb::new(backend).await;
        let config = ServeConfig::for_database(db.url.clone());
        let app = App::with_schema(&config, customize)
            .await
            .expect("server starts");
        let mut server = Self::serve(app).await;
        server.db = Some(db);
        server
    }

    /// Serves `app` on 127.0.0.1, port 0.
    async fn serve(app: App) -> TestServer {
        let ctx = app.ctx().clone();
        let stop = app.shutdown_token();
        let renders = app.renders();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.serve(listener, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            // A safety net against hangs, not a timing assertion.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
            ctx,
            stop,
            renders,
            shutdown: Some(tx),
            task: Some(task),
            db: None,
        }
    }

    /// The URL of the server's database.
    pub fn database_url(&self) -> &str {
        &self
            .db
            .as_ref()
            .expect("a server that owns its database")
            .url
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// (event payloads serialized, payloads reused) by websocket subscriptions.
    pub fn render_counts(&self) -> (u64, u64) {
        self.renders.counts()
    }

    /// Row counts and sums over every table, read straight from the
    /// database: equal before and after a refused request means it changed
    /// nothing.
    pub async fn digest(&self) -> Vec<(&'static str, i64)> {
        const PROBES: [&str; 18] = [
            "SELECT COUNT(*) FROM agent_templates",
            "SELECT COUNT(*) FROM scenario_templates",
            "SELECT COUNT(*) FROM scenario_runs",
            "SELECT COUNT(*) FROM scenario_runs WHERE status = 'RUNNING'",
            "SELECT CAST(COALESCE(SUM(last_sequence), 0) AS BIGINT) FROM scenario_runs",
            "SELECT COUNT(*) FROM event_types",
            "SELECT COUNT(*) FROM event_instances",
            "SELECT COUNT(*) FROM event_processings",
            "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM event_processings",
            "SELECT COUNT(*) FROM engine_states",
            "SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM engine_states",
            "SELECT COUNT(*) FROM engine_state_versions",
            "SELECT CAST(COALESCE(SUM(run_sequence), 0) AS BIGINT) FROM event_processings",
            "SELECT COUNT(*) FROM run_relationships",
            "SELECT COUNT(*) FROM api_keys",
            "SELECT COUNT(*) FROM engine_groups",
            "SELECT COUNT(*) FROM event_deliveries",
            "SELECT CAST(COALESCE(SUM(attempt), 0) AS BIGINT) FROM event_deliveries WHERE done",
        ];
        let db = Database::connect(self.database_url())
            .await
            .expect("connect");
        let mut digest = Vec::new();
        for probe in PROBES {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    probe,
                ))
                .await
                .expect(probe)
                .expect("one row");
            digest.push((probe, row.try_get_by_index::<i64>(0).expect(probe)));
        }
        db.close().await.expect("close");
        digest
    }

    /// The server's service context, for tests of service-layer rules.
    pub fn ctx(&self) -> &scenario_hub::service::Ctx {
        &self.ctx
    }

    /// SQL statements the server has sent so far.
    pub fn statements(&self) -> u64 {
        self.ctx.db.stats.statements()
    }

    /// Creates an API key of `role` (admin, engine, viewer) and returns its token.
    pub async fn create_key(&self, role: &str, name: &str) -> String {
        let role = scenario_hub::service::auth::Role::parse(role).expect("a role");
        scenario_hub::service::auth::create(&self.ctx, name, role)
            .await
            .expect("key created")
            .1
    }

    /// Revokes the key named `name`.
    pub async fn revoke_key(&self, name: &str) {
        scenario_hub::service::auth::revoke(&self.ctx, name)
            .await
            .expect("key revoked");
    }

    /// The status and body of `query` sent with `token` as Bearer (or none).
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    }

    /// The raw GraphQL response to `query` with `variables`.
    pub async fn gql_raw(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON response")
    }

    /// The `data` of a response that must have no errors.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let response = self.gql_raw(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response:#}\nquery: {query}"
        );
        response["data"].clone()
    }

    /// The first error of a response that must fail.
    pub async fn gql_err(&self, query: &str, variables: Value) -> GqlError {
        let response = self.gql_raw(query, variables).await;
        let error = response["errors"]
            .get(0)
            .unwrap_or_else(|| panic!("expected an error, got {response:#}"))
            .clone();
        GqlError {
            code: error["extensions"]["code"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            field: error["extensions"]["field"].as_str().map(str::to_owned),
            message: error["message"].as_str().unwrap_or("").to_owned(),
            raw: error,
        }
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A GraphQL error, read.
#[derive(Debug, Clone)]
pub struct GqlError {
    /// `extensions.code`.
    pub code: String,
    /// `extensions.field`.
    pub field: Option<String>,
    /// `message`.
    pub message: String,
    /// The whole error object.
    pub raw: Value,
}

/// The ids of a ready-made scenario: two agent templates playing `hero` and
/// `villain` (rivals), a template, and a RUNNING run.
pub struct Scenario {
    /// The agent template playing `hero`.
    pub hero_agent: String,
    /// The scenario template.
    pub template: String,
    /// The run, RUNNING.
    pub run: String,
}

/// Creates a [`Scenario`] on `server`; `tag` keeps names unique within a test.
pub async fn scenario(server: &TestServer, tag: &str) -> Scenario {
    let agents = server
        .gql(
            "mutation($a: String!, $b: String!) {
                hero: createAgentTemplate(input: {name: $a, config: {model: \"m\"}}) { id }
                villain: createAgentTemplate(input: {name: $b}) { id }
            }",
            json!({ "a": format!("{tag}-hero"), "b": format!("{tag}-villain") }),
        )
        .await;
    let hero = agents["hero"]["id"].as_str().unwrap().to_owned();
    let villain = agents["villain"]["id"].as_str().unwrap().to_owned();
    let template = server
        .gql(
            "mutation($input: CreateScenarioTemplateInput!) {
                createScenarioTemplate(input: $input) { id }
            }",
            json!({ "input": {
                "name": format!("{tag}-scenario"),
                "agentRoles": [
                    {"role": "hero", "agentTemplateId": hero,
                     "relationships": [{"targetRole": "villain", "kind": "rival", "strength": 0.5}]},
                    {"role": "villain", "agentTemplateId": villain}
                ]
            }}),
        )
        .await["createScenarioTemplate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = create_run(server, &template, "RUNNING").await;
    Scenario {
        hero_agent: hero,
        template,
        run,
    }
}

/// Creates a run of `template` and moves it to `status` (PENDING or RUNNING).
pub async fn create_run(server: &TestServer, template: &str, status: &str) -> String {
    let run = server
        .gql(
            "mutation($t: UUID!) { createScenarioRun(input: {templateId: $t, name: \"run\"}) { id } }",
            json!({ "t": template }),
        )
        .await["createScenarioRun"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    if status == "RUNNING" {
        server
            .gql(
                "mutation($r: UUID!) { setRunStatus(runId: $r, status: RUNNING) { status } }",
                json!({ "r": run }),
            )
            .await;
    }
    run
}

/// Creates an event type `name` with `schema`, `default_priority` and `max_attempts`.
pub async fn event_type(
    server: &TestServer,
    name: &str,
    schema: Value,
    default_priority: i32,
    max_attempts: i32,
) {
    server
        .gql(
            "mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }",
            json!({ "input": {
                "name": name, "category": "test", "payloadSchema": schema,
                "defaultPriority": default_priority, "maxAttempts": max_attempts
            }}),
        )
        .await;
}

/// Publishes `inputs` in one `publishEvents` and returns their ids, in order.
pub async fn publish_batch(server: &TestServer, inputs: &[Value]) -> Value {
    server
        .gql(
            "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id } }",
            json!({ "inputs": inputs }),
        )
        .await["publishEvents"]
        .clone()
}

/// Publishes one event and returns it (id, sequence, priority).
pub async fn publish(server: &TestServer, input: Value) -> Value {
    server
        .gql(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id sequence priority } }",
            json!({ "input": input }),
        )
        .await["publishEvent"]
        .clone()
}

/// Registers an engine of `engine_type` in `run` and returns its id.
pub async fn register(server: &TestServer, run: &str, engine_type: &str) -> String {
    server
        .gql(
            "mutation($r: UUID!, $t: String!) {
                registerEngine(input: {runId: $r, engineType: $t}) { engineId }
            }",
            json!({ "r": run, "t": engine_type }),
        )
        .await["registerEngine"]["engineId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Registers an engine of `engine_type` in `group` on `run`; returns its id.
pub async fn register_in_group(
    server: &TestServer,
    run: &str,
    engine_type: &str,
    group: &str,
) -> String {
    server
        .gql(
            "mutation($r: UUID!, $t: String!, $g: String!) {
                registerEngine(input: {runId: $r, engineType: $t, group: $g}) { engineId }
            }",
            json!({ "r": run, "t": engine_type, "g": group }),
        )
        .await["registerEngine"]["engineId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// How many steps `migrate_down` takes to undo the migration whose module
/// is `name` and every later one: tests that go back to before a migration
/// stay right as migrations are added.
pub fn steps_back_past(name: &str) -> u32 {
    use migration::MigratorTrait;
    let names: Vec<String> = migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let at = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no migration {name} in {names:?}"));
    u32::try_from(names.len() - at).unwrap()
}

/// The run's `lastSequence`.
pub async fn last_sequence(server: &TestServer, run: &str) -> i64 {
    server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { lastSequence } }",
            json!({ "r": run }),
        )
        .await["scenarioRun"]["lastSequence"]
        .as_i64()
        .unwrap()
}

/// `scenario_hub_compiled_requests_total` of `server` now.
pub async fn compiled_count(server: &TestServer) -> u64 {
    compiled_count_at(server.addr).await
}

/// `scenario_hub_compiled_requests_total` of the server at `addr` now.
pub async fn compiled_count_at(addr: SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("scenario_hub_compiled_requests_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Subscribes `query` on `ws` so that the compiled path answers it. A
/// general-path operation of the same text must have been started: it
/// proves the document once its task has run past validation, which takes
/// a moment, so this tries (ids `{prefix}0`, `{prefix}1`, ...) until the
/// compiled counter moves, completing the tries it did not answer. Returns
/// the compiled operation's id; none after 40 tries.
pub async fn subscribe_compiled(
    server: &TestServer,
    ws: &mut ws::WsClient,
    prefix: &str,
    query: &str,
    variables: &Value,
) -> Option<String> {
    for attempt in 0..40 {
        let before = compiled_count(server).await;
        let id = format!("{prefix}{attempt}");
        ws.subscribe(&id, query, variables.clone()).await;
        if compiled_count(server).await > before {
            return Some(id);
        }
        ws.send(json!({"id": id, "type": "complete"})).await;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    None
}
