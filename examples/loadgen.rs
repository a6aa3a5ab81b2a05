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
//!   timed), then a new engine subscribes with its `engineId` and
//!   `maxInFlight: 1000` (`--replay-window`) and records what it receives
//!   as a fast engine would: up to 100 aliased `recordProcessing` fields
//!   with their `leaseId`s per HTTP request (`--record-batch`), sent while it
//!   keeps reading, at most 8 requests in flight (`--record-concurrency`); a
//!   partial batch goes after 5 ms (`--replay-window 0`: no window, no
//!   leases, as before leased delivery). events/s until all 100,001 arrived,
//!   records/s until all were recorded. A second row reads the same run with
//!   `afterSequence: 0` (no engine, no leases, no records): the read-only
//!   replay path.
//! - `w7` priority under load: 10 engines (`--w7-engines`) on one run, each
//!   subscribed with `maxInFlight` 1 and then 10 (`--w7-windows`, one fresh
//!   run each), read their websocket eagerly into an in-memory queue (a
//!   reader task), and a handler takes one event at a time from that queue,
//!   waits 20 ms (`--w7-handle-ms`), then records it with its `leaseId` and
//!   takes the next. A paced publisher sends `--w7-rate` events/s (default
//!   600, above what 10 engines at 20 ms can handle, so backlogs grow) for
//!   `--duration` s, priorities uniform 0..9, each targeted at one engine
//!   round-robin (`--w7-broadcast`: untargeted, every engine gets every
//!   event); then the engines drain the backlog. Reports events handled/s,
//!   latency from publish to record, and priority inversions per engine
//!   (defined at `inversions`).
//! - `w8` engine groups (competing consumers): one run per group size in
//!   `--w8-members` (default 1, 2, 4). The members register with one
//!   `group` and `engineType`; a backlog of 4,000 untargeted events
//!   (`--w8-events`, `publishEvents` batches of 500, not timed) is published
//!   first, then all members subscribe at once with `maxInFlight` 1
//!   (`--w8-window`) and handle events as w7's engines do, 5 ms each
//!   (`--w8-handle-ms`). Timed until every event is recorded: events
//!   handled/s, the ratio to the 1-member figure, and the split per member
//!   (each event must go to exactly one).
//! - `fork` (not in `all`): a run of 100,000 events (`--fork-events`,
//!   `publishEvents` batches of 1,000, each event targeted at one of 10
//!   engines, `--fork-engines`) of which every engine completes half with a
//!   small state save (not timed); then `forkRun` at the last sequence and
//!   at half of it, each timed alone: events copied per second, with the
//!   records and versions it carried.
//! - `export` (not in `all`): a run of 1,000,000 events (`--export-events`,
//!   ~300-byte payloads, not timed), then `GET /api/v1/runs/{id}/export`
//!   read to the end: events/s, MB/s, and (with `--server-pid`) the
//!   server's VmRSS before and its peak while it streams. The run id is in
//!   the notes, for `scenario-hub export` timed by `bench/timeline.sh`.
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

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
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
    /// Workloads to run, in this order: w1,w2,w3,w4,w5,w6,w7,w8,rss or `all`.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Measured seconds of each HTTP workload (w1, w2, w3, w5).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Unmeasured seconds before each HTTP workload.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Runs that w1 reads and w2 publishes into, spread over the workers'
    /// requests (one hot run measures its row lock, not the request).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Page sizes of w1, one w1 row per value (the cost curve per event).
    #[arg(long, value_delimiter = ',', default_value = "50")]
    w1_first: Vec<usize>,
    /// Batch sizes of w5, one w5 row per value (at most 1,000).
    #[arg(long, value_delimiter = ',', default_value = "500")]
    w5_batch: Vec<usize>,
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
    /// `maxInFlight` of the w6 engine; 0 leaves the window and leases out
    /// of the subscription and the records (the W6 of a build before leased
    /// delivery, for A/B runs against one).
    #[arg(long, default_value_t = 1000)]
    replay_window: usize,
    /// Most `recordProcessing` fields in one w6 request.
    #[arg(long, default_value_t = 100)]
    record_batch: usize,
    /// Most w6 record requests in flight at once.
    #[arg(long, default_value_t = 8)]
    record_concurrency: usize,
    /// Seconds after which the recorded w6 replay stops, finished or not.
    #[arg(long, default_value_t = 300)]
    replay_limit: u64,
    /// Engines of w7.
    #[arg(long, default_value_t = 10)]
    w7_engines: usize,
    /// Milliseconds a w7 handler works on each event before recording it.
    #[arg(long, default_value_t = 20)]
    w7_handle_ms: u64,
    /// Events per second the w7 publisher sends (all engines together).
    #[arg(long, default_value_t = 600)]
    w7_rate: u64,
    /// `maxInFlight` of the w7 engines; one w7 run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    w7_windows: Vec<usize>,
    /// w7 events untargeted (every engine gets every event) instead of
    /// targeted at one engine each, round-robin.
    #[arg(long)]
    w7_broadcast: bool,
    /// Members of the w8 group; one w8 run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    w8_members: Vec<usize>,
    /// `maxInFlight` of each w8 member.
    #[arg(long, default_value_t = 1)]
    w8_window: usize,
    /// Milliseconds a w8 member works on each event before recording it.
    #[arg(long, default_value_t = 5)]
    w8_handle_ms: u64,
    /// Events in the w8 backlog.
    #[arg(long, default_value_t = 4000)]
    w8_events: usize,
    /// Events of the `fork` workload's run.
    #[arg(long, default_value_t = 100_000)]
    fork_events: usize,
    /// Engines of the `fork` workload's run.
    #[arg(long, default_value_t = 10)]
    fork_engines: usize,
    /// Events of the `export` workload's run.
    #[arg(long, default_value_t = 1_000_000)]
    export_events: usize,
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

    /// Posts a ready body; only an HTTP error is an error: the body is
    /// returned as it came, `errors` or not.
    async fn post_any(&self, body: String) -> Result<String, String> {
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
        if !status.is_success() {
            return Err(format!("{status}: {}", truncate(&text, 300)));
        }
        Ok(text)
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
    template: String,
}

/// `f.run` and `n - 1` more RUNNING runs of its template.
async fn runs_of(api: &Api, f: &Fixture, n: usize) -> Result<Vec<Uuid>, String> {
    let mut runs = vec![f.run];
    for i in 1..n.max(1) {
        runs.push(running_run(api, &f.template, &format!("{}-{i}", f.event_type)).await?);
    }
    Ok(runs)
}

/// A new RUNNING run `name` of `template`.
async fn running_run(api: &Api, template: &str, name: &str) -> Result<Uuid, String> {
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
    Ok(run)
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
    let run = running_run(api, &template, &name).await?;
    api.call(
        "mutation($n: String!, $s: JSON) { createEventType(input: {name: $n, category: \"bench\", payloadSchema: $s}) { name } }",
        json!({ "n": name, "s": schema }),
    )
    .await?;
    Ok(Fixture {
        run,
        event_type: name,
        template,
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
#[derive(Clone, Default)]
struct CpuSample {
    at: Option<Instant>,
    me: u64,
    server: u64,
    /// Per `postgres` process: one that ends between two samples (an
    /// autovacuum worker) must not take its whole life's CPU off the sum.
    postgres: HashMap<u32, u64>,
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
    let mut postgres = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(pid) = name.parse::<u32>() else {
                continue;
            };
            if let Some(stat) = read(format!("/proc/{pid}/stat"))
                && stat.contains("(postgres)")
            {
                postgres.insert(pid, proc_ticks(&stat).unwrap_or(0));
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

/// Cores used between two samples, by whom.
#[derive(Clone, Copy)]
struct Cores {
    me: f64,
    server: f64,
    postgres: f64,
    irq: f64,
    other: f64,
    /// Seconds between the samples.
    secs: f64,
}

fn cores(a: &CpuSample, b: &CpuSample) -> Option<Cores> {
    let (t0, t1) = (a.at?, b.at?);
    let secs = (t1 - t0).as_secs_f64().max(0.001);
    let ticks = secs * 100.0;
    let me = (b.me - a.me) as f64 / ticks;
    let server = (b.server - a.server) as f64 / ticks;
    // A process born in between spent all it has in between.
    let postgres = b
        .postgres
        .iter()
        .map(|(pid, t)| t.saturating_sub(a.postgres.get(pid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / ticks;
    let irq = (b.irq - a.irq) as f64 / ticks;
    let busy = (b.machine_busy - a.machine_busy) as f64 / ticks;
    let other = (busy - me - server - postgres - irq).max(0.0);
    Some(Cores {
        me,
        server,
        postgres,
        irq,
        other,
        secs,
    })
}

/// Cores used between two samples: "loadgen/server/postgres/irq/other",
/// where other is everything else busy on the machine.
fn cpu_split(a: &CpuSample, b: &CpuSample) -> String {
    match cores(a, b) {
        Some(c) => format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
            c.me, c.server, c.postgres, c.irq, c.other
        ),
        None => "-".into(),
    }
}

/// CPU per item between two samples: the server's and PostgreSQL's
/// microseconds for each of `items` done in that window.
fn cpu_per(a: &CpuSample, b: &CpuSample, items: usize, what: &str) -> String {
    match cores(a, b) {
        Some(c) if items > 0 => {
            let per = |cores: f64| cores * c.secs * 1e6 / items as f64;
            format!(
                "CPU per {what}: server {:.0} µs, postgres {:.0} µs",
                per(c.server),
                per(c.postgres)
            )
        }
        _ => format!("CPU per {what}: -"),
    }
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
        cpu_split(&a, &b)
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

async fn w1(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let f = fixture(api, "w1", Some(text_schema())).await?;
    let runs = runs_of(api, &f, args.runs).await?;
    // 1,000 events a run with priorities 0..9, so the page is the top 50 of an index scan.
    for run in &runs {
        for batch in 0..2u64 {
            let inputs: Vec<Value> = (0..500u64)
                .map(|i| {
                    let n = batch * 500 + i;
                    json!({"runId": run, "eventType": f.event_type, "priority": (n * 7) % 10, "payload": payload_300(n)})
                })
                .collect();
            api.call(
                "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { sequence } }",
                json!({ "i": inputs }),
            )
            .await?;
        }
    }
    let mut rows = Vec::new();
    for &first in &args.w1_first {
        let bodies: Vec<String> = runs
            .iter()
            .map(|run| {
                json!({
                    "query": "query($r: UUID!, $n: Int) { events(runId: $r, orderBy: PRIORITY, first: $n) { nodes { id eventType type { name } priority payload } } }",
                    "variables": {"r": run, "n": first},
                })
                .to_string()
            })
            .collect();
        let sample = api.post(bodies[0].clone()).await?;
        let op = posting(api, 1, move |w, i| {
            bodies[(w + i as usize) % bodies.len()].clone()
        });
        let r = closed_loop(args, args.concurrency, op).await;
        rows.push(loop_row(
            &format!("W1 events(PRIORITY, first {first})"),
            "req/s",
            &r,
            format!(
                "c={}, {} runs of 1,001 events, response {} B",
                args.concurrency,
                runs.len(),
                sample.len()
            ),
        ));
    }
    Ok(rows)
}

async fn w2(args: &Args, api: &Api) -> Result<Row, String> {
    let f = fixture(api, "w2", Some(text_schema())).await?;
    let size = payload_300(0).to_string().len();
    let runs = runs_of(api, &f, args.runs).await?;
    let count = runs.len();
    let event_type = f.event_type;
    let op = posting(api, 1, move |w, i| {
        let run = runs[(w + i as usize) % runs.len()];
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
        format!("c={}, payload {size} B, {count} runs", args.concurrency),
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

async fn w5(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let f = fixture(api, "w5", Some(text_schema())).await?;
    let mut rows = Vec::new();
    for &batch in &args.w5_batch {
        let inputs: Vec<Value> = (0..batch as u64)
            .map(|n| json!({"runId": f.run, "eventType": f.event_type, "payload": payload_300(n)}))
            .collect();
        let body = json!({
            "query": "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { sequence } }",
            "variables": {"i": inputs},
        })
        .to_string();
        let size = body.len();
        let op = posting(api, batch as u64, move |_, _| body.clone());
        let r = closed_loop(args, args.batch_concurrency, op).await;
        rows.push(loop_row(
            &format!("W5 publishEvents x{batch}"),
            "events/s",
            &r,
            format!(
                "c={}, one run, request {} KB; latency per batch",
                args.batch_concurrency,
                size / 1000
            ),
        ));
    }
    Ok(rows)
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
        cpu: cpu_split(&cpu0, &cpu1),
        notes: format!(
            "{} events paced at {}/s (sent in {sending:.1} s), {} msgs; publishEvent p50 {} p99 {} ms; received after its response p50 {} p99 {} ms; {}",
            published.len(),
            args.fanout_rate,
            all.len(),
            ms(pct(&pl, 50.0)),
            ms(pct(&pl, 99.0)),
            ms(pct(&after_ack, 50.0)),
            ms(pct(&after_ack, 99.0)),
            cpu_per(&cpu0, &cpu1, all.len(), "message")
        ),
    })
}

// ---------------------------------------------------------------- W6, W7: engines

/// The string after `key` (which ends with the opening quote) up to the
/// closing quote; `None` when absent (a JSON `null` does not match `key`).
fn string_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let end = text[at..].find('"')?;
    Some(&text[at..at + end])
}

/// An event as an engine subscription delivered it.
struct Delivered {
    id: String,
    sequence: i64,
    priority: i64,
    lease: Option<String>,
    attempt: i64,
}

/// Reads what loadgen needs from an engine subscription's `next` message,
/// selected as `{ eventId: id sequence priority delivery { leaseId attempt }
/// ... }` (the alias makes the event's id the only `"eventId"` key; the
/// server does not keep the selection's field order).
fn delivered(text: &str) -> Option<Delivered> {
    Some(Delivered {
        id: string_after(text, "\"eventId\":\"")?.to_owned(),
        sequence: number_after(text, "\"sequence\":")?,
        priority: number_after(text, "\"priority\":")?,
        lease: string_after(text, "\"leaseId\":\"").map(str::to_owned),
        attempt: number_after(text, "\"attempt\":").unwrap_or(0),
    })
}

/// The body of one request that records `items` (event id, lease id) as
/// PROCESSED by `engine`: one aliased `recordProcessing` field each, inputs
/// as variables, so that requests of one size share one query text (the
/// server keeps parsed documents by text).
fn records_body(engine: Uuid, items: &[(String, Option<String>)]) -> String {
    let mut query = String::from("mutation(");
    for i in 0..items.len() {
        let _ = write!(query, "$r{i}: RecordProcessingInput!, ");
    }
    query.push_str(") {");
    for i in 0..items.len() {
        let _ = write!(
            query,
            " r{i}: recordProcessing(input: $r{i}) {{ attempts }}"
        );
    }
    query.push_str(" }");
    let variables: serde_json::Map<String, Value> = items
        .iter()
        .enumerate()
        .map(|(i, (event, lease))| {
            (
                format!("r{i}"),
                match lease {
                    Some(lease) => json!({"eventId": event, "engineId": engine, "status": "PROCESSED", "leaseId": lease}),
                    None => json!({"eventId": event, "engineId": engine, "status": "PROCESSED"}),
                },
            )
        })
        .collect();
    json!({ "query": query, "variables": variables }).to_string()
}

/// Sends an engine's records in batches, several requests at once, and
/// counts what the server accepted.
#[derive(Clone)]
struct Recorder {
    api: Api,
    engine: Uuid,
    slots: Arc<Semaphore>,
    epoch: Instant,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// µs after `epoch` when the last answer came.
    last_answer: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    fn new(api: &Api, engine: Uuid, concurrency: usize, epoch: Instant) -> Recorder {
        Recorder {
            api: api.clone(),
            engine,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            epoch,
            accepted: Arc::default(),
            refused: Arc::default(),
            requests: Arc::default(),
            last_answer: Arc::default(),
            first_error: Arc::default(),
        }
    }

    /// Records `items` in one request, in a task of its own that waits for
    /// a free slot: the caller goes on reading meanwhile.
    fn send(&self, items: Vec<(String, Option<String>)>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let _slot = me.slots.acquire().await.expect("semaphore");
            let n = items.len();
            let (accepted, error) = match me.api.post_any(records_body(me.engine, &items)).await {
                // Each accepted field answers `{"attempts":n}`; a refused one is null.
                Ok(text) => {
                    let accepted = text.matches("\"attempts\":").count();
                    (accepted, (accepted < n).then_some(text))
                }
                Err(e) => (0, Some(e)),
            };
            me.requests.fetch_add(1, Ordering::SeqCst);
            me.accepted.fetch_add(accepted, Ordering::SeqCst);
            me.refused.fetch_add(n - accepted, Ordering::SeqCst);
            me.last_answer
                .fetch_max(me.epoch.elapsed().as_micros() as u64, Ordering::SeqCst);
            if let Some(e) = error {
                me.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| truncate(&e, 300).to_owned());
            }
        })
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a replay read: distinct and duplicated sequences, bytes, the time
/// of the first event, a problem that ended it early.
#[derive(Default)]
struct Replay {
    distinct: usize,
    dup: usize,
    bytes: usize,
    first: Option<Duration>,
    problem: Option<String>,
}

impl Replay {
    /// Counts one `next` message; its sequence, when it has a valid one.
    fn take(&mut self, seen: &mut [u8], t0: Instant, text: &str) -> Option<i64> {
        self.first.get_or_insert_with(|| t0.elapsed());
        self.bytes += text.len();
        match number_after(text, "\"sequence\":") {
            Some(s) if s >= 1 && (s as usize) < seen.len() => {
                let slot = &mut seen[s as usize];
                if *slot == 0 {
                    self.distinct += 1;
                } else {
                    self.dup += 1;
                }
                *slot = slot.saturating_add(1);
                Some(s)
            }
            _ => {
                self.problem.get_or_insert_with(|| text.to_owned());
                None
            }
        }
    }
}

async fn w6(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
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
                    "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                    json!({"i": inputs}),
                )
                .await
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    // The events' ids, for the records-alone row.
    let mut ids: Vec<String> = Vec::with_capacity(args.backlog_events);
    for batch in filled {
        let data = batch?;
        if let Some(events) = data["publishEvents"].as_array() {
            ids.extend(
                events
                    .iter()
                    .filter_map(|e| e["id"].as_str().map(str::to_owned)),
            );
        }
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
    // The backlog also holds the run's run_status_changed (sequence 1).
    let want = args.backlog_events + 1;
    let mut socket = ws_ready(&ws_url(&args.url)).await?;
    let cpu0 = cpu_sample(args.server_pid);
    let t0 = Instant::now();
    let (subscription, variables) = if args.replay_window == 0 {
        (
            "subscription($r: UUID!, $e: UUID!) { events(runId: $r, engineId: $e) { eventId: id sequence priority eventType payload } }",
            json!({"r": f.run, "e": engine}),
        )
    } else {
        (
            "subscription($r: UUID!, $e: UUID!, $w: Int) { events(runId: $r, engineId: $e, maxInFlight: $w) { eventId: id sequence priority eventType payload delivery { leaseId attempt } } }",
            json!({"r": f.run, "e": engine, "w": args.replay_window}),
        )
    };
    ws_subscribe(&mut socket, subscription, variables).await?;
    let recorder = Recorder::new(api, engine, args.record_concurrency, t0);
    let batch_size = args.record_batch.max(1);
    // A partial batch waits this long for more events before it goes.
    let linger = Duration::from_millis(5);
    let mut seen = vec![0u8; want + 1];
    let mut replay = Replay::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut flush_at = None;
    let mut sends = Vec::new();
    let give_up = t0 + Duration::from_secs(args.replay_limit);
    let mut stopped = false;
    let mut report = t0 + Duration::from_secs(10);
    while replay.distinct < want {
        let now = Instant::now();
        if now >= give_up {
            stopped = true;
            replay.problem = Some(format!(
                "stopped after {} s (--replay-limit): {} of {want} events read, {} recorded",
                args.replay_limit,
                replay.distinct,
                recorder.accepted.load(Ordering::SeqCst)
            ));
            break;
        }
        if now >= report {
            eprintln!(
                "w6: {:.0} s: {} events read, {} recorded",
                (now - t0).as_secs_f64(),
                replay.distinct,
                recorder.accepted.load(Ordering::SeqCst)
            );
            report += Duration::from_secs(10);
        }
        let read = tokio::time::timeout(Duration::from_secs(60), read_frame(&mut socket));
        let frame = tokio::select! {
            frame = read => match frame {
                Ok(frame) => frame,
                Err(_) => {
                    replay.problem = Some(format!(
                        "no event for 60 s after {} events, {} recorded",
                        replay.distinct,
                        recorder.accepted.load(Ordering::SeqCst)
                    ));
                    break;
                }
            },
            () = sleep_until(flush_at), if flush_at.is_some() => {
                sends.push(recorder.send(std::mem::take(&mut batch)));
                flush_at = None;
                continue;
            }
        };
        match frame {
            Frame::Next(t) => {
                replay.take(&mut seen, t0, &t);
                match delivered(&t) {
                    Some(d) => batch.push((d.id, d.lease)),
                    None => {
                        replay.problem.get_or_insert(t);
                    }
                }
                if batch.len() >= batch_size {
                    sends.push(recorder.send(std::mem::take(&mut batch)));
                    flush_at = None;
                } else if flush_at.is_none() && !batch.is_empty() {
                    flush_at = Some(tokio::time::Instant::now() + linger);
                }
            }
            Frame::Ping => pong(&mut socket).await,
            Frame::Other(t) if t.is_empty() => {}
            Frame::Other(t) | Frame::Closed(t) => {
                replay.problem = Some(t);
                break;
            }
        }
    }
    let read_secs = t0.elapsed().as_secs_f64();
    if !batch.is_empty() {
        sends.push(recorder.send(batch));
    }
    for s in sends {
        let _ = s.await;
    }
    let cpu1 = cpu_sample(args.server_pid);
    let recorded = recorder.accepted.load(Ordering::SeqCst);
    let refused = recorder.refused.load(Ordering::SeqCst);
    let requests = recorder.requests.load(Ordering::SeqCst);
    let record_secs = recorder.last_answer.load(Ordering::SeqCst) as f64 / 1e6;
    if let Some(p) = &replay.problem {
        eprintln!("w6 problem: {}", truncate(p, 300));
    }
    if let Some(e) = recorder.first_error.lock().unwrap().as_ref() {
        eprintln!("w6 record error: {e}");
    }
    let _ = socket.close(None).await;
    let mut rows = vec![Row {
        workload: match args.replay_window {
            0 => "W6 backlog replay, no window, recorded".to_owned(),
            w => format!("W6 backlog replay, maxInFlight {w}, recorded"),
        },
        throughput: format!(
            "{} events/s, {} records/s",
            thousands(replay.distinct as f64 / read_secs),
            thousands(recorded as f64 / record_secs.max(0.001))
        ),
        p50: "-".into(),
        p99: "-".into(),
        max: "-".into(),
        faults: format!(
            "{} {}, {} dup, {refused} record errors",
            want - replay.distinct,
            if stopped {
                format!("not read in {} s", args.replay_limit)
            } else {
                "lost".to_owned()
            },
            replay.dup
        ),
        cpu: cpu_split(&cpu0, &cpu1),
        notes: format!(
            "{} events in {read_secs:.2} s, all recorded after {record_secs:.2} s, first after {:.0} ms, {} B/msg; {requests} record requests ({:.0} fields each, at most {} in flight); {}",
            replay.distinct,
            replay.first.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            replay.bytes / replay.distinct.max(1),
            recorded as f64 / requests.max(1) as f64,
            args.record_concurrency,
            cpu_per(&cpu0, &cpu1, replay.distinct, "event")
        ),
    }];

    // The same run read by sequence, as tooling does: no engine, no
    // leases, no records.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut socket = ws_ready(&ws_url(&args.url)).await?;
    let cpu0 = cpu_sample(args.server_pid);
    let t0 = Instant::now();
    ws_subscribe(
        &mut socket,
        "subscription($r: UUID!) { events(runId: $r, afterSequence: 0) { id sequence priority eventType payload } }",
        json!({"r": f.run}),
    )
    .await?;
    let mut seen = vec![0u8; want + 1];
    let mut replay = Replay::default();
    while replay.distinct < want {
        let frame =
            match tokio::time::timeout(Duration::from_secs(60), read_frame(&mut socket)).await {
                Ok(frame) => frame,
                Err(_) => {
                    replay.problem = Some("no event for 60 s".to_owned());
                    break;
                }
            };
        match frame {
            Frame::Next(t) => {
                replay.take(&mut seen, t0, &t);
            }
            Frame::Ping => pong(&mut socket).await,
            Frame::Other(t) if t.is_empty() => {}
            Frame::Other(t) | Frame::Closed(t) => {
                replay.problem = Some(t);
                break;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(args.server_pid);
    if let Some(p) = &replay.problem {
        eprintln!("w6 (afterSequence) problem: {}", truncate(p, 300));
    }
    let _ = socket.close(None).await;
    let read_only = Row {
        workload: "W6 replay by afterSequence (read only)".into(),
        throughput: format!("{} events/s", thousands(replay.distinct as f64 / elapsed)),
        p50: "-".into(),
        p99: "-".into(),
        max: "-".into(),
        faults: format!("{} lost, {} dup", want - replay.distinct, replay.dup),
        cpu: cpu_split(&cpu0, &cpu1),
        notes: format!(
            "{} events in {elapsed:.2} s, first after {:.0} ms, {} B/msg; {}",
            replay.distinct,
            replay.first.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            replay.bytes / replay.distinct.max(1),
            cpu_per(&cpu0, &cpu1, replay.distinct, "event")
        ),
    };
    rows.push(read_only);

    // The record path alone: another engine of the run records the first
    // 20,000 events the same way (batches, requests in flight), without a
    // subscription, so without leases (a record without `leaseId` is
    // accepted) and without the window's refills.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = Uuid::new_v4();
    api.call(
        "mutation($i: RegisterEngineInput!) { registerEngine(input: $i) { version } }",
        json!({"i": {"engineId": other, "runId": f.run, "engineType": "BenchEngine"}}),
    )
    .await?;
    let take = ids.len().min(20_000);
    let cpu0 = cpu_sample(args.server_pid);
    let t0 = Instant::now();
    let recorder = Recorder::new(api, other, args.record_concurrency, t0);
    let sends: Vec<_> = ids[..take]
        .chunks(batch_size)
        .map(|chunk| recorder.send(chunk.iter().map(|id| (id.clone(), None)).collect()))
        .collect();
    for s in sends {
        let _ = s.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(args.server_pid);
    let recorded = recorder.accepted.load(Ordering::SeqCst);
    if let Some(e) = recorder.first_error.lock().unwrap().as_ref() {
        eprintln!("w6 (records alone) error: {e}");
    }
    rows.push(Row {
        workload: "W6 records alone (no subscription)".into(),
        throughput: format!("{} records/s", thousands(recorded as f64 / secs)),
        p50: "-".into(),
        p99: "-".into(),
        max: "-".into(),
        faults: format!(
            "{} record errors",
            recorder.refused.load(Ordering::SeqCst)
        ),
        cpu: cpu_split(&cpu0, &cpu1),
        notes: format!(
            "{recorded} of the run's events recorded in {secs:.2} s by a second engine, {} requests of up to {batch_size} fields, at most {} in flight, no leaseId; {}",
            recorder.requests.load(Ordering::SeqCst),
            args.record_concurrency,
            cpu_per(&cpu0, &cpu1, recorded, "record")
        ),
    });
    Ok(rows)
}

/// One event a w7 or w8 handler worked on; times in µs after the workload's epoch.
#[derive(Clone, Copy)]
struct Handled {
    sequence: i64,
    priority: i64,
    attempt: i64,
    /// When the handler asked for its next event: it had sent the record of
    /// the previous one (for the first, it had subscribed).
    ready: u64,
    /// When it took this event from its queue.
    take: u64,
    record_sent: u64,
    record_done: u64,
    /// The server accepted the record.
    recorded: bool,
}

/// One event the w7 publisher sent; times in µs after the epoch.
#[derive(Clone, Copy)]
struct Published {
    sent: u64,
    /// When the publisher had the server's answer: committed by then.
    acked: u64,
    priority: i64,
    /// The engine it was targeted at (an index); `None`: every engine.
    target: Option<usize>,
}

/// A slow engine's shared parts (w7, w8): one event at a time, `handle`
/// of work each.
#[derive(Clone)]
struct HandlingEngine {
    api: Api,
    engine: Uuid,
    handle: Duration,
    epoch: Instant,
    log: Arc<Mutex<Vec<Handled>>>,
    stop: watch::Receiver<bool>,
}

type Problem = Option<String>;

impl HandlingEngine {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Runs the engine on a subscribed socket: a reader task reads the
    /// websocket eagerly into an unbounded queue (as Python gql and Node
    /// graphql-ws clients do), and a handler takes one event at a time
    /// from it, works `handle` on it, records it with its lease, and only
    /// then takes the next.
    fn start(
        self,
        mut socket: Ws,
        subscribed: u64,
    ) -> (
        tokio::task::JoinHandle<Problem>,
        tokio::task::JoinHandle<Problem>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delivered>();
        let mut stop = self.stop.clone();
        let reader = tokio::spawn(async move {
            let mut problem = None;
            loop {
                let frame = tokio::select! {
                    frame = read_frame(&mut socket) => frame,
                    _ = stop.changed() => break,
                };
                match frame {
                    Frame::Next(t) => match delivered(&t) {
                        Some(d) => {
                            if tx.send(d).is_err() {
                                break;
                            }
                        }
                        None => {
                            problem.get_or_insert(t);
                        }
                    },
                    Frame::Ping => pong(&mut socket).await,
                    Frame::Other(t) if t.is_empty() => {}
                    Frame::Other(t) | Frame::Closed(t) => {
                        problem.get_or_insert(t);
                        break;
                    }
                }
            }
            let _ = socket.close(None).await;
            problem
        });
        let handler = tokio::spawn(async move {
            let mut stop = self.stop.clone();
            let mut ready = subscribed;
            let mut problem = None;
            loop {
                let d = tokio::select! {
                    d = rx.recv() => match d {
                        Some(d) => d,
                        None => break,
                    },
                    _ = stop.changed() => break,
                };
                let take = self.now();
                tokio::time::sleep(self.handle).await;
                let record_sent = self.now();
                let body = records_body(self.engine, &[(d.id, d.lease)]);
                let recorded = match self.api.post_any(body).await {
                    Ok(text) if text.contains("\"attempts\":") => true,
                    Ok(text) => {
                        problem.get_or_insert_with(|| truncate(&text, 300).to_owned());
                        false
                    }
                    Err(e) => {
                        problem.get_or_insert(e);
                        false
                    }
                };
                let record_done = self.now();
                self.log.lock().unwrap().push(Handled {
                    sequence: d.sequence,
                    priority: d.priority,
                    attempt: d.attempt,
                    ready,
                    take,
                    record_sent,
                    record_done,
                    recorded,
                });
                ready = record_sent;
            }
            problem
        });
        (reader, handler)
    }
}

/// An engine's subscription as `delivered` reads it, `$w` its `maxInFlight`.
const ENGINE_EVENTS: &str = "subscription($r: UUID!, $e: UUID!, $w: Int) { events(runId: $r, engineId: $e, maxInFlight: $w) { eventId: id sequence priority delivery { leaseId attempt } } }";

/// A reproducible pseudo-random number of `i` (splitmix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn w7(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (i, window) in args.w7_windows.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        rows.push(w7_once(args, api, *window).await?);
    }
    Ok(rows)
}

/// Priority inversions seen by one engine's handler. Handler takes are in
/// the log's order. Event A is inverted against B, a less urgent event
/// that the handler took, when A was routed to this engine, its publish
/// had been answered (so it was committed) before the handler asked for
/// its next event (`ready`: it sent the record of the event before B),
/// and the handler took A after B, or never. An A committed later, while B
/// was already chosen or in flight, is not an inversion: those are
/// counted apart as in-flight overtakes (answered before B was taken).
#[derive(Default)]
struct Inversions {
    /// Pairs (A, B).
    pairs: usize,
    /// Takes B with at least one A.
    takes: usize,
    /// Pairs where A was answered after `ready` but before B was taken.
    in_flight: usize,
    /// The first few pairs, described (times in ms after the epoch).
    examples: Vec<String>,
}

fn inversions(
    log: &[Handled],
    routed: &[(i64, &Published)],
    first_take: &HashMap<i64, u64>,
) -> Inversions {
    let mut out = Inversions::default();
    // Most urgent first, so each B looks only at the more urgent As.
    let mut by_priority: Vec<(i64, u64, u64, i64)> = routed
        .iter()
        .map(|(seq, p)| {
            let take = first_take.get(seq).copied().unwrap_or(u64::MAX);
            (p.priority, p.acked, take, *seq)
        })
        .collect();
    by_priority.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
    let at = |us: u64| us as f64 / 1000.0;
    for b in log {
        if first_take.get(&b.sequence) != Some(&b.take) {
            continue;
        }
        let mut inverted = false;
        for &(priority, acked, take, seq) in &by_priority {
            if priority <= b.priority {
                break;
            }
            if take <= b.take {
                continue;
            }
            if acked < b.ready {
                out.pairs += 1;
                inverted = true;
                if out.examples.len() < 3 {
                    out.examples.push(format!(
                        "event {seq} (priority {priority}, publish answered at {:.1} ms, taken at {:.1}) after event {} (priority {}, handler ready at {:.1}, took it at {:.1})",
                        at(acked),
                        at(take),
                        b.sequence,
                        b.priority,
                        at(b.ready),
                        at(b.take)
                    ));
                }
            } else if acked < b.take {
                out.in_flight += 1;
            }
        }
        out.takes += usize::from(inverted);
    }
    out
}

async fn w7_once(args: &Args, api: &Api, window: usize) -> Result<Row, String> {
    let f = fixture(api, "w7", None).await?;
    let n = args.w7_engines.max(1);
    let mut engines = Vec::new();
    for _ in 0..n {
        let id = Uuid::new_v4();
        api.call(
            "mutation($i: RegisterEngineInput!) { registerEngine(input: $i) { version } }",
            json!({"i": {"engineId": id, "runId": f.run, "engineType": "BenchEngine"}}),
        )
        .await?;
        engines.push(id);
    }
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_micros() as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let url = ws_url(&args.url);
    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    for id in &engines {
        let mut socket = ws_ready(&url).await?;
        ws_subscribe(
            &mut socket,
            ENGINE_EVENTS,
            json!({"r": f.run, "e": id, "w": window}),
        )
        .await?;
        let log = Arc::new(Mutex::new(Vec::new()));
        logs.push(log.clone());
        let engine = HandlingEngine {
            api: api.clone(),
            engine: *id,
            handle: Duration::from_millis(args.w7_handle_ms),
            epoch,
            log,
            stop: stop_rx.clone(),
        };
        tasks.push(engine.start(socket, now()));
    }
    let publish_query = "mutation($e: EventInput!) { publishEvent(input: $e) { sequence } }";
    let input = |i: u64, priority: i64, target: Option<usize>| {
        let mut e = json!({"runId": f.run, "eventType": f.event_type, "priority": priority, "payload": {"i": i}});
        if let Some(t) = target {
            e["targetEngineId"] = json!(engines[t]);
        }
        json!({ "e": e })
    };
    // Warm up: every engine handles one event (after the run's
    // run_status_changed), so every subscription is live before measuring.
    let targets: Vec<Option<usize>> = if args.w7_broadcast {
        vec![None]
    } else {
        (0..n).map(Some).collect()
    };
    let mut warm = Vec::new();
    for t in &targets {
        let data = api.call(publish_query, input(0, 0, *t)).await?;
        warm.push(
            data["publishEvent"]["sequence"]
                .as_i64()
                .ok_or("no sequence")?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = logs
            .iter()
            .enumerate()
            .filter(|(e, log)| {
                let log = log.lock().unwrap();
                let mine = if args.w7_broadcast { warm[0] } else { warm[*e] };
                log.iter().any(|h| h.sequence == mine)
            })
            .count();
        if live == n {
            break;
        }
        if Instant::now() > deadline {
            let _ = stop_tx.send(true);
            let mut problem = String::new();
            for (reader, handler) in tasks {
                for t in [reader, handler] {
                    if let Ok(Some(p)) = t.await {
                        problem = p;
                    }
                }
            }
            return Err(format!(
                "w7: only {live} of {n} engines handled their warm-up event in 30 s {}",
                truncate(&problem, 200)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The paced publisher: open loop, one task per event, at most 256 in flight.
    let count = (args.w7_rate * args.duration) as usize;
    let published: Arc<Mutex<HashMap<i64, Published>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(count)));
    let errors = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(Semaphore::new(256));
    let mut ticker =
        tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.w7_rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu0 = cpu_sample(args.server_pid);
    let publish_start = now();
    let mut publishers = Vec::new();
    for i in 0..count as u64 {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        let priority = (mix(i) % 10) as i64;
        let target = (!args.w7_broadcast).then_some(i as usize % n);
        let body = json!({"query": publish_query, "variables": input(i + 1, priority, target)})
            .to_string();
        let (api, published, errors) = (api.clone(), published.clone(), errors.clone());
        publishers.push(tokio::spawn(async move {
            let sent = now();
            match api.post(body).await {
                Ok(text) => match number_after(&text, "\"sequence\":") {
                    Some(seq) => {
                        let acked = now();
                        published.lock().unwrap().insert(
                            seq,
                            Published {
                                sent,
                                acked,
                                priority,
                                target,
                            },
                        );
                    }
                    None => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                },
                Err(e) => {
                    if errors.fetch_add(1, Ordering::SeqCst) == 0 {
                        eprintln!("w7 publish error: {e}");
                    }
                }
            }
            drop(permit);
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
    let publish_end = now();
    let cpu1 = cpu_sample(args.server_pid);
    let published = published.lock().unwrap().clone();
    let routed_to = |p: &Published, e: usize| p.target.is_none_or(|t| t == e);
    let expected: Vec<usize> = (0..n)
        .map(|e| published.values().filter(|p| routed_to(p, e)).count())
        .collect();
    let handled_by = |e: usize, until: u64| {
        let log = logs[e].lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        for h in log.iter() {
            if h.recorded && h.record_done <= until && published.contains_key(&h.sequence) {
                seen.insert(h.sequence);
            }
        }
        seen.len()
    };
    let in_window: usize = (0..n).map(|e| handled_by(e, publish_end)).sum();
    // Handled per second in the first and the last quarter of the window:
    // whether the engines slow down as the run grows.
    let quarter = (publish_end - publish_start) / 4;
    let done_between = |from: u64, to: u64| {
        logs.iter()
            .map(|log| {
                log.lock()
                    .unwrap()
                    .iter()
                    .filter(|h| {
                        h.recorded
                            && (from..to).contains(&h.record_done)
                            && published.contains_key(&h.sequence)
                    })
                    .count()
            })
            .sum::<usize>() as f64
            / (quarter.max(1) as f64 / 1e6)
    };
    let first_quarter = done_between(publish_start, publish_start + quarter);
    let last_quarter = done_between(publish_end - quarter, publish_end);
    let backlog: usize = expected.iter().sum::<usize>() - in_window;
    // Drain: the engines work off their backlogs (2 minutes at most).
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..n).any(|e| handled_by(e, u64::MAX) < expected[e]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut problems = Vec::new();
    for (reader, handler) in tasks {
        for t in [reader, handler] {
            if let Ok(Some(p)) = t.await {
                problems.push(p);
            }
        }
    }
    if let Some(p) = problems.first() {
        eprintln!(
            "w7 engine problem ({} in all): {}",
            problems.len(),
            truncate(p, 300)
        );
    }

    // The figures, over the measured events (warm-ups and the run's
    // run_status_changed left out).
    let (mut latency, mut gaps, mut record_lat) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_priority: Vec<Vec<u64>> = vec![Vec::new(); 10];
    let (mut handled, mut again, mut refused, mut redelivered) = (0usize, 0usize, 0usize, 0usize);
    let mut inv = Inversions::default();
    let mut last_done = publish_end;
    for (e, log) in logs.iter().enumerate() {
        let log: Vec<Handled> = log.lock().unwrap().clone();
        let mut first_take: HashMap<i64, u64> = HashMap::new();
        let mut prev_done = None;
        for h in &log {
            let measured = published.get(&h.sequence);
            if measured.is_some() {
                record_lat.push(h.record_done - h.record_sent);
                refused += usize::from(!h.recorded);
                redelivered += usize::from(h.attempt > 1);
                if let Some(prev) = prev_done {
                    gaps.push(h.take.saturating_sub(prev));
                }
            }
            prev_done = Some(h.record_done);
            let Some(p) = measured else { continue };
            if first_take.contains_key(&h.sequence) {
                again += 1;
                continue;
            }
            first_take.insert(h.sequence, h.take);
            handled += 1;
            last_done = last_done.max(h.record_done);
            let l = h.record_done.saturating_sub(p.sent);
            latency.push(l);
            if let Some(v) = by_priority.get_mut(p.priority as usize) {
                v.push(l);
            }
        }
        let routed: Vec<(i64, &Published)> = published
            .iter()
            .filter(|(_, p)| routed_to(p, e))
            .map(|(s, p)| (*s, p))
            .collect();
        let measured_log: Vec<Handled> = log
            .iter()
            .filter(|h| published.contains_key(&h.sequence))
            .copied()
            .collect();
        let i = inversions(&measured_log, &routed, &first_take);
        inv.pairs += i.pairs;
        inv.takes += i.takes;
        inv.in_flight += i.in_flight;
        for example in i.examples {
            eprintln!("w7 inversion, engine {e}: {example}");
        }
    }
    for v in [&mut latency, &mut gaps, &mut record_lat] {
        v.sort_unstable();
    }
    for v in &mut by_priority {
        v.sort_unstable();
    }
    let want: usize = expected.iter().sum();
    let window_secs = (publish_end - publish_start) as f64 / 1e6;
    let drain_secs = (last_done.saturating_sub(publish_end)) as f64 / 1e6;
    let p50_of = |p: usize| ms(pct(&by_priority[p], 50.0));
    Ok(Row {
        workload: format!(
            "W7 {n} engines, maxInFlight {window}, {} ms/event{}",
            args.w7_handle_ms,
            if args.w7_broadcast { ", broadcast" } else { "" }
        ),
        throughput: format!(
            "{} events handled/s ({} published/s)",
            thousands(in_window as f64 / window_secs),
            thousands(published.len() as f64 / window_secs)
        ),
        p50: ms(pct(&latency, 50.0)),
        p99: ms(pct(&latency, 99.0)),
        max: ms(pct(&latency, 100.0)),
        faults: format!(
            "**{} inversions** ({} takes), {} unhandled, {refused} record errors, {} publish errors, {redelivered} redelivered, {again} handled twice",
            inv.pairs,
            inv.takes,
            want - handled,
            errors.load(Ordering::SeqCst)
        ),
        cpu: cpu_split(&cpu0, &cpu1),
        notes: format!(
            "{} events published in {window_secs:.1} s ({}), handled/s in its first / last quarter {} / {}, backlog {backlog} at its end, drained {drain_secs:.1} s later ({} handled/s with the publisher stopped); latency = publish sent to record answered; p50 by priority 9/5/0: {} / {} / {} ms; {} in-flight overtakes (not inversions); handler idle between record answered and next take p50 {} p99 {} ms; recordProcessing p50 {} p99 {} ms; {}",
            published.len(),
            if args.w7_broadcast {
                "untargeted: every engine gets every event".to_owned()
            } else {
                format!("targeted round-robin, {} per engine", published.len() / n)
            },
            thousands(first_quarter),
            thousands(last_quarter),
            thousands(handled.saturating_sub(in_window) as f64 / drain_secs.max(0.001)),
            p50_of(9),
            p50_of(5),
            p50_of(0),
            inv.in_flight,
            ms(pct(&gaps, 50.0)),
            ms(pct(&gaps, 99.0)),
            ms(pct(&record_lat, 50.0)),
            ms(pct(&record_lat, 99.0)),
            cpu_per(&cpu0, &cpu1, in_window, "event handled")
        ),
    })
}

// ---------------------------------------------------------------- W8: engine groups

async fn w8(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for (i, members) in args.w8_members.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let n = (*members).max(1);
        runs.push((n, w8_once(args, api, n).await?));
    }
    // The ratio says how far more members multiply the work done: the
    // 1-member run is the unit, whatever order the sizes ran in.
    let one = runs
        .iter()
        .find(|(n, _)| *n == 1)
        .map(|(_, (rate, _))| *rate);
    Ok(runs
        .into_iter()
        .map(|(n, (rate, mut row))| {
            let ratio = match one {
                Some(base) if base > 0.0 => format!("{:.2}x 1 member", rate / base),
                _ => "no 1-member run".into(),
            };
            let ideal = n as f64 * 1000.0 / args.w8_handle_ms.max(1) as f64;
            row.throughput = format!(
                "{} events handled/s ({ratio}; handling alone bounds it at {})",
                thousands(rate),
                thousands(ideal)
            );
            row
        })
        .collect())
}

/// Registers `n` engines of one type in one group of `run`.
async fn register_group(api: &Api, run: Uuid, n: usize) -> Result<Vec<Uuid>, String> {
    let mut members = Vec::new();
    for _ in 0..n {
        let id = Uuid::new_v4();
        api.call(
            "mutation($i: RegisterEngineInput!) { registerEngine(input: $i) { group } }",
            json!({"i": {"engineId": id, "runId": run, "engineType": "BenchEngine", "group": "bench_w8"}}),
        )
        .await?;
        members.push(id);
    }
    Ok(members)
}

/// Publishes `count` untargeted events (so routed to the group) in
/// `publishEvents` batches of 500, priorities 0..9 pseudo-random; returns
/// their sequences.
async fn publish_backlog(api: &Api, f: &Fixture, count: usize) -> Result<HashSet<i64>, String> {
    const BATCH: usize = 500;
    let mut sequences = HashSet::with_capacity(count);
    for from in (0..count).step_by(BATCH) {
        let inputs: Vec<Value> = (from..count.min(from + BATCH))
            .map(|i| json!({"runId": f.run, "eventType": f.event_type, "priority": mix(i as u64) % 10, "payload": {"i": i}}))
            .collect();
        let data = api
            .call(
                "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { sequence } }",
                json!({"i": inputs}),
            )
            .await?;
        let events = data["publishEvents"].as_array().ok_or("no publishEvents")?;
        sequences.extend(events.iter().filter_map(|e| e["sequence"].as_i64()));
    }
    if sequences.len() != count {
        return Err(format!(
            "w8: {} of {count} events published",
            sequences.len()
        ));
    }
    Ok(sequences)
}

type Log = Arc<Mutex<Vec<Handled>>>;

/// Events of `published` whose record the server accepted, each counted
/// once whoever recorded it, and when the last of them was answered (µs
/// after the epoch).
fn recorded_of(logs: &[Log], published: &HashSet<i64>) -> (usize, u64) {
    let mut seen = HashSet::new();
    let mut last = 0;
    for log in logs {
        for h in log.lock().unwrap().iter() {
            if h.recorded && published.contains(&h.sequence) && seen.insert(h.sequence) {
                last = last.max(h.record_done);
            }
        }
    }
    (seen.len(), last)
}

/// How long w8 waits without a new record before it gives up on the rest.
const W8_STALL: Duration = Duration::from_secs(30);

/// Waits until every published event is recorded or nothing has been
/// recorded for `W8_STALL`; returns how many were.
async fn await_recorded(logs: &[Log], published: &HashSet<i64>) -> usize {
    let (mut done, mut progress) = (0, Instant::now());
    loop {
        let (now_done, _) = recorded_of(logs, published);
        if now_done == published.len() {
            return now_done;
        }
        if now_done > done {
            (done, progress) = (now_done, Instant::now());
        } else if progress.elapsed() > W8_STALL {
            eprintln!(
                "w8: {} of {} events recorded, none for {} s: giving up on the rest",
                done,
                published.len(),
                W8_STALL.as_secs()
            );
            return done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the members' logs say beyond the count: per member, duplicates,
/// refusals and the handler's waits.
#[derive(Default)]
struct GroupLogs {
    /// Distinct published events each member recorded.
    per_member: Vec<usize>,
    /// Takes of a published event after its first (by any member).
    again: usize,
    /// Published events recorded by more than one take.
    recorded_twice: usize,
    /// Records the server refused (a lost lease, say).
    refused: usize,
    /// Takes with `attempt > 1`.
    redelivered: usize,
    /// Other events recorded (the run's `run_status_changed`).
    extra: usize,
    /// Handler idle: record answered to next event taken, µs, sorted.
    gaps: Vec<u64>,
    /// `recordProcessing` round trips, µs, sorted.
    record_lat: Vec<u64>,
    /// Taken to record sent: the handler's work as the timer made it, µs, sorted.
    work: Vec<u64>,
    /// The first take of any member, µs after the epoch.
    first_take: Option<u64>,
}

fn group_logs(logs: &[Log], published: &HashSet<i64>) -> GroupLogs {
    let mut out = GroupLogs::default();
    let (mut taken, mut recorded) = (HashSet::new(), HashMap::<i64, usize>::new());
    for log in logs {
        let log = log.lock().unwrap();
        let mine: HashSet<i64> = log
            .iter()
            .filter(|h| h.recorded && published.contains(&h.sequence))
            .map(|h| h.sequence)
            .collect();
        out.per_member.push(mine.len());
        let mut prev_done = None;
        for h in log.iter() {
            out.first_take = Some(out.first_take.map_or(h.take, |t| t.min(h.take)));
            if let Some(prev) = prev_done {
                out.gaps.push(h.take.saturating_sub(prev));
            }
            prev_done = Some(h.record_done);
            out.record_lat.push(h.record_done - h.record_sent);
            out.work.push(h.record_sent - h.take);
            out.refused += usize::from(!h.recorded);
            out.redelivered += usize::from(h.attempt > 1);
            if !published.contains(&h.sequence) {
                out.extra += usize::from(h.recorded);
                continue;
            }
            out.again += usize::from(!taken.insert(h.sequence));
            if h.recorded {
                *recorded.entry(h.sequence).or_default() += 1;
            }
        }
    }
    out.recorded_twice = recorded.values().filter(|c| **c > 1).count();
    out.gaps.sort_unstable();
    out.record_lat.sort_unstable();
    out.work.sort_unstable();
    out
}

/// One group size: returns events handled/s and the row (its throughput
/// is filled in by `w8`, which knows the 1-member figure).
async fn w8_once(args: &Args, api: &Api, n: usize) -> Result<(f64, Row), String> {
    let f = fixture(api, "w8", None).await?;
    let members = register_group(api, f.run, n).await?;
    let t_fill = Instant::now();
    let published = publish_backlog(api, &f, args.w8_events).await?;
    eprintln!(
        "w8: {} events published in {:.1} s (not timed)",
        published.len(),
        t_fill.elapsed().as_secs_f64()
    );
    // Connect every member first, so that the subscriptions start them at
    // once and the clock does not count websocket handshakes.
    let url = ws_url(&args.url);
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(ws_ready(&url).await?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut logs, mut tasks) = (Vec::new(), Vec::new());
    let epoch = Instant::now();
    let cpu0 = cpu_sample(args.server_pid);
    for (id, mut socket) in members.iter().zip(sockets) {
        ws_subscribe(
            &mut socket,
            ENGINE_EVENTS,
            json!({"r": f.run, "e": id, "w": args.w8_window}),
        )
        .await?;
        let log: Log = Arc::default();
        logs.push(log.clone());
        let engine = HandlingEngine {
            api: api.clone(),
            engine: *id,
            handle: Duration::from_millis(args.w8_handle_ms),
            epoch,
            log,
            stop: stop_rx.clone(),
        };
        tasks.push(engine.start(socket, epoch.elapsed().as_micros() as u64));
    }
    let done = await_recorded(&logs, &published).await;
    let cpu1 = cpu_sample(args.server_pid);
    let _ = stop_tx.send(true);
    let mut problems = Vec::new();
    for (reader, handler) in tasks {
        for t in [reader, handler] {
            if let Ok(Some(p)) = t.await {
                problems.push(p);
            }
        }
    }
    if let Some(p) = problems.first() {
        eprintln!(
            "w8 member problem ({} in all): {}",
            problems.len(),
            truncate(p, 300)
        );
    }

    let (_, last_done) = recorded_of(&logs, &published);
    let g = group_logs(&logs, &published);
    let secs = last_done as f64 / 1e6;
    let rate = done as f64 / secs.max(0.001);
    let min = g.per_member.iter().min().copied().unwrap_or(0);
    let max = g.per_member.iter().max().copied().unwrap_or(0);
    let split: Vec<String> = g.per_member.iter().map(|c| c.to_string()).collect();
    // A member's time per event: its work, its record's round trip and the
    // wait for the next delivery; with maxInFlight 1 these add up.
    let cycle = secs * 1000.0 * n as f64 / done.max(1) as f64;
    let row = Row {
        workload: format!(
            "W8 group of {n}, maxInFlight {}, {} ms/event",
            args.w8_window, args.w8_handle_ms
        ),
        throughput: String::new(),
        p50: ms(pct(&g.gaps, 50.0)),
        p99: ms(pct(&g.gaps, 99.0)),
        max: ms(pct(&g.gaps, 100.0)),
        faults: format!(
            "{} unrecorded, {} record errors, {} taken again, {} recorded twice, {} redelivered",
            published.len() - done,
            g.refused,
            g.again,
            g.recorded_twice,
            g.redelivered
        ),
        cpu: cpu_split(&cpu0, &cpu1),
        notes: format!(
            "{done} of {} backlog events (untargeted, published before the members started) recorded in {secs:.2} s, first taken after {} ms; per member min / max {min} / {max} ({}); {} other events (the run's run_status_changed); a member's cycle {} ms per event: work (the {} ms timer) p50 {} ms, recordProcessing p50 {} p99 {} ms, then the wait for its next event (p50/p99/max columns: record answered to next take); {}",
            published.len(),
            ms(g.first_take.unwrap_or(0) as f64 / 1000.0),
            split.join(", "),
            g.extra,
            ms(cycle),
            args.w8_handle_ms,
            ms(pct(&g.work, 50.0)),
            ms(pct(&g.record_lat, 50.0)),
            ms(pct(&g.record_lat, 99.0)),
            cpu_per(&cpu0, &cpu1, done, "event handled")
        ),
    };
    Ok((rate, row))
}

// ---------------------------------------------------------------- RSS

// ---------------------------------------------------------------- timeline

/// Publishes `count` events into `run` in batches of 1,000, four batches at
/// a time, `input(i)` making the i-th; returns their ids by sequence.
async fn publish_many(
    api: &Api,
    count: usize,
    input: impl Fn(usize) -> Value,
) -> Result<Vec<(i64, String)>, String> {
    const BATCH: usize = 1000;
    let bodies: Vec<String> = (0..count)
        .step_by(BATCH)
        .map(|from| {
            let inputs: Vec<Value> = (from..count.min(from + BATCH)).map(&input).collect();
            json!({
                "query": "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id sequence } }",
                "variables": {"i": inputs},
            })
            .to_string()
        })
        .collect();
    let answers = futures::stream::iter(bodies.into_iter().map(|body| api.post(body)))
        .buffered(4)
        .collect::<Vec<_>>()
        .await;
    let mut events = Vec::with_capacity(count);
    for answer in answers {
        let data: Value = serde_json::from_str(&answer?).map_err(|e| e.to_string())?;
        for e in data["data"]["publishEvents"]
            .as_array()
            .ok_or("no publishEvents")?
        {
            let id = e["id"].as_str().ok_or("no id")?.to_owned();
            events.push((e["sequence"].as_i64().ok_or("no sequence")?, id));
        }
    }
    events.sort();
    Ok(events)
}

async fn fork(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let f = fixture(api, "fork", None).await?;
    let mut engines = Vec::new();
    for _ in 0..args.fork_engines {
        let data = api
            .call(
                "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ForkEngine\"}) { engineId } }",
                json!({"r": f.run}),
            )
            .await?;
        engines.push(
            data["registerEngine"]["engineId"]
                .as_str()
                .ok_or("no engine id")?
                .to_owned(),
        );
    }
    let n = engines.len();
    let events = publish_many(api, args.fork_events, |i| {
        json!({"runId": f.run, "eventType": f.event_type, "priority": mix(i as u64) % 10,
               "payload": payload_300(i as u64), "targetEngineId": engines[i % n]})
    })
    .await?;
    // Every engine completes every other event of its own, saving a state.
    let bodies: Vec<String> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| (i / n) % 2 == 0)
        .map(|(i, (sequence, id))| {
            json!({
                "query": "mutation($ev: UUID!, $e: UUID!, $s: JSON!) { completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, state: $s}) { engine { version } } }",
                "variables": {"ev": id, "e": engines[i % n], "s": {"handled": sequence, "note": "a small state"}},
            })
            .to_string()
        })
        .collect();
    let completed = bodies.len();
    let started = Instant::now();
    let failures = futures::stream::iter(bodies.into_iter().map(|body| api.post(body)))
        .buffer_unordered(args.concurrency)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    if failures > 0 {
        return Err(format!(
            "fork: {failures} of {completed} completions failed"
        ));
    }
    eprintln!(
        "  fork: {} events, {completed} completions in {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    let last = events.last().map_or(0, |e| e.0);
    let mut rows = Vec::new();
    for at in [last, last / 2] {
        let before = cpu_sample(args.server_pid);
        let started = Instant::now();
        let data = api
            .call(
                "mutation($r: UUID!, $at: Int!) { forkRun(input: {runId: $r, atSequence: $at}) { id lastSequence } }",
                json!({"r": f.run, "at": at}),
            )
            .await?;
        let took = started.elapsed();
        let after = cpu_sample(args.server_pid);
        let fork_id = data["forkRun"]["id"].as_str().ok_or("no fork id")?;
        let counts = api
            .call(
                "query($r: UUID!) { scenarioRun(id: $r) { engines { engineId } } }",
                json!({"r": fork_id}),
            )
            .await?;
        let forked_engines = counts["scenarioRun"]["engines"]
            .as_array()
            .map_or(0, Vec::len);
        let secs = took.as_secs_f64();
        rows.push(Row {
            workload: format!("fork at {at}"),
            throughput: format!("{} events/s", thousands(at as f64 / secs)),
            p50: format!("{:.0}", secs * 1e3),
            p99: "-".into(),
            max: "-".into(),
            faults: "0".into(),
            cpu: cpu_split(&before, &after),
            notes: format!(
                "one forkRun of {at} events ({} records, {forked_engines} engines) in {:.0} ms",
                (0..at as usize).filter(|i| (i / n) % 2 == 0).count(),
                secs * 1e3
            ),
        });
    }
    Ok(rows)
}

async fn export(args: &Args, api: &Api) -> Result<Vec<Row>, String> {
    let f = fixture(api, "export", None).await?;
    let started = Instant::now();
    publish_many(api, args.export_events, |i| {
        json!({"runId": f.run, "eventType": f.event_type, "priority": mix(i as u64) % 10,
               "payload": payload_300(i as u64)})
    })
    .await?;
    eprintln!(
        "  export: {} events published in {:.1} s",
        args.export_events,
        started.elapsed().as_secs_f64()
    );
    let rss_before = args.server_pid.map(vm_rss_kib).transpose()?;
    let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let sampling = args.server_pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(kib) = vm_rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let before = cpu_sample(args.server_pid);
    let started = Instant::now();
    let url = format!(
        "{}/api/v1/runs/{}/export",
        args.url.trim_end_matches('/'),
        f.run
    );
    let response = api.http.get(&url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("export answered {}", response.status()));
    }
    let mut body = response.bytes_stream();
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = cpu_sample(args.server_pid);
    if let Some(task) = sampling {
        task.abort();
    }
    let events = args.export_events as f64;
    let rss = match rss_before {
        Some(kib) => format!(
            "server VmRSS {:.0} MiB before, {:.0} MiB at most while streaming; ",
            kib as f64 / 1024.0,
            peak.load(Ordering::Relaxed) as f64 / 1024.0
        ),
        None => String::new(),
    };
    Ok(vec![Row {
        workload: "export (HTTP)".into(),
        throughput: format!("{} events/s", thousands(events / secs)),
        p50: format!("{:.0}", secs * 1e3),
        p99: "-".into(),
        max: "-".into(),
        faults: "0".into(),
        cpu: cpu_split(&before, &after),
        notes: format!(
            "{rss}{lines} lines, {:.0} MB at {:.0} MB/s; run {}",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs,
            f.run
        ),
    }])
}

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
        ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "rss"]
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
            "w1" => w1(&args, &api).await,
            "w2" => w2(&args, &api).await.map(|r| vec![r]),
            "w3" => w3(&args, &api).await.map(|r| vec![r]),
            "w4" => w4(&args, &api).await.map(|r| vec![r]),
            "w5" => w5(&args, &api).await,
            "w6" => w6(&args, &api).await,
            "w7" => w7(&args, &api).await,
            "w8" => w8(&args, &api).await,
            "rss" => rss(&args, &api).await,
            "fork" => fork(&args, &api).await,
            "export" => export(&args, &api).await,
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
