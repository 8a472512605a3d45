//! `/metrics` in the Prometheus text format: what this instance has done since it started.
//! Aggregates only, never an organization, user, key or service name, so the page can be
//! scraped without seeing any tenant's business.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    messages: Family<Labels, Counter>,
    durations: Histogram,
    written: Counter,
    rejected: Counter,
    refused: Counter,
    sessions: Gauge,
    stdio_processes: Gauge,
    queued: Gauge,
}

/// What is read at scrape time rather than counted.
pub struct Now {
    pub sessions: usize,
    pub stdio_processes: usize,
    pub queued_log_rows: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mcp_platform");
        let messages = Family::<Labels, Counter>::default();
        registry.register(
            "gateway_messages",
            "Client messages handled by the gateway, by HTTP status class",
            messages.clone(),
        );
        // 0.5 ms to about 16 s.
        let durations = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "gateway_message_duration_seconds",
            "Time from a message's arrival to the end of its answer",
            durations.clone(),
        );
        let written = Counter::default();
        registry.register(
            "request_logs_written",
            "Request-log rows written to the database",
            written.clone(),
        );
        let rejected = Counter::default();
        registry.register(
            "request_logs_rejected",
            "Request-log rows the database refused, kept aside in request_log_rejects or a file",
            rejected.clone(),
        );
        let refused = Counter::default();
        registry.register(
            "gateway_calls_refused_unrecordable",
            "Gateway calls refused (503) because the request-log queue was full",
            refused.clone(),
        );
        let sessions = Gauge::default();
        registry.register("gateway_sessions", "Open gateway sessions on this instance", sessions.clone());
        let stdio_processes = Gauge::default();
        registry.register(
            "stdio_processes",
            "Running stdio service processes on this instance",
            stdio_processes.clone(),
        );
        let queued = Gauge::default();
        registry.register("request_log_queue", "Request-log rows waiting for the writer", queued.clone());
        Metrics(Arc::new(Inner {
            registry,
            messages,
            durations,
            written,
            rejected,
            refused,
            sessions,
            stdio_processes,
            queued,
        }))
    }
}

impl Metrics {
    /// One gateway message answered with `status`, after `seconds`.
    pub fn message(&self, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.0.messages.get_or_create(&vec![("status", class)]).inc();
        self.0.durations.observe(seconds);
    }

    pub fn written(&self, rows: u64) {
        self.0.written.inc_by(rows);
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
        self.0.sessions.set(now.sessions as i64);
        self.0.stdio_processes.set(now.stdio_processes as i64);
        self.0.queued.set(now.queued_log_rows as i64);
        let mut page = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut page, &self.0.registry);
        page
    }
}
