//! Graceful shutdown of the server process: a request already being read
//! when SIGTERM or SIGINT arrives is finished and stored, and the process
//! exits 0.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::common::process::{Client, ProcessServer};
use crate::common::ws::PATIENCE;
use crate::common::{Backend, TestDb};

both_backends!(
    an_in_flight_completion_finishes_on_a_signal,
    a_request_that_never_ends_does_not_hold_shutdown,
);

/// A running run with one engine and one event of a new type `name`;
/// returns (engine, event).
async fn one_job(client: &Client, name: &str) -> (String, String) {
    let template = client
        .gql(
            "mutation($n: String!) { createScenarioTemplate(input: {name: $n}) { id } }",
            json!({ "n": name }),
        )
        .await["createScenarioTemplate"]["id"]
        .clone();
    let run = client
        .gql(
            "mutation($t: UUID!) { createScenarioRun(input: {templateId: $t, name: \"r\"}) { id } }",
            json!({ "t": template }),
        )
        .await["createScenarioRun"]["id"]
        .clone();
    client
        .gql(
            "mutation($r: UUID!, $n: String!) { setRunStatus(runId: $r, status: RUNNING) { status } \
             createEventType(input: {name: $n, category: \"test\"}) { name } }",
            json!({ "r": run, "n": name }),
        )
        .await;
    let engine = client
        .gql(
            "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ActorEngine\"}) { engineId } }",
            json!({ "r": run }),
        )
        .await["registerEngine"]["engineId"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = client
        .gql(
            "mutation($r: UUID!, $n: String!) { publishEvent(input: {runId: $r, eventType: $n}) { id } }",
            json!({ "r": run, "n": name }),
        )
        .await["publishEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (engine, event)
}

async fn an_in_flight_completion_finishes_on_a_signal(backend: Backend) {
    let db = TestDb::new(backend).await;
    for (round, signal) in ["TERM", "INT"].into_iter().enumerate() {
        let server = ProcessServer::spawn(&db.url, &[]).await;
        let client = Client::new(server.addr);
        let (engine, event) = one_job(&client, &format!("shutdown_{round}")).await;

        // `Expect: 100-continue` makes the server say when the handler has
        // started reading the body: the request is then in flight for sure.
        let body = json!({
            "query": "mutation($ev: UUID!, $e: UUID!) { completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, state: {stopped: true}}) { engine { version } } }",
            "variables": { "ev": event, "e": engine },
        })
        .to_string();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nexpect: 100-continue\r\n\r\n",
            server.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).await.unwrap();
        assert!(
            String::from_utf8_lossy(&interim).starts_with("HTTP/1.1 100 Continue"),
            "{}",
            String::from_utf8_lossy(&interim)
        );
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(first.as_bytes()).await.unwrap();

        let logs = server.logs_handle();
        let stopped = tokio::spawn(server.stop(signal));
        // Once the server says it has the signal, it must still wait for the
        // request whose body is incomplete (and answer it, below).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while !logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("shutdown signal received"))
        {
            assert!(tokio::time::Instant::now() < deadline, "the signal arrived");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            !stopped.is_finished(),
            "SIGINT/SIGTERM waits for the request"
        );
        stream.write_all(rest.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""version":2"#), "{response}");

        let status = stopped.await.unwrap();
        assert!(status.success(), "SIG{signal}: exit status {status}");

        // Stored: a new server on the same database sees the record and state.
        let server = ProcessServer::spawn(&db.url, &[]).await;
        let client = Client::new(server.addr);
        let stored = client
            .gql(
                "query($e: UUID!, $ev: UUID!) { engine(engineId: $e) { version state } event(id: $ev) { processedBy { status } } }",
                json!({ "e": engine, "ev": event }),
            )
            .await;
        assert_eq!(stored["engine"]["version"], 2, "SIG{signal}");
        assert_eq!(stored["engine"]["state"], json!({"stopped": true}));
        assert_eq!(
            stored["event"]["processedBy"],
            json!([{"status": "PROCESSED"}])
        );
    }
}

async fn a_request_that_never_ends_does_not_hold_shutdown(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = ProcessServer::spawn(&db.url, &[("SHUTDOWN_TIMEOUT_MS", "300")]).await;
    // Headers, the server's 100 Continue, then silence: the body never comes.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\nexpect: 100-continue\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert!(String::from_utf8_lossy(&interim).starts_with("HTTP/1.1 100 Continue"));

    let logs = server.logs_handle();
    let status = tokio::time::timeout(PATIENCE, server.stop("TERM"))
        .await
        .expect("the process stops after its shutdown timeout");
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        logs.lock().unwrap().join("\n")
    );
    // The pipe's last lines may still be on their way to the reader thread.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = logs.lock().unwrap().join("\n");
        if text.contains("shutdown timeout") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no shutdown timeout warning in:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stream);
}
