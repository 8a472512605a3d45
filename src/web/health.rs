//! Liveness, readiness and metrics for load balancers, orchestrators and Prometheus.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::AppState;
use crate::telemetry::metrics::Now;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers, so requests can be served; not while the instance stops, so that a
/// balancer sends new requests elsewhere.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.gateway.is_stopping() {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "stopping" }))
    } else if state.db.ping().await {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "reason": "database" }))
    }
}

/// This instance's counters and gauges, in the Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let now = Now {
        sessions: state.gateway.session_count(),
        stdio_processes: state.gateway.stdio.running(),
        queued_log_rows: state.log_writer.queued(),
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(now))
}
