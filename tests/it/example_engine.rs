//! The example engine of `examples/engine.rs`, run against the real server:
//! it handles events, is killed mid-run, and picks up where it stopped; it
//! keeps a slow event's lease with heartbeats; and it lets go of an event
//! whose lease another instance took over.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, scenario};

both_backends!(
    the_example_engine_resumes_after_a_kill,
    the_example_engine_keeps_a_slow_event_with_heartbeats,
    the_example_engine_lets_go_of_a_lost_lease,
);

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

/// A running example engine, killed when dropped.
struct Engine {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Engine {
    /// Starts the example engine for `run` as `engine`, with extra arguments.
    fn start(server: &TestServer, run: &str, engine: &str, extra: &[&str]) -> Engine {
        let mut child = Command::new(example_binary())
            .args([
                "--url",
                &server.url(""),
                "--run",
                run,
                "--engine-id",
                engine,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Engine {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads its output up to a line containing `needle` (within 30 s).
    async fn wait_for(&mut self, needle: &str) {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within 30 s: {:?}", self.seen))
                .unwrap_or_else(|| panic!("the engine exited before {needle:?}: {:?}", self.seen));
            let found = line.contains(needle);
            self.seen.push(line);
            if found {
                return;
            }
        }
    }

    /// Waits for it to exit on its own, successfully, and reads the rest of
    /// its output.
    async fn finish(&mut self) {
        let child = &mut self.child;
        let status = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the engine did not exit: {:?}", self.seen));
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        assert!(status.success(), "{status}: {:?}", self.seen);
    }

    /// Still running?
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The sequences its output says it completed, with each one's attempt.
    fn completed(&self) -> Vec<(i64, i64)> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix("completed sequence "))
            .map(|rest| {
                let number = |s: &str| s.trim_matches(|c: char| !c.is_ascii_digit()).parse();
                let sequence = number(rest.split_whitespace().next().unwrap()).unwrap();
                let attempt = number(rest.rsplit_once("attempt ").unwrap().1).unwrap();
                (sequence, attempt)
            })
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `count` jobs to the run.
async fn publish_jobs(server: &TestServer, run: &str, count: usize) {
    let inputs: Vec<_> = (0..count)
        .map(|i| json!({"runId": run, "eventType": "job", "payload": {"i": i}}))
        .collect();
    server
        .gql(
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
            json!({ "i": inputs }),
        )
        .await;
}

/// Every job was completed exactly once by `engine`, with one reply each,
/// and its stored state counts them.
async fn assert_done_once(server: &TestServer, run: &str, engine: &str, count: usize) {
    let jobs = server
        .gql(
            "query($r: UUID!, $e: UUID!) {
                jobs: events(runId: $r, filter: {eventTypes: [\"job\"]}) { nodes { processedBy { engineId attempts } } }
                pending: events(runId: $r, filter: {pendingFor: $e, eventTypes: [\"job\"]}) { nodes { id } }
                replies: events(runId: $r, filter: {eventTypes: [\"job_done\"]}) { nodes { parentEventId } }
                engine(engineId: $e) { state }
            }",
            json!({ "r": run, "e": engine }),
        )
        .await;
    let nodes = jobs["jobs"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), count);
    for job in nodes {
        assert_eq!(
            job["processedBy"],
            json!([{"engineId": engine, "attempts": 1}]),
            "completed exactly once"
        );
    }
    assert_eq!(jobs["pending"]["nodes"], json!([]));
    assert_eq!(
        jobs["replies"]["nodes"].as_array().unwrap().len(),
        count,
        "one reply per job"
    );
    assert_eq!(jobs["engine"]["state"]["handled"], count);
}

async fn the_example_engine_resumes_after_a_kill(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "example").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = uuid::Uuid::new_v4().to_string();
    publish_jobs(&server, &s.run, 10).await;

    // First start: slow work, killed with SIGKILL after three completions.
    let mut first = Engine::start(&server, &s.run, &engine, &["--work-ms", "100"]);
    first.wait_for("(handled 3)").await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let before = first.completed();
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

    // Second start, four events at a time: it gets its state back and
    // handles exactly the rest.
    let remaining = (10 - handled).to_string();
    let mut second = Engine::start(
        &server,
        &s.run,
        &engine,
        &["--max-events", &remaining, "--max-in-flight", "4"],
    );
    second.finish().await;
    assert!(
        second.seen[0].contains(&format!("handled {handled} so far")),
        "{:?}",
        second.seen
    );
    let after = second.completed();

    // The kill may land between a commit and its line of output: the server's
    // records, not the printout, say what was completed, and how often.
    let before: HashSet<i64> = before.into_iter().map(|(sequence, _)| sequence).collect();
    let after: HashSet<i64> = after.into_iter().map(|(sequence, _)| sequence).collect();
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    assert_eq!(after.len() as i64, 10 - handled);
    assert_done_once(&server, &s.run, &engine, 10).await;
}

async fn the_example_engine_keeps_a_slow_event_with_heartbeats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "example").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = uuid::Uuid::new_v4().to_string();
    publish_jobs(&server, &s.run, 2).await;

    // Each job takes 2.5 s against a 1 s lease: only the heartbeat keeps it.
    let mut slow = Engine::start(
        &server,
        &s.run,
        &engine,
        &[
            "--lease-seconds",
            "1",
            "--work-ms",
            "2500",
            "--max-in-flight",
            "2",
            "--max-events",
            "2",
        ],
    );
    slow.finish().await;
    let completed = slow.completed();
    assert_eq!(completed.len(), 2, "{:?}", slow.seen);
    assert!(
        completed.iter().all(|&(_, attempt)| attempt == 1),
        "delivered once each: {:?}",
        slow.seen
    );
    assert!(
        !slow.seen.iter().any(|l| l.contains("lease lost")),
        "{:?}",
        slow.seen
    );
    assert_done_once(&server, &s.run, &engine, 2).await;
}

async fn the_example_engine_lets_go_of_a_lost_lease(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "example").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = uuid::Uuid::new_v4().to_string();
    publish_jobs(&server, &s.run, 1).await;

    // A hung instance works on the job, far longer than its lease.
    let mut hung = Engine::start(
        &server,
        &s.run,
        &engine,
        &["--lease-seconds", "2", "--work-ms", "600000"],
    );
    hung.wait_for("working on sequence").await;

    // A restarted instance of the same engine takes the job over; the hung
    // one's next heartbeat answers LEASE_LOST, and it moves on.
    let mut restarted = Engine::start(&server, &s.run, &engine, &["--max-events", "1"]);
    hung.wait_for("lease lost on sequence").await;
    assert!(hung.running(), "a lost lease is no crash: {:?}", hung.seen);
    drop(hung);
    restarted.finish().await;
    assert_eq!(restarted.completed().len(), 1, "{:?}", restarted.seen);
    assert_done_once(&server, &s.run, &engine, 1).await;
}
