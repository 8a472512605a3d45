//! Liveness, readiness and metrics for load balancers, orchestrators and Prometheus.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::Digest;

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

/// This instance's counters and gauges, in the Prometheus text format; with a metrics token
/// set, only for a scraper that presents it (`Authorization: Bearer …`).
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(token) = &state.settings.metrics_token {
        let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let presented = presented.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        // Compared as digests, in time that does not depend on where they differ.
        let digest = |text: &str| sha2::Sha256::digest(text.as_bytes());
        if digest(presented) != digest(token.expose_secret()) {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(json!({ "error": "a bearer token is required for /metrics" }));
        }
    }
    let (client_sessions, bridged_sessions) = state.gateway.session_counts();
    let (connections_in_use, connections_idle) = state.db.connections();
    let now = Now {
        client_sessions,
        bridged_sessions,
        stdio_processes: state.gateway.stdio.running(),
        queued_log_rows: state.log_writer.queued(),
        connections_in_use,
        connections_idle,
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(now))
}
