//! Liveness and readiness for load balancers and orchestrators.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers, so requests can be served.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.db.ping().await {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "reason": "database" }))
    }
}
