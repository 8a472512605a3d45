//! The second phase: the caller's own credential for the service (e.g. their GitHub token),
//! opened once for the call that needs it, and never kept.

use std::sync::Arc;

use super::cache::LoadedService;
use super::call::{Caller, Credential};
use super::refusal::{Refusal, TOKEN_MISSING};
use crate::app::AppState;
use crate::crypto::keyring::Binding;
use crate::db;
use actix_web::http::StatusCode;

/// Where a member stores their service tokens: `/tokens` on the public URL.
pub fn tokens_page(state: &AppState, req: &actix_web::HttpRequest) -> String {
    format!("{}/tokens", state.settings.public_base(req))
}

/// What a caller is told when their token for the service is not set.
pub fn missing_message(token_name: &str, tokens_page: &str) -> String {
    format!(
        "This service needs your own \"{token_name}\" token: set it on the dashboard's Service tokens page, {tokens_page}"
    )
}

/// Opens the caller's token for the service; refused, naming it and the page where it is set
/// (`tokens_page` makes its URL, only then), when they have not set it.
pub async fn open(
    state: &AppState,
    caller: &Caller,
    service: &LoadedService,
    tokens_page: impl Fn() -> String,
) -> Result<Credential, Refusal> {
    let Some(token_name) = &service.token_service_name else { return Ok(Credential::none()) };
    let missing =
        || Refusal::new(StatusCode::FORBIDDEN, TOKEN_MISSING, missing_message(token_name, &tokens_page()));
    let unavailable = |e: &dyn std::fmt::Debug| {
        Refusal::unavailable(e, "The platform cannot read service tokens right now")
    };
    let lookups = &state.gateway.lookups;
    let row = match lookups.token(caller.organization_id, caller.user_id, token_name) {
        Some(row) => row,
        None => {
            let row = async {
                let mut conn = state.db.acquire().await?;
                db::user_tokens::find_sealed(conn.conn(), caller.organization_id, caller.user_id, token_name)
                    .await
            }
            .await
            .map_err(|e: sqlx::Error| unavailable(&e))?;
            lookups.keep_token(caller.organization_id, caller.user_id, token_name, row.clone());
            row
        }
    };
    let mut row = row.ok_or_else(missing)?;
    let now = state.clock.now();
    if db::last_use_due(row.last_used_at, now) {
        let touched =
            async { db::user_tokens::touch(state.db.acquire().await?.conn(), row.id, now).await }.await;
        touched.map_err(|e: sqlx::Error| unavailable(&e))?;
        row.last_used_at = Some(now);
        lookups.keep_token(caller.organization_id, caller.user_id, token_name, Some(row.clone()));
    }
    let binding = Binding {
        organization_id: row.organization_id,
        user_id: row.user_id,
        service_name: &row.service_name,
    };
    let token = state.keyring.open(&state.db, &row.ciphertext, binding).await.map_err(|e| unavailable(&e))?;
    Ok(Credential { token: Some(Arc::new(token)) })
}
