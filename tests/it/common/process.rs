//! The server as a separate process (the built binary), for tests that kill
//! it or run several replicas on one database.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A `scenario-hub serve` process.
pub struct ProcessServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// Every line it printed so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl ProcessServer {
    /// Starts `scenario-hub serve` on `database_url`, port 0, with `env` added.
    pub async fn spawn(database_url: &str, env: &[(&str, &str)]) -> ProcessServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_scenario-hub"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("BIND", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start scenario-hub");
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        let addr = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let addr = loop {
                let line = lines.next().expect("the server prints where it listens");
                kept.lock().unwrap().push(line.clone());
                // Text logs say `address=...`, JSON logs `"address":"..."`.
                let rest = line
                    .split("address=")
                    .nth(1)
                    .or_else(|| line.split("\"address\":\"").nth(1));
                if let Some(rest) = rest {
                    let addr = rest.split(|c: char| c.is_whitespace() || c == '"');
                    break addr.into_iter().next().unwrap().parse().unwrap();
                }
            };
            // Keep draining, so that the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(|line| kept.lock().unwrap().push(line)));
            addr
        })
        .await
        .unwrap();
        ProcessServer { addr, child, logs }
    }

    /// The lines it printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Its log lines, also after it has stopped.
    pub fn logs_handle(&self) -> Arc<Mutex<Vec<String>>> {
        self.logs.clone()
    }

    /// Kills the process at once (SIGKILL): no shutdown, no cleanup.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends `signal` (`TERM`, `INT`, ...) and returns the exit status.
    pub async fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for ProcessServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GraphQL client for a server at `addr`.
pub struct Client {
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Client {
    /// A client of `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The `data` of a request that must succeed.
    pub async fn gql(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        let response: serde_json::Value = self
            .http
            .post(format!("http://{}/graphql", self.addr))
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON response");
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response:#}"
        );
        response["data"].clone()
    }

    /// A RUNNING run of a new template `template`, with an event type `job`;
    /// returns the run's id.
    pub async fn job_run(&self, template: &str) -> String {
        self.gql(
            "mutation { createEventType(input: {name: \"job\", category: \"test\"}) { name } }",
            serde_json::json!({}),
        )
        .await;
        let template = self
            .gql(
                "mutation($n: String!) { createScenarioTemplate(input: {name: $n}) { id } }",
                serde_json::json!({ "n": template }),
            )
            .await["createScenarioTemplate"]["id"]
            .clone();
        let run = self
            .gql(
                "mutation($t: UUID!) { createScenarioRun(input: {templateId: $t, name: \"r\"}) { id } }",
                serde_json::json!({ "t": template }),
            )
            .await["createScenarioRun"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.gql(
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: RUNNING) { status } }",
            serde_json::json!({ "r": run }),
        )
        .await;
        run
    }
}
