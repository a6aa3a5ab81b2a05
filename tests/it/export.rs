//! Export and import of a run: JSON Lines over HTTP and the command line,
//! read back equal on either backend, and refused whole when anything is
//! wrong with the file.

use std::process::Command;

use scenario_hub::service::auth::Principal;
use scenario_hub::service::import;
use serde_json::Value;

use crate::both_backends;
use crate::common::{Backend, TestDb, TestServer};
use crate::timeline::{build_run, pending, run_digest};

both_backends!(
    a_run_travels_between_backends_unchanged,
    a_bad_file_imports_nothing
);

/// `GET /api/v1/runs/{run}/export`.
async fn export_over_http(server: &TestServer, run: &str) -> String {
    let response = server
        .http
        .get(server.url(&format!("/api/v1/runs/{run}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    response.text().await.unwrap()
}

/// `scenario-hub ARGS` on the database at `url`; its standard output.
fn cli(url: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_scenario-hub"))
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8(output.stderr).unwrap())
    }
}

fn records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The other backend when PostgreSQL is at hand, else the same one.
fn other(backend: Backend) -> Backend {
    match backend {
        Backend::Postgres => Backend::Sqlite,
        Backend::Sqlite if std::env::var_os("TEST_DATABASE_URL").is_some() => Backend::Postgres,
        Backend::Sqlite => Backend::Sqlite,
    }
}

async fn a_run_travels_between_backends_unchanged(backend: Backend) {
    let source = TestServer::start(backend).await;
    let built = build_run(&source, "travel", 120, 60).await;
    let run = built.scenario.run.clone();
    let exported = export_over_http(&source, &run).await;
    let lines = records(&exported);
    assert_eq!(lines[0]["kind"], "run");
    let counts = &lines[0]["counts"];
    for (kind, key) in [
        ("engine", "engines"),
        ("event", "events"),
        ("processing", "processings"),
        ("engine_state_version", "engineStateVersions"),
        ("relationship", "relationships"),
    ] {
        let n = lines.iter().filter(|l| l["kind"] == kind).count();
        assert_eq!(counts[key], n, "{kind}");
        assert!(n > 0, "the run has {kind} records");
    }
    assert_eq!(counts["events"], lines[0]["lastSequence"]);
    let digest = run_digest(&source, &run).await;
    let mut backlogs = Vec::new();
    for engine in &built.engines {
        backlogs.push(pending(&source, &run, engine).await);
    }

    // There and back: the other backend, then this one again, both through
    // the command line; each reads back what the source had.
    let dir = tempfile::tempdir().unwrap();
    let mut file = dir.path().join("hop0.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let mut databases = Vec::new();
    for (hop, backend) in [other(backend), backend].into_iter().enumerate() {
        let db = TestDb::new(backend).await;
        let said = cli(&db.url, &["import", file.to_str().unwrap()]).unwrap();
        assert!(said.contains(&run), "{said}");
        let server = TestServer::start_on(&db.url, |_| {}).await;
        assert_eq!(run_digest(&server, &run).await, digest, "hop {hop}");
        for (engine, backlog) in built.engines.iter().zip(&backlogs) {
            assert_eq!(&pending(&server, &run, engine).await, backlog);
        }
        assert_eq!(records(&export_over_http(&server, &run).await), lines);
        server.stop().await;
        file = dir.path().join(format!("hop{}.jsonl", hop + 1));
        cli(
            &db.url,
            &["export", &run, "--output", file.to_str().unwrap()],
        )
        .unwrap();
        assert_eq!(records(&std::fs::read_to_string(&file).unwrap()), lines);
        databases.push(db);
    }

    // Into a database that has the run: CONFLICT, nothing changed.
    let before = source.digest().await;
    let err = import::import(source.ctx(), &Principal::OPEN, exported.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "CONFLICT");
    assert_eq!(source.digest().await, before);
    let refused = cli(source.database_url(), &["import", file.to_str().unwrap()]).unwrap_err();
    assert!(refused.contains("exists already"), "{refused}");
    assert_eq!(source.digest().await, before);

    // A viewer may export; an unknown run is 404.
    let missing = source
        .http
        .get(source.url(&format!("/api/v1/runs/{}/export", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let token = source.create_key("viewer", "reader").await;
    let response = source
        .http
        .get(source.url(&format!("/api/v1/runs/{run}/export")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(records(&response.text().await.unwrap()), lines);
    let anonymous = source
        .http
        .get(source.url(&format!("/api/v1/runs/{run}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    source.stop().await;
}

async fn a_bad_file_imports_nothing(backend: Backend) {
    let source = TestServer::start(backend).await;
    let built = build_run(&source, "bad", 40, 20).await;
    let exported = export_over_http(&source, &built.scenario.run).await;
    let lines: Vec<&str> = exported.lines().collect();
    let target = TestServer::start(backend).await;
    let empty = target.digest().await;
    let refuse = |text: String| {
        let (target, empty) = (&target, &empty);
        async move {
            let err = import::import(target.ctx(), &Principal::OPEN, text.as_bytes())
                .await
                .unwrap_err();
            assert_eq!(&target.digest().await, empty, "nothing stays of {err}");
            (err.code(), err.to_string())
        }
    };

    // Cut at a line boundary: the run record's counts tell.
    let (code, message) = refuse(lines[..lines.len() - 5].join("\n")).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("incomplete"), "{message}");
    // Cut inside a line.
    let cut = &exported[..exported.len() - 40];
    let (code, message) = refuse(cut.to_owned()).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(
        message.contains(&format!("line {}:", lines.len())),
        "{message}"
    );
    // A malformed line.
    let mut broken: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    broken[3] = "{\"kind\": \"event\", \"id\": 7}".into();
    let (code, message) = refuse(broken.join("\n")).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("line 4:"), "{message}");
    // A record out of the export's order.
    let last_event = lines
        .iter()
        .rposition(|l| l.contains("\"kind\":\"event\""))
        .unwrap();
    let first_engine = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"engine\""))
        .unwrap();
    let mut moved: Vec<&str> = lines.clone();
    let event = moved.remove(last_event);
    moved.insert(first_engine, event);
    let (code, message) = refuse(moved.join("\n")).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(
        message.contains(&format!(
            "line {}: `engine` record out of order",
            first_engine + 2
        )),
        "{message}"
    );
    // The command line says so and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.jsonl");
    std::fs::write(&file, cut).unwrap();
    let said = cli(target.database_url(), &["import", file.to_str().unwrap()]).unwrap_err();
    assert!(said.contains(&format!("line {}", lines.len())), "{said}");
    assert_eq!(target.digest().await, empty);

    // The whole file still imports: nothing was left behind.
    import::import(target.ctx(), &Principal::OPEN, exported.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        run_digest(&target, &built.scenario.run).await,
        run_digest(&source, &built.scenario.run).await
    );
    target.stop().await;
    source.stop().await;
}
