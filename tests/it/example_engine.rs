//! The example engine of `examples/engine.rs`, run against the real server:
//! it handles events, is killed mid-run, and picks up where it stopped.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, scenario};

both_backends!(the_example_engine_resumes_after_a_kill);

/// The example's binary, which `cargo test` builds beside the test binaries.
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples").join("engine");
    assert!(
        binary.exists(),
        "build the example first: cargo build --example engine"
    );
    binary
}

fn engine_command(server: &TestServer, run: &str, engine: &str) -> Command {
    let mut command = Command::new(example_binary());
    command
        .args([
            "--url",
            &server.url(""),
            "--run",
            run,
            "--engine-id",
            engine,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The sequences an engine's output says it completed.
fn completed(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("completed sequence "))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

async fn the_example_engine_resumes_after_a_kill(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "example").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = uuid::Uuid::new_v4().to_string();
    let inputs: Vec<_> = (0..10)
        .map(|i| json!({"runId": s.run, "eventType": "job", "payload": {"i": i}}))
        .collect();
    server
        .gql(
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
            json!({ "i": inputs }),
        )
        .await;

    // First start: slow work, killed with SIGKILL after three completions.
    let mut first = engine_command(&server, &s.run, &engine)
        .args(["--work-ms", "100"])
        .spawn()
        .unwrap();
    let stdout = first.stdout.take().unwrap();
    let first_lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("(handled 3)");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let before = completed(&first_lines);
    assert_eq!(before.len(), 3);

    let stored = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { state version } }",
            json!({ "e": engine }),
        )
        .await["engine"]
        .clone();
    let handled = stored["state"]["handled"].as_i64().unwrap();
    assert!(handled >= 3, "{stored}");

    // Second start: it gets its state back and handles exactly the rest.
    let remaining = (10 - handled).to_string();
    let output = tokio::task::spawn_blocking({
        let mut command = engine_command(&server, &s.run, &engine);
        command.args(["--max-events", &remaining]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let second_lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        second_lines[0].contains(&format!("handled {handled} so far")),
        "{second_lines:?}"
    );
    let after = completed(&second_lines);

    // The kill may land between a commit and its line of output: the server's
    // records, not the printout, say what was completed, and how often.
    let before: HashSet<i64> = before.into_iter().collect();
    let after: HashSet<i64> = after.into_iter().collect();
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    assert_eq!(after.len() as i64, 10 - handled);
    let jobs = server
        .gql(
            "query($r: UUID!) { events(runId: $r, filter: {eventTypes: [\"job\"]}) { nodes { processedBy { engineId attempts } } } }",
            json!({ "r": s.run }),
        )
        .await;
    for job in jobs["events"]["nodes"].as_array().unwrap() {
        assert_eq!(
            job["processedBy"],
            json!([{"engineId": engine, "attempts": 1}]),
            "completed exactly once"
        );
    }
    let pending = server
        .gql(
            "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e, eventTypes: [\"job\"]}) { nodes { id } }
                                           replies: events(runId: $r, filter: {eventTypes: [\"job_done\"]}) { nodes { parentEventId } } }",
            json!({ "r": s.run, "e": engine }),
        )
        .await;
    assert_eq!(pending["events"]["nodes"], json!([]));
    assert_eq!(
        pending["replies"]["nodes"].as_array().unwrap().len(),
        10,
        "one reply per job"
    );
    let final_state = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { state } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(final_state["engine"]["state"]["handled"], 10);
}
