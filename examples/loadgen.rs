//! Load generator: drives an already running scenario-hub over HTTP and real
//! websockets (`graphql-transport-ws`) and prints one table of figures.
//!
//! ```sh
//! ulimit -n 65536   # the rss workload holds 10,000 websockets
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8000 \
//!     --workload all --duration 20 --concurrency 32 --server-pid "$(pgrep -n scenario-hub)"
//! ```
//!
//! Workloads (`--workload w1,w2,...` or `all`); each creates its own
//! template, run and event types under unique names, so they run against
//! one server in any order:
//!
//! - `w1` read: `events(runId, orderBy: PRIORITY, first: 50)` of a run holding
//!   1,000 events, selecting `id eventType type { name } priority payload`;
//!   `--concurrency` closed-loop workers for `--duration` seconds.
//! - `w2` `publishEvent` of a ~300-byte payload (checked against a small JSON
//!   Schema), `--concurrency` workers.
//! - `w3` `saveEngineState` of a ~2 KB state on 50 engines; worker `w` owns
//!   engines `w, w + concurrency, ...` and saves them in turn with their
//!   `expectedVersion` (compare-and-set), so no save conflicts.
//! - `w4` fan-out: 100 websocket subscribers on one run (live events, no
//!   `engineId`); a paced publisher sends 5,000 `publishEvent`s at 500/s, each
//!   payload carrying its send time; latency is publish-sent to received, per
//!   subscriber message; lost and duplicated are counted by sequence.
//! - `w5` `publishEvents` in batches of 500 (`--batch-concurrency` workers).
//! - `w6` backlog replay: 100,000 events published in batches of 1,000 (not
//!   timed), then a new engine subscribes with its `engineId`; events/s until
//!   all 100,000 arrived.
//! - `rss` (needs `--server-pid`): the server's VmRSS before and after opening
//!   1,000 and then 10,000 websockets with one idle subscription each; every
//!   subscription is proven live by one event before RSS is read. Start the
//!   server with `MAX_WS_CONNECTIONS` above 10,000.
//!
//! HTTP workloads run `--warmup` seconds first, then count `--duration`
//! seconds. The CPU column is the cores used during the measured window, read
//! from /proc at 100 ticks per second: this process, the server
//! (`--server-pid`), every `postgres` process, interrupts and softirqs
//! (loopback networking), and whatever else kept the machine busy.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// Command line of the load generator.
#[derive(Parser, Clone)]
#[command(about = "Drives a running scenario-hub and prints throughput and latency")]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Workloads to run, in this order: w1,w2,w3,w4,w5,w6,rss or `all`.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Measured seconds of each HTTP workload (w1, w2, w3, w5).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Unmeasured seconds before each HTTP workload.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Closed-loop workers of w1, w2 and w3.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Closed-loop workers of w5 (batches of 500 events).
    #[arg(long, default_value_t = 4)]
    batch_concurrency: usize,
    /// Websocket subscribers of w4.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Events published in w4.
    #[arg(long, default_value_t = 5000)]
    fanout_events: usize,
    /// Events per second the w4 publisher sends.
    #[arg(long, default_value_t = 500)]
    fanout_rate: u64,
    /// Events replayed in w6.
    #[arg(long, default_value_t = 100_000)]
    backlog_events: usize,
    /// Idle subscriptions held at each step of `rss`.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rss_steps: Vec<usize>,
    /// The server's process id: for `rss` and the CPU column.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Title of the table.
    #[arg(long, default_value = "scenario-hub")]
    label: String,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type BoxFut = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;
type Op = Arc<dyn Fn(usize, u64) -> BoxFut + Send + Sync>;

/// An operation that posts `body(worker, iteration)` and counts `items` for
/// each answered request.
fn posting(
    api: &Api,
    items: u64,
    body: impl Fn(usize, u64) -> String + Send + Sync + 'static,
) -> Op {
    let api = api.clone();
    Arc::new(move |w, i| {
        let (api, body) = (api.clone(), body(w, i));
        Box::pin(async move { api.post(body).await.map(|_| items) })
    })
}

/// One row of the result table.
struct Row {
    workload: String,
    throughput: String,
    p50: String,
    p99: String,
    max: String,
    faults: String,
    cpu: String,
    notes: String,
}

// ---------------------------------------------------------------- HTTP client

/// GraphQL over HTTP.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    fn new(url: &str, pool: usize) -> Api {
        Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(pool)
                .tcp_nodelay(true)
                .build()
                .expect("HTTP client"),
            url: format!("{}/graphql", url.trim_end_matches('/')),
        }
    }

    /// A call whose `data` we need.
    async fn call(&self, query: &str, variables: Value) -> Result<Value, String> {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let text = self.post(body).await?;
        let response: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match response.get("errors") {
            Some(errors) => Err(errors.to_string()),
            None => Ok(response["data"].clone()),
        }
    }

    /// Posts a ready body; an HTTP error or a GraphQL `errors` is an error.
    /// The body is only scanned, not parsed, to keep the client cheap.
    async fn post(&self, body: String) -> Result<String, String> {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() || text.contains("\"errors\":") {
            return Err(format!("{status}: {}", truncate(&text, 300)));
        }
        Ok(text)
    }
}

fn truncate(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A template, a RUNNING run and an event type, all named `{tag}_{suffix}`.
struct Fixture {
    run: Uuid,
    event_type: String,
}

/// JSON Schema of the benchmark event types that carry text.
fn text_schema() -> Value {
    json!({"type": "object", "required": ["text"],
           "properties": {"text": {"type": "string"}, "n": {"type": "integer"}}})
}

async fn fixture(api: &Api, tag: &str, schema: Option<Value>) -> Result<Fixture, String> {
    let suffix = &Uuid::new_v4().simple().to_string()[..12];
    let name = format!("bench_{tag}_{suffix}");
    let template = api
        .call(
            "mutation($n: String!) { createScenarioTemplate(input: {name: $n}) { id } }",
            json!({ "n": name }),
        )
        .await?["createScenarioTemplate"]["id"]
        .as_str()
        .ok_or("no template id")?
        .to_owned();
    let run: Uuid = api
        .call(
            "mutation($t: UUID!, $n: String!) { createScenarioRun(input: {templateId: $t, name: $n}) { id } }",
            json!({ "t": template, "n": name }),
        )
        .await?["createScenarioRun"]["id"]
        .as_str()
        .ok_or("no run id")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    api.call(
        "mutation($r: UUID!) { setRunStatus(runId: $r, status: RUNNING) { status } }",
        json!({ "r": run }),
    )
    .await?;
    api.call(
        "mutation($n: String!, $s: JSON) { createEventType(input: {name: $n, category: \"bench\", payloadSchema: $s}) { name } }",
        json!({ "n": name, "s": schema }),
    )
    .await?;
    Ok(Fixture {
        run,
        event_type: name,
    })
}

/// A payload of about 300 bytes (serialized).
fn payload_300(n: u64) -> Value {
    let text: String = "The merchant raises the price of bread again; the crowd murmurs and \
        a guard steps closer to the stall while the narrator notes the rising tension in \
        the square. A child slips through the crowd toward the fountain, and somebody \
        shouts a name nobody recognizes. The bell strikes noon."
        .chars()
        .take(270)
        .collect();
    json!({ "text": text, "n": n })
}

/// An engine state of about 2 KB (serialized).
fn state_2k(step: u64) -> Value {
    let memory: Vec<Value> = (0..20)
        .map(|i| json!({"key": format!("memory-{i:02}"), "value": format!("observation {i} of step {step}: the square is busy, prices rise")}))
        .collect();
    json!({ "step": step, "mood": "wary", "memory": memory })
}

// ---------------------------------------------------------------- statistics

/// Percentile `p` (0..=100) of sorted microsecond samples, in milliseconds.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------- CPU split

/// CPU ticks of the processes we watch and of the whole machine.
#[derive(Clone, Copy, Default)]
struct CpuSample {
    at: Option<Instant>,
    me: u64,
    server: u64,
    postgres: u64,
    /// Interrupts and softirqs (loopback networking is mostly here).
    irq: u64,
    machine_busy: u64,
}

fn proc_ticks(stat: &str) -> Option<u64> {
    // Fields after the `(comm)`: state is field 3; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn cpu_sample(server: Option<u32>) -> CpuSample {
    let read = |path: String| std::fs::read_to_string(path).ok();
    let me = read("/proc/self/stat".into())
        .and_then(|s| proc_ticks(&s))
        .unwrap_or(0);
    let server_ticks = server
        .and_then(|pid| read(format!("/proc/{pid}/stat")))
        .and_then(|s| proc_ticks(&s))
        .unwrap_or(0);
    let mut postgres = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(stat) = read(format!("/proc/{name}/stat"))
                && stat.contains("(postgres)")
            {
                postgres += proc_ticks(&stat).unwrap_or(0);
            }
        }
    }
    let (machine_busy, irq) = read("/proc/stat".into())
        .and_then(|s| {
            let line = s.lines().next()?.to_owned();
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let total: u64 = v.iter().take(8).sum();
            Some((total - v.get(3)? - v.get(4)?, v.get(5)? + v.get(6)?))
        })
        .unwrap_or((0, 0));
    CpuSample {
        at: Some(Instant::now()),
        me,
        server: server_ticks,
        postgres,
        irq,
        machine_busy,
    }
}

/// Cores used between two samples: "loadgen/server/postgres/irq/other",
/// where other is everything else busy on the machine.
fn cpu_split(a: CpuSample, b: CpuSample) -> String {
    let (Some(t0), Some(t1)) = (a.at, b.at) else {
        return "-".into();
    };
    let secs = (t1 - t0).as_secs_f64().max(0.001) * 100.0;
    let me = (b.me - a.me) as f64 / secs;
    let server = (b.server - a.server) as f64 / secs;
    let pg = (b.postgres.saturating_sub(a.postgres)) as f64 / secs;
    let irq = (b.irq - a.irq) as f64 / secs;
    let busy = (b.machine_busy - a.machine_busy) as f64 / secs;
    let other = (busy - me - server - pg - irq).max(0.0);
    format!("{me:.2}/{server:.2}/{pg:.2}/{irq:.2}/{other:.2}")
}

// ---------------------------------------------------------------- closed loop

struct LoopResult {
    items_per_sec: f64,
    sorted: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    cpu: String,
}

/// Runs `op` in `workers` closed loops: `warmup` unmeasured, then `duration`
/// measured. `op` returns how many items one call did (1, or a batch size).
async fn closed_loop(args: &Args, workers: usize, op: Op) -> LoopResult {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.duration);
    let server = args.server_pid;
    let probe = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let a = cpu_sample(server);
        tokio::time::sleep_until(until.into()).await;
        let b = cpu_sample(server);
        cpu_split(a, b)
    });
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let (mut items, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut last_end = measure_from;
            let mut i = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let result = op(w, i).await;
                let t1 = Instant::now();
                i += 1;
                if t0 < measure_from {
                    continue;
                }
                last_end = t1;
                match result {
                    Ok(n) => {
                        items += n;
                        samples.push((t1 - t0).as_micros() as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (samples, items, errors, first_error, last_end)
        }));
    }
    let mut sorted = Vec::new();
    let (mut items, mut errors, mut first_error) = (0, 0, None);
    let mut last_end = measure_from;
    for task in tasks {
        let (s, n, e, fe, end) = task.await.expect("worker");
        sorted.extend(s);
        items += n;
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
        last_end = last_end.max(end);
    }
    sorted.sort_unstable();
    let window = (last_end - measure_from).as_secs_f64().max(0.001);
    LoopResult {
        items_per_sec: items as f64 / window,
        sorted,
        errors,
        first_error,
        cpu: probe.await.unwrap_or_default(),
    }
}

fn loop_row(workload: &str, unit: &str, r: &LoopResult, notes: String) -> Row {
    if let Some(e) = &r.first_error {
        eprintln!("{workload}: {} errors, first: {e}", r.errors);
    }
    Row {
        workload: workload.into(),
        throughput: format!("{} {unit}", thousands(r.items_per_sec)),
        p50: ms(pct(&r.sorted, 50.0)),
        p99: ms(pct(&r.sorted, 99.0)),
        max: ms(pct(&r.sorted, 100.0)),
        faults: format!("{} errors", r.errors),
        cpu: r.cpu.clone(),
        notes,
    }
}

// ---------------------------------------------------------------- W1-W3, W5

async fn w1(args: &Args, api: &Api) -> Result<Row, String> {
    let f = fixture(api, "w1", Some(text_schema())).await?;
    // 1,000 events with priorities 0..9, so the page is the top 50 of an index scan.
    for batch in 0..2u64 {
        let inputs: Vec<Value> = (0..500u64)
            .map(|i| {
                let n = batch * 500 + i;
                json!({"runId": f.run, "eventType": f.event_type, "priority": (n * 7) % 10, "payload": payload_300(n)})
            })
            .collect();
        api.call(
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { sequence } }",
            json!({ "i": inputs }),
        )
        .await?;
    }
    let body = json!({
        "query": "query($r: UUID!) { events(runId: $r, orderBy: PRIORITY, first: 50) { nodes { id eventType type { name } priority payload } } }",
        "variables": {"r": f.run},
    })
    .to_string();
    let sample = api.post(body.clone()).await?;
    let op = posting(api, 1, move |_, _| body.clone());
    let r = closed_loop(args, args.concurrency, op).await;
    Ok(loop_row(
        "W1 events(PRIORITY, first 50)",
        "req/s",
        &r,
        format!(
            "c={}, run of 1,001 events, response {} B",
            args.concurrency,
            sample.len()
        ),
    ))
}

async fn w2(args: &Args, api: &Api) -> Result<Row, String> {
    let f = fixture(api, "w2", Some(text_schema())).await?;
    let size = payload_300(0).to_string().len();
    let (run, event_type) = (f.run, f.event_type);
    let op = posting(api, 1, move |w, i| {
        json!({
            "query": "mutation($e: EventInput!) { publishEvent(input: $e) { id sequence } }",
            "variables": {"e": {"runId": run, "eventType": event_type, "payload": payload_300(w as u64 * 1_000_000 + i)}},
        })
        .to_string()
    });
    let r = closed_loop(args, args.concurrency, op).await;
    Ok(loop_row(
        "W2 publishEvent",
        "req/s",
        &r,
        format!("c={}, payload {size} B, one run", args.concurrency),
    ))
}

async fn w3(args: &Args, api: &Api) -> Result<Row, String> {
    let f = fixture(api, "w3", None).await?;
    const ENGINES: usize = 50;
    let mut engines = Vec::new();
    for _ in 0..ENGINES {
        let id = Uuid::new_v4();
        let version = api
            .call(
                "mutation($i: RegisterEngineInput!) { registerEngine(input: $i) { version } }",
                json!({"i": {"engineId": id, "runId": f.run, "engineType": "BenchEngine", "state": state_2k(0)}}),
            )
            .await?["registerEngine"]["version"]
            .as_i64()
            .ok_or("no version")?;
        engines.push((id, AtomicI64::new(version)));
    }
    let engines = Arc::new(engines);
    let size = state_2k(1).to_string().len();
    let workers = args.concurrency;
    let api2 = api.clone();
    let op: Op = Arc::new(move |w, i| {
        let api = api2.clone();
        let engines = engines.clone();
        Box::pin(async move {
            // Worker w owns engines w, w + workers, ...: nobody else saves them.
            if w >= ENGINES {
                return Err(format!("worker {w} owns no engine"));
            }
            let owned = (ENGINES - w).div_ceil(workers).max(1);
            let e = w + workers * (i as usize % owned);
            let Some((id, version)) = engines.get(e) else {
                return Err(format!("worker {w} owns no engine"));
            };
            let expected = version.load(Ordering::Relaxed);
            let body = json!({
                "query": "mutation($e: UUID!, $s: JSON!, $v: Int) { saveEngineState(engineId: $e, state: $s, expectedVersion: $v) { version } }",
                "variables": {"e": id, "s": state_2k(i), "v": expected},
            })
            .to_string();
            match api.post(body).await {
                Ok(_) => {
                    version.store(expected + 1, Ordering::Relaxed);
                    Ok(1)
                }
                Err(e) => {
                    // Learn the stored version again, then report the error.
                    if let Ok(data) = api
                        .call(
                            "query($e: UUID!) { engine(engineId: $e) { version } }",
                            json!({"e": id}),
                        )
                        .await
                        && let Some(v) = data["engine"]["version"].as_i64()
                    {
                        version.store(v, Ordering::Relaxed);
                    }
                    Err(e)
                }
            }
        })
    });
    let r = closed_loop(args, workers, op).await;
    Ok(loop_row(
        "W3 saveEngineState",
        "req/s",
        &r,
        format!("c={workers}, {ENGINES} engines, state {size} B, expectedVersion"),
    ))
}

async fn w5(args: &Args, api: &Api) -> Result<Row, String> {
    const BATCH: usize = 500;
    let f = fixture(api, "w5", Some(text_schema())).await?;
    let inputs: Vec<Value> = (0..BATCH as u64)
        .map(|n| json!({"runId": f.run, "eventType": f.event_type, "payload": payload_300(n)}))
        .collect();
    let body = json!({
        "query": "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { sequence } }",
        "variables": {"i": inputs},
    })
    .to_string();
    let size = body.len();
    let op = posting(api, BATCH as u64, move |_, _| body.clone());
    let r = closed_loop(args, args.batch_concurrency, op).await;
    Ok(loop_row(
        "W5 publishEvents x500",
        "events/s",
        &r,
        format!(
            "c={}, one run, request {} KB; latency per batch",
            args.batch_concurrency,
            size / 1000
        ),
    ))
}

// ---------------------------------------------------------------- websockets

fn ws_url(url: &str) -> String {
    format!(
        "{}/graphql",
        url.trim_end_matches('/').replacen("http", "ws", 1)
    )
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Opens a `graphql-transport-ws` connection and waits for `connection_ack`.
async fn ws_ready(url: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    // Small buffers: the rss workload holds 10,000 of these in this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send(text(json!({"type": "connection_init", "payload": {}})))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                match v["type"].as_str() {
                    Some("connection_ack") => return Ok(socket),
                    Some("ping") => socket
                        .send(text(json!({"type": "pong"})))
                        .await
                        .map_err(|e| e.to_string())?,
                    _ => return Err(format!("unexpected {v}")),
                }
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => return Err(format!("no connection_ack: {other:?}")),
            Err(_) => return Err("no connection_ack in 30 s".into()),
        }
    }
}

async fn ws_subscribe(socket: &mut Ws, query: &str, variables: Value) -> Result<(), String> {
    socket
        .send(text(json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})))
        .await
        .map_err(|e| e.to_string())
}

/// The integer after `"key":` in `text`, without parsing the whole message.
fn number_after(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// What one frame was, for the subscriber loops.
enum Frame {
    Next(String),
    Ping,
    Other(String),
    Closed(String),
}

async fn read_frame(socket: &mut Ws) -> Frame {
    match socket.next().await {
        Some(Ok(Message::Text(t))) => {
            let t = t.to_string();
            if t.contains("\"type\":\"next\"") {
                Frame::Next(t)
            } else if t.contains("\"type\":\"ping\"") {
                Frame::Ping
            } else {
                Frame::Other(t)
            }
        }
        Some(Ok(Message::Close(c))) => Frame::Closed(format!("{c:?}")),
        Some(Ok(_)) => Frame::Other(String::new()),
        Some(Err(e)) => Frame::Closed(e.to_string()),
        None => Frame::Closed("end of stream".into()),
    }
}

async fn pong(socket: &mut Ws) {
    let _ = socket.send(text(json!({"type": "pong"}))).await;
}

async fn w4(args: &Args, api: &Api) -> Result<Row, String> {
    let f = fixture(api, "w4", None).await?;
    let url = ws_url(&args.url);
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Subscribers that saw a warm-up event: then every subscription is live.
    let warmed = Arc::new(AtomicUsize::new(0));
    // Measured messages received by all subscribers.
    let measured = Arc::new(AtomicUsize::new(0));
    let mut subs = Vec::new();
    for _ in 0..args.subscribers {
        let mut socket = ws_ready(&url).await?;
        ws_subscribe(
            &mut socket,
            "subscription($r: UUID!) { events(runId: $r) { sequence payload } }",
            json!({"r": f.run}),
        )
        .await?;
        let (warmed, measured) = (warmed.clone(), measured.clone());
        let mut stop = stop_rx.clone();
        subs.push(tokio::spawn(async move {
            // (sequence, received µs, latency µs) of measured events.
            let mut got: Vec<(i64, u64, u64)> = Vec::new();
            let mut saw_warmup = false;
            let mut problem = None;
            loop {
                let frame = tokio::select! {
                    frame = read_frame(&mut socket) => frame,
                    _ = stop.changed() => break,
                };
                let received = epoch.elapsed().as_micros() as u64;
                match frame {
                    Frame::Next(t) => {
                        let v: Value = match serde_json::from_str(&t) {
                            Ok(v) => v,
                            Err(e) => {
                                problem.get_or_insert(e.to_string());
                                continue;
                            }
                        };
                        let event = &v["payload"]["data"]["events"];
                        let (Some(seq), Some(sent)) =
                            (event["sequence"].as_i64(), event["payload"]["t"].as_u64())
                        else {
                            problem.get_or_insert(t);
                            continue;
                        };
                        if event["payload"]["warmup"] == true {
                            if !saw_warmup {
                                saw_warmup = true;
                                warmed.fetch_add(1, Ordering::SeqCst);
                            }
                        } else {
                            got.push((seq, received, received.saturating_sub(sent)));
                            measured.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Frame::Ping => pong(&mut socket).await,
                    Frame::Other(t) if t.is_empty() => {}
                    Frame::Other(t) | Frame::Closed(t) => {
                        problem.get_or_insert(t);
                        break;
                    }
                }
            }
            (got, problem)
        }));
    }
    // Warm up until every subscriber is live.
    let publish_query = "mutation($e: EventInput!) { publishEvent(input: $e) { sequence } }";
    let deadline = Instant::now() + Duration::from_secs(30);
    while warmed.load(Ordering::SeqCst) < args.subscribers {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} subscribers live after 30 s",
                warmed.load(Ordering::SeqCst),
                args.subscribers
            ));
        }
        api.call(
            publish_query,
            json!({"e": {"runId": f.run, "eventType": f.event_type,
                         "payload": {"warmup": true, "t": epoch.elapsed().as_micros() as u64}}}),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The paced publisher: one publish every 1/rate s, each in its own task
    // (open loop), at most 256 in flight.
    let cpu0 = cpu_sample(args.server_pid);
    // (sequence, µs at the publisher's HTTP response) of each published event.
    let published = Arc::new(Mutex::new(Vec::with_capacity(args.fanout_events)));
    let publish_lat = Arc::new(Mutex::new(Vec::with_capacity(args.fanout_events)));
    let errors = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(Semaphore::new(256));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.fanout_rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.fanout_events {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        let (api, published, publish_lat, errors) = (
            api.clone(),
            published.clone(),
            publish_lat.clone(),
            errors.clone(),
        );
        let (run, event_type) = (f.run, f.event_type.clone());
        tasks.push(tokio::spawn(async move {
            let t = epoch.elapsed().as_micros() as u64;
            let body = json!({"query": publish_query, "variables": {"e": {"runId": run, "eventType": event_type, "payload": {"t": t, "i": i}}}}).to_string();
            let t0 = Instant::now();
            match api.post(body).await {
                Ok(text) => {
                    publish_lat
                        .lock()
                        .unwrap()
                        .push(t0.elapsed().as_micros() as u64);
                    if let Some(seq) = number_after(&text, "\"sequence\":") {
                        let acked = epoch.elapsed().as_micros() as u64;
                        published.lock().unwrap().push((seq, acked));
                    }
                }
                Err(e) => {
                    if errors.fetch_add(1, Ordering::SeqCst) == 0 {
                        eprintln!("w4 publish error: {e}");
                    }
                }
            }
            drop(permit);
        }));
    }
    let sending = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let publish_window = started.elapsed().as_secs_f64();
    // Let the last events arrive (5 s at most), then stop the subscribers.
    let acked: HashMap<i64, u64> = published.lock().unwrap().iter().copied().collect();
    let published: Vec<i64> = acked.keys().copied().collect();
    let want = published.len() * args.subscribers;
    let deadline = Instant::now() + Duration::from_secs(5);
    while measured.load(Ordering::SeqCst) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = cpu_sample(args.server_pid);
    let _ = stop_tx.send(true);
    let expected: std::collections::HashSet<i64> = published.iter().copied().collect();
    let (mut all, mut lost, mut dup, mut problems) = (Vec::new(), 0usize, 0usize, 0usize);
    // Received minus the publisher's HTTP response: the delivery part alone
    // (0 when the event arrived before the response).
    let mut after_ack = Vec::new();
    for s in subs {
        let (got, problem) = s.await.map_err(|e| e.to_string())?;
        if let Some(p) = problem {
            problems += 1;
            if problems == 1 {
                eprintln!("w4 subscriber problem: {}", truncate(&p, 300));
            }
        }
        let mut seen: HashMap<i64, usize> = HashMap::new();
        for (seq, received, lat) in got {
            *seen.entry(seq).or_default() += 1;
            all.push(lat);
            if let Some(ack) = acked.get(&seq) {
                after_ack.push(received.saturating_sub(*ack));
            }
        }
        lost += expected.iter().filter(|s| !seen.contains_key(s)).count();
        dup += seen.values().map(|n| n - 1).sum::<usize>();
    }
    all.sort_unstable();
    after_ack.sort_unstable();
    let mut pl = publish_lat.lock().unwrap().clone();
    pl.sort_unstable();
    Ok(Row {
        workload: "W4 fan-out 100 subs".into(),
        throughput: format!(
            "{} events/s sent, {} msgs/s recv",
            thousands(published.len() as f64 / publish_window),
            thousands(all.len() as f64 / publish_window)
        ),
        p50: ms(pct(&all, 50.0)),
        p99: ms(pct(&all, 99.0)),
        max: ms(pct(&all, 100.0)),
        faults: format!(
            "{lost} lost, {dup} dup, {} publish errors",
            errors.load(Ordering::SeqCst)
        ),
        cpu: cpu_split(cpu0, cpu1),
        notes: format!(
            "{} events paced at {}/s (sent in {sending:.1} s), {} msgs; publishEvent p50 {} p99 {} ms; received after its response p50 {} p99 {} ms",
            published.len(),
            args.fanout_rate,
            all.len(),
            ms(pct(&pl, 50.0)),
            ms(pct(&pl, 99.0)),
            ms(pct(&after_ack, 50.0)),
            ms(pct(&after_ack, 99.0))
        ),
    })
}

async fn w6(args: &Args, api: &Api) -> Result<Row, String> {
    const BATCH: usize = 1000;
    let f = fixture(api, "w6", Some(text_schema())).await?;
    let batches = args.backlog_events.div_ceil(BATCH);
    let t_fill = Instant::now();
    let filled = futures::stream::iter(0..batches)
        .map(|b| {
            let n = BATCH.min(args.backlog_events - b * BATCH);
            let inputs: Vec<Value> = (0..n as u64)
                .map(|i| json!({"runId": f.run, "eventType": f.event_type, "priority": i % 10, "payload": payload_300(i)}))
                .collect();
            let api = api.clone();
            async move {
                api.call(
                    "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { sequence } }",
                    json!({"i": inputs}),
                )
                .await
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = filled.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    eprintln!(
        "w6: {} events published in {:.1} s (not timed)",
        args.backlog_events,
        t_fill.elapsed().as_secs_f64()
    );
    let engine = Uuid::new_v4();
    api.call(
        "mutation($i: RegisterEngineInput!) { registerEngine(input: $i) { version } }",
        json!({"i": {"engineId": engine, "runId": f.run, "engineType": "BenchEngine"}}),
    )
    .await?;
    let mut socket = ws_ready(&ws_url(&args.url)).await?;
    let cpu0 = cpu_sample(args.server_pid);
    let t0 = Instant::now();
    ws_subscribe(
        &mut socket,
        "subscription($r: UUID!, $e: UUID!) { events(runId: $r, engineId: $e) { id sequence priority eventType payload } }",
        json!({"r": f.run, "e": engine}),
    )
    .await?;
    // The backlog also holds the run's run_status_changed (sequence 1).
    let want = args.backlog_events + 1;
    let mut seen = vec![0u8; want + 1];
    let (mut distinct, mut dup, mut bytes) = (0usize, 0usize, 0usize);
    let mut first = None;
    let mut problem = None;
    while distinct < want {
        let frame =
            match tokio::time::timeout(Duration::from_secs(60), read_frame(&mut socket)).await {
                Ok(frame) => frame,
                Err(_) => {
                    problem = Some("no event for 60 s".to_owned());
                    break;
                }
            };
        match frame {
            Frame::Next(t) => {
                first.get_or_insert_with(|| t0.elapsed());
                bytes += t.len();
                match number_after(&t, "\"sequence\":") {
                    Some(s) if s >= 1 && (s as usize) <= want => {
                        let slot = &mut seen[s as usize];
                        if *slot == 0 {
                            distinct += 1;
                        } else {
                            dup += 1;
                        }
                        *slot = slot.saturating_add(1);
                    }
                    _ => {
                        problem.get_or_insert(t);
                    }
                }
            }
            Frame::Ping => pong(&mut socket).await,
            Frame::Other(t) if t.is_empty() => {}
            Frame::Other(t) | Frame::Closed(t) => {
                problem = Some(t);
                break;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(args.server_pid);
    if let Some(p) = &problem {
        eprintln!("w6 problem: {}", truncate(p, 300));
    }
    let _ = socket.close(None).await;
    Ok(Row {
        workload: "W6 backlog replay".into(),
        throughput: format!("{} events/s", thousands(distinct as f64 / elapsed)),
        p50: "-".into(),
        p99: "-".into(),
        max: "-".into(),
        faults: format!("{} lost, {dup} dup", want - distinct),
        cpu: cpu_split(cpu0, cpu1),
        notes: format!(
            "{distinct} events in {elapsed:.2} s, first after {:.0} ms, {} B/msg",
            first.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            bytes / distinct.max(1)
        ),
    })
}

// ---------------------------------------------------------------- RSS

fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

async fn rss(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let pid = args
        .server_pid
        .ok_or("the rss workload needs --server-pid")?;
    let f = fixture(api, "rss", None).await?;
    let url = ws_url(&args.url);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Connections that received an event: each one's proof of a live subscription.
    let live = Arc::new(AtomicUsize::new(0));
    let baseline = vm_rss_kib(pid)?;
    let mut rows = Vec::new();
    let mut held = Vec::new();
    let mut steps = args.rss_steps.clone();
    steps.sort_unstable();
    for step in steps {
        let t0 = Instant::now();
        let opened = futures::stream::iter(held.len()..step)
            .map(|_| {
                let url = url.clone();
                let run = f.run;
                async move {
                    let mut socket = ws_ready(&url).await?;
                    ws_subscribe(
                        &mut socket,
                        "subscription($r: UUID!) { events(runId: $r) { sequence } }",
                        json!({"r": run}),
                    )
                    .await?;
                    Ok::<Ws, String>(socket)
                }
            })
            .buffer_unordered(100)
            .collect::<Vec<_>>()
            .await;
        for socket in opened {
            let mut socket = socket?;
            let live = live.clone();
            let mut stop = stop_rx.clone();
            held.push(tokio::spawn(async move {
                let mut seen = false;
                loop {
                    let frame = tokio::select! {
                        frame = read_frame(&mut socket) => frame,
                        _ = stop.changed() => break,
                    };
                    match frame {
                        Frame::Next(_) => {
                            if !seen {
                                seen = true;
                                live.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Frame::Ping => pong(&mut socket).await,
                        Frame::Other(t) if t.is_empty() => {}
                        Frame::Other(t) | Frame::Closed(t) => {
                            eprintln!("rss: a connection ended: {}", truncate(&t, 200));
                            break;
                        }
                    }
                }
                let _ = socket.close(None).await;
            }));
        }
        let open_secs = t0.elapsed().as_secs_f64();
        // A subscription without afterSequence gets live events only, from the
        // moment it is registered: publish a probe every 200 ms until every
        // connection has received one.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut probes = 0;
        while live.load(Ordering::SeqCst) < held.len() && Instant::now() < deadline {
            api.call(
                "mutation($e: EventInput!) { publishEvent(input: $e) { sequence } }",
                json!({"e": {"runId": f.run, "eventType": f.event_type, "payload": {}}}),
            )
            .await?;
            probes += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now_live = live.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = vm_rss_kib(pid)?;
        let per = (now as f64 - baseline as f64) / step as f64;
        rows.push(Row {
            workload: format!("RSS {} idle subs", thousands(step as f64)),
            throughput: format!("{per:.1} KiB/sub"),
            p50: "-".into(),
            p99: "-".into(),
            max: "-".into(),
            faults: if now_live >= held.len() {
                "all live".into()
            } else {
                format!("{now_live} of {} live", held.len())
            },
            cpu: "-".into(),
            notes: format!(
                "VmRSS {} -> {} KiB; opened in {open_secs:.1} s, {probes} probe events",
                thousands(baseline as f64),
                thousands(now as f64)
            ),
        });
    }
    let _ = stop_tx.send(true);
    for h in held {
        let _ = h.await;
    }
    Ok(rows)
}

// ---------------------------------------------------------------- main

fn print_table(args: &Args, rows: &[Row]) {
    let mut out = String::new();
    let _ = writeln!(out, "\n### {}\n", args.label);
    let _ = writeln!(
        out,
        "| workload | throughput | p50 ms | p99 ms | max ms | errors / lost / dup | CPU cores loadgen/server/postgres/irq/other | notes |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload, r.throughput, r.p50, r.p99, r.max, r.faults, r.cpu, r.notes
        );
    }
    println!("{out}");
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let names: Vec<String> = if args.workload == "all" {
        ["w1", "w2", "w3", "w4", "w5", "w6", "rss"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.workload
            .split(',')
            .map(|s| s.trim().to_lowercase())
            .collect()
    };
    let api = Api::new(&args.url, args.concurrency.max(args.batch_concurrency) + 8);
    let mut rows = Vec::new();
    for name in &names {
        eprintln!("running {name} ...");
        let result = match name.as_str() {
            "w1" => w1(&args, &api).await.map(|r| vec![r]),
            "w2" => w2(&args, &api).await.map(|r| vec![r]),
            "w3" => w3(&args, &api).await.map(|r| vec![r]),
            "w4" => w4(&args, &api).await.map(|r| vec![r]),
            "w5" => w5(&args, &api).await.map(|r| vec![r]),
            "w6" => w6(&args, &api).await.map(|r| vec![r]),
            "rss" => rss(&args, &api).await,
            other => Err(format!("unknown workload {other:?}")),
        };
        match result {
            Ok(r) => {
                for row in &r {
                    eprintln!(
                        "  {}: {} p50 {} p99 {} max {} ({}) cpu {}",
                        row.workload,
                        row.throughput,
                        row.p50,
                        row.p99,
                        row.max,
                        row.faults,
                        row.cpu
                    );
                }
                rows.extend(r);
            }
            Err(e) => {
                eprintln!("{name} failed: {e}");
                rows.push(Row {
                    workload: name.clone(),
                    throughput: "failed".into(),
                    p50: "-".into(),
                    p99: "-".into(),
                    max: "-".into(),
                    faults: "-".into(),
                    cpu: "-".into(),
                    notes: truncate(&e, 200).replace('|', "/"),
                });
            }
        }
        // Let the server settle (closed websockets, feeds pruned) between workloads.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    print_table(&args, &rows);
    Ok(())
}
