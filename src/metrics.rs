//! Prometheus metrics, rendered at `GET /metrics`. Each server owns its
//! registry (no process-wide recorder), so that several servers in one
//! process, as in the tests, keep their counts apart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::error::CODES;

/// Distinct operation names kept as labels; later ones count as `other`, so
/// that clients cannot grow the registry without bound.
const MAX_OPERATION_NAMES: usize = 256;

/// Labels of requests: the names, `anonymous` and `other`.
const MAX_LABELS: usize = MAX_OPERATION_NAMES + 2;

/// Delivery lag buckets, in seconds: the interesting range is 1 ms to 2 s.
const LAG_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

const REQUESTS: &str = "scenario_hub_requests_total";
const COMPILED: &str = "scenario_hub_compiled_requests_total";
const ERRORS: &str = "scenario_hub_errors_total";
const PUBLISHED: &str = "scenario_hub_events_published_total";
const DELIVERED: &str = "scenario_hub_events_delivered_total";
const LAG: &str = "scenario_hub_delivery_lag_seconds";
const CONNECTIONS: &str = "scenario_hub_websocket_connections";
const SUBSCRIPTIONS: &str = "scenario_hub_subscriptions";
const LEASES_EXPIRED: &str = "scenario_hub_leases_expired_total";
const IN_FLIGHT: &str = "scenario_hub_events_in_flight";
const POOL_SIZE: &str = "scenario_hub_db_pool_connections";
const POOL_IDLE: &str = "scenario_hub_db_pool_idle_connections";
const POOL_MAX: &str = "scenario_hub_db_pool_max_connections";

/// What a request came over: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// GraphQL over HTTP.
    Http,
    /// A GraphQL websocket operation.
    Websocket,
    /// A REST call.
    Rest,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Http, Transport::Websocket, Transport::Rest];

    /// Its outcome's counter among an operation's six: two a transport.
    fn slot(self, ok: bool) -> usize {
        self as usize * 2 + usize::from(!ok)
    }

    fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Websocket => "websocket",
            Transport::Rest => "rest",
        }
    }
}

/// The `operation` label of a request without an operation name.
const ANONYMOUS: &str = "anonymous";

/// The `operation` label of a name that is not plain, or past the limit.
const OTHER_OPERATION: &str = "other";

/// The `code` label of an error outside DESIGN.md's set.
const OTHER: &str = "OTHER";

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    /// Request counters by operation label, then by transport and outcome
    /// (`Transport::slot`).
    operations: Mutex<HashMap<String, [Option<Counter>; 6]>>,
    compiled: Counter,
    published: Counter,
    delivered: Counter,
    lag: Histogram,
    connections: Gauge,
    subscriptions: Gauge,
    leases_expired: Counter,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LAG.into()), &LAG_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            let name = KeyName::from_const_str(name);
            match name.as_str() {
                REQUESTS | COMPILED | ERRORS | PUBLISHED | DELIVERED | LEASES_EXPIRED => {
                    recorder.describe_counter(name, unit, help.into())
                }
                LAG => recorder.describe_histogram(name, unit, help.into()),
                _ => recorder.describe_gauge(name, unit, help.into()),
            }
        };
        describe(
            REQUESTS,
            None,
            "GraphQL operations and REST calls, by transport, operation name and outcome.",
        );
        describe(
            COMPILED,
            None,
            "GraphQL requests over HTTP and websocket subscriptions answered by the compiled path of hot documents.",
        );
        describe(
            ERRORS,
            None,
            "Errors returned to clients, by extensions.code.",
        );
        describe(
            PUBLISHED,
            None,
            "Events returned by committed publishing calls (an idempotent replay counts again).",
        );
        describe(DELIVERED, None, "Events sent to websocket subscribers.");
        describe(
            LAG,
            Some(Unit::Seconds),
            "From an event's creation in its transaction to its sending to a subscriber.",
        );
        describe(CONNECTIONS, None, "Open GraphQL websocket connections.");
        describe(SUBSCRIPTIONS, None, "Running websocket operations.");
        describe(
            LEASES_EXPIRED,
            None,
            "Deliveries whose lease ran out unrecorded on this server's subscriptions.",
        );
        describe(
            IN_FLIGHT,
            None,
            "Events delivered to engines on this server and not yet recorded.",
        );
        describe(POOL_SIZE, None, "Database pool connections open.");
        describe(POOL_IDLE, None, "Database pool connections idle.");
        describe(POOL_MAX, None, "Database pool size limit.");
        let metrics = Metrics {
            compiled: recorder.register_counter(&Key::from_static_name(COMPILED), &METADATA),
            published: recorder.register_counter(&Key::from_static_name(PUBLISHED), &METADATA),
            delivered: recorder.register_counter(&Key::from_static_name(DELIVERED), &METADATA),
            lag: recorder.register_histogram(&Key::from_static_name(LAG), &METADATA),
            connections: recorder.register_gauge(&Key::from_static_name(CONNECTIONS), &METADATA),
            subscriptions: recorder
                .register_gauge(&Key::from_static_name(SUBSCRIPTIONS), &METADATA),
            leases_expired: recorder
                .register_counter(&Key::from_static_name(LEASES_EXPIRED), &METADATA),
            in_flight: recorder.register_gauge(&Key::from_static_name(IN_FLIGHT), &METADATA),
            // The fixed labels from the start, so that only names count
            // against the limit.
            operations: Mutex::new(
                [ANONYMOUS, OTHER_OPERATION]
                    .into_iter()
                    .map(|label| (label.to_owned(), Default::default()))
                    .collect(),
            ),
            recorder,
        };
        // Every code at 0 from the start, so that `rate()` and alerts work
        // on a fresh server; so too requests by transport and outcome.
        for code in CODES.into_iter().chain([OTHER]) {
            metrics.error_counter(code).increment(0);
        }
        for transport in Transport::ALL {
            for ok in [true, false] {
                metrics.count_request(transport, None, ok, 0);
            }
        }
        metrics
    }

    /// A request answered by the compiled path (counted in `request` too).
    pub fn compiled(&self) {
        self.compiled.increment(1);
    }

    /// One request of `transport` finished.
    pub fn request(&self, transport: Transport, operation: Option<&str>, ok: bool) {
        self.count_request(transport, operation, ok, 1);
    }

    /// Adds `n` to the requests of `transport`, `operation` and outcome.
    fn count_request(&self, transport: Transport, operation: Option<&str>, ok: bool, n: u64) {
        let label = match operation {
            None => ANONYMOUS,
            Some(name) if is_plain(name) => name,
            Some(_) => OTHER_OPERATION,
        };
        // Counters are found here by label and registered once: the
        // registry's own lookup hashes the whole key with its labels.
        let mut operations = self.operations.lock().expect("operations lock poisoned");
        let label = if operations.contains_key(label) || operations.len() < MAX_LABELS {
            label
        } else {
            OTHER_OPERATION
        };
        let counters = match operations.get_mut(label) {
            Some(counters) => counters,
            None => operations.entry(label.to_owned()).or_default(),
        };
        counters[transport.slot(ok)]
            .get_or_insert_with(|| self.request_counter(transport, label.to_owned(), ok))
            .increment(n);
    }

    fn request_counter(&self, transport: Transport, operation: String, ok: bool) -> Counter {
        let labels = vec![
            Label::new("transport", transport.label()),
            Label::new("operation", operation),
            Label::new("outcome", if ok { "ok" } else { "error" }),
        ];
        self.recorder
            .register_counter(&Key::from_parts(REQUESTS, labels), &METADATA)
    }

    /// An error with `code` went to a client.
    pub fn error(&self, code: &str) {
        // Codes are DESIGN.md's fixed set; anything else is lumped together.
        let code = CODES.into_iter().find(|c| *c == code).unwrap_or(OTHER);
        self.error_counter(code).increment(1);
    }

    fn error_counter(&self, code: &'static str) -> Counter {
        self.recorder.register_counter(
            &Key::from_parts(ERRORS, vec![Label::new("code", code)]),
            &METADATA,
        )
    }

    /// `count` events were committed.
    pub fn published(&self, count: usize) {
        self.published.increment(count as u64);
    }

    /// An event went to a subscriber `lag` after it was created.
    pub fn delivered(&self, lag: Duration) {
        self.delivered.increment(1);
        self.lag.record(lag.as_secs_f64());
    }

    /// A websocket connection opened (`+1`) or closed (`-1`).
    pub fn connections(&self, change: f64) {
        self.connections.increment(change);
    }

    /// A websocket operation started (`+1`) or ended (`-1`).
    pub fn subscriptions(&self, change: f64) {
        self.subscriptions.increment(change);
    }

    /// `count` leases ran out unrecorded.
    pub fn leases_expired(&self, count: usize) {
        self.leases_expired.increment(count as u64);
    }

    /// Events in flight to engines changed by `change`.
    pub fn in_flight(&self, change: f64) {
        self.in_flight.increment(change);
    }

    /// The Prometheus text of every metric, with the pool's use now.
    pub fn render(&self, pool: PoolUse) -> String {
        for (name, value) in [
            (POOL_SIZE, pool.size),
            (POOL_IDLE, pool.idle),
            (POOL_MAX, pool.max),
        ] {
            self.recorder
                .register_gauge(&Key::from_static_name(name), &METADATA)
                .set(value as f64);
        }
        self.recorder.handle().render()
    }
}

/// Whether an operation name may be a label as it is.
fn is_plain(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./ {}".contains(&b))
}

/// The database pool's use at one moment.
#[derive(Debug, Clone, Copy)]
pub struct PoolUse {
    /// Connections open.
    pub size: u32,
    /// Of which idle.
    pub idle: u32,
    /// The most it may open.
    pub max: u32,
}

#[cfg(test)]
mod tests {
    use super::{MAX_OPERATION_NAMES, Metrics, PoolUse, Transport};

    /// The value of `scenario_hub_requests_total` with `labels` in `text`.
    fn requests(text: &str, labels: &str) -> Option<f64> {
        let prefix = format!("scenario_hub_requests_total{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.parse().expect("a number"))
    }

    #[test]
    fn operation_names_past_the_limit_count_as_other() {
        let metrics = Metrics::new();
        let extra = 10;
        for round in 0..2 {
            for i in 0..MAX_OPERATION_NAMES + extra {
                metrics.request(Transport::Http, Some(&format!("Op{i}")), round == 0);
            }
        }
        metrics.request(Transport::Http, Some("not plain!"), true);
        metrics.request(Transport::Rest, None, false);
        let text = metrics.render(PoolUse {
            size: 0,
            idle: 0,
            max: 0,
        });
        let names = text
            .lines()
            .filter(|l| l.starts_with("scenario_hub_requests_total{") && l.contains("Op"))
            .count();
        // Each kept name once as ok, once as error.
        assert_eq!(names, MAX_OPERATION_NAMES * 2);
        let last = MAX_OPERATION_NAMES - 1;
        let kept = format!(r#"transport="http",operation="Op{last}",outcome="error""#);
        assert_eq!(requests(&text, &kept), Some(1.0), "{text}");
        let other = r#"transport="http",operation="other",outcome="ok""#;
        assert_eq!(requests(&text, other), Some(extra as f64 + 1.0), "{text}");
        let other = r#"transport="http",operation="other",outcome="error""#;
        assert_eq!(requests(&text, other), Some(extra as f64), "{text}");
        let anonymous = r#"transport="rest",operation="anonymous",outcome="error""#;
        assert_eq!(requests(&text, anonymous), Some(1.0), "{text}");
    }
}
