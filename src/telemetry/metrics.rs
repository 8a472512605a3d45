//! `/metrics` in the Prometheus text format: what this instance has done since it started.
//! Aggregates only, never an organization, user, key or service name, so the page can be
//! scraped without seeing any tenant's business; every label has a handful of values. The
//! Grafana dashboard in `docs/grafana-dashboard.json` charts them.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The labels of every gateway message (a struct: counting one allocates nothing).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    kind: &'static str,
    method: &'static str,
    outcome: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    durations: Family<KindLabel, Histogram>,
    upstream_durations: Family<KindLabel, Histogram>,
    upstream_errors: Family<Labels, Counter>,
    limited: Family<Labels, Counter>,
    sign_in_failures: Counter,
    written: Counter,
    rejected: Counter,
    refused: Counter,
    batch_rows: Histogram,
    flush_seconds: Histogram,
    sessions: Family<Labels, Gauge>,
    stdio_processes: Gauge,
    queued: Gauge,
    connections: Family<Labels, Gauge>,
}

/// What is read at scrape time rather than counted.
pub struct Now {
    /// Clients' 2025-11-25 sessions, and the gateway's own upstream sessions for 2026-07-28
    /// clients of legacy upstreams.
    pub client_sessions: usize,
    pub bridged_sessions: usize,
    pub stdio_processes: usize,
    pub queued_log_rows: usize,
    /// The database pool's connections: in use, and open but idle.
    pub connections_in_use: usize,
    pub connections_idle: usize,
}

/// One gateway message, as it ended.
pub struct Observed<'a> {
    /// The service's transport: `http`, `stdio`, or `none` before a service was found.
    pub kind: &'static str,
    pub method: Option<&'a str>,
    /// `success`, `tool_error` or `failure`.
    pub outcome: &'static str,
    pub status: u16,
    pub seconds: f64,
}

/// 0.5 ms to about 16 s.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mcp_platform");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "gateway_messages",
            "Client messages handled by the gateway, by service kind, method class, outcome and HTTP status class",
            messages.clone(),
        );
        let durations = Family::<KindLabel, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "gateway_message_duration_seconds",
            "Time from a message's arrival to the end of its answer, by service kind",
            durations.clone(),
        );
        let upstream_durations =
            Family::<KindLabel, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "upstream_duration_seconds",
            "Time an upstream took to start answering a relayed message, by service kind",
            upstream_durations.clone(),
        );
        let upstream_errors = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Messages the upstream failed: could not be reached or had ended (unreachable), or did not answer in time (timeout)",
            upstream_errors.clone(),
        );
        let limited = Family::<Labels, Counter>::default();
        registry.register(
            "gateway_limited",
            "Messages refused (429) by the organization's daily quota or the key's rate limit",
            limited.clone(),
        );
        let sign_in_failures = Counter::default();
        registry.register("sign_in_failures", "Failed dashboard sign-ins", sign_in_failures.clone());
        let written = Counter::default();
        registry.register(
            "request_logs_written",
            "Request-log rows written to the database",
            written.clone(),
        );
        let rejected = Counter::default();
        registry.register(
            "request_logs_rejected",
            "Request-log rows the database refused, set aside in request_log_rejects or a file",
            rejected.clone(),
        );
        let refused = Counter::default();
        registry.register(
            "gateway_calls_refused_unrecordable",
            "Gateway calls refused (503) because the request-log queue was full",
            refused.clone(),
        );
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "request_log_batch_rows",
            "Rows in each batch the writer wrote",
            batch_rows.clone(),
        );
        let flush_seconds = seconds_histogram();
        registry.register(
            "request_log_flush_seconds",
            "Time the writer took to write a batch (retries included)",
            flush_seconds.clone(),
        );
        let sessions = Family::<Labels, Gauge>::default();
        registry.register(
            "gateway_sessions",
            "Open gateway sessions on this instance: clients' (client) and the gateway's own upstream sessions for stateless clients (bridged)",
            sessions.clone(),
        );
        let stdio_processes = Gauge::default();
        registry.register(
            "stdio_processes",
            "Running stdio service processes on this instance",
            stdio_processes.clone(),
        );
        let queued = Gauge::default();
        registry.register("request_log_queue", "Request-log rows waiting for the writer", queued.clone());
        let connections = Family::<Labels, Gauge>::default();
        registry.register(
            "database_connections",
            "This instance's database connections, in use or idle",
            connections.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            messages,
            durations,
            upstream_durations,
            upstream_errors,
            limited,
            sign_in_failures,
            written,
            rejected,
            refused,
            batch_rows,
            flush_seconds,
            sessions,
            stdio_processes,
            queued,
            connections,
        }))
    }
}

/// The class of a JSON-RPC method, for a label with few values.
fn method_class(method: Option<&str>) -> &'static str {
    match method {
        None => "response",
        Some(m) if m.starts_with("notifications/") => "notification",
        Some("initialize") => "initialize",
        Some("ping") => "ping",
        Some("tools/list") => "tools/list",
        Some("tools/call") => "tools/call",
        Some("server/discover") => "server/discover",
        Some("subscriptions/listen") => "subscriptions/listen",
        Some(m) if m.starts_with("resources/") => "resources",
        Some(m) if m.starts_with("prompts/") => "prompts",
        Some(_) => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    /// One gateway message, as it ended.
    pub fn message(&self, observed: Observed) {
        let labels = MessageLabels {
            kind: observed.kind,
            method: method_class(observed.method),
            outcome: observed.outcome,
            status: status_class(observed.status),
        };
        self.0.messages.get_or_create(&labels).inc();
        self.0.durations.get_or_create(&KindLabel { kind: observed.kind }).observe(observed.seconds);
    }

    /// An upstream started answering a relayed message after `seconds`.
    pub fn upstream(&self, kind: &'static str, seconds: f64) {
        self.0.upstream_durations.get_or_create(&KindLabel { kind }).observe(seconds);
    }

    /// An upstream failed a message: `unreachable` or `timeout`.
    pub fn upstream_error(&self, kind: &'static str, error: &'static str) {
        self.0.upstream_errors.get_or_create(&vec![("kind", kind), ("error", error)]).inc();
    }

    /// A message refused by `limit`: `daily_quota` or `rate_limit`.
    pub fn limited(&self, limit: &'static str) {
        self.0.limited.get_or_create(&vec![("limit", limit)]).inc();
    }

    pub fn sign_in_failed(&self) {
        self.0.sign_in_failures.inc();
    }

    /// The writer wrote a batch of `rows` in `seconds`.
    pub fn written(&self, rows: u64, seconds: f64) {
        self.0.written.inc_by(rows);
        self.0.batch_rows.observe(rows as f64);
        self.0.flush_seconds.observe(seconds);
    }

    pub fn rejected(&self, rows: u64) {
        self.0.rejected.inc_by(rows);
    }

    /// A call refused because its row could not have been queued.
    pub fn refused_unrecordable(&self) {
        self.0.refused.inc();
    }

    /// The page, with the gauges read now.
    pub fn render(&self, now: Now) -> String {
        let inner = &self.0;
        inner.sessions.get_or_create(&vec![("kind", "client")]).set(now.client_sessions as i64);
        inner.sessions.get_or_create(&vec![("kind", "bridged")]).set(now.bridged_sessions as i64);
        inner.stdio_processes.set(now.stdio_processes as i64);
        inner.queued.set(now.queued_log_rows as i64);
        inner.connections.get_or_create(&vec![("state", "in_use")]).set(now.connections_in_use as i64);
        inner.connections.get_or_create(&vec![("state", "idle")]).set(now.connections_idle as i64);
        let mut page = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut page, &inner.registry);
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fall_in_a_few_classes() {
        assert_eq!(method_class(Some("tools/call")), "tools/call");
        assert_eq!(method_class(Some("resources/read")), "resources");
        assert_eq!(method_class(Some("notifications/initialized")), "notification");
        assert_eq!(method_class(Some("anything/else")), "other");
        assert_eq!(method_class(None), "response");
    }
}
