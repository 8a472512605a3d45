//! The services the caller reaches, their tokens, and tool calls without an MCP client.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{ApiError, Envelope, ErrorBody, Page, answer, caller, owner, paged};
use crate::app::AppState;
use crate::auth::api_key::KeyPrincipal;
use crate::db;
use crate::domain::{Scope, ServiceName};
use crate::gateway::endpoint;
use crate::gateway::refusal::{self, Refusal};
use crate::ids::ServiceId;
use crate::web::tokens;

/// A service the caller's organization offers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceSummary {
    id: String,
    name: String,
    description: String,
    version: String,
    /// `http` or `stdio`.
    kind: String,
    /// The operator's service (for every organization) or the organization's own.
    system: bool,
    /// Where MCP clients reach it.
    path: String,
    /// The name of the caller's own token it needs, if any.
    token_name: Option<String>,
    /// Whether the caller has stored that token (always true when none is needed).
    configured: bool,
}

/// The services the caller's organization offers, system services first, by name.
#[utoipa::path(get, path = "/api/v1/mcp/services", params(Page), responses(
    (status = 200, description = "`data` is a page of services", body = Envelope<Vec<ServiceSummary>>),
    (status = 400, description = "VALIDATION_ERROR (limit or cursor)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (mcp:read)", body = ErrorBody),
))]
pub(super) async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::McpRead)).await?;
    let listed = summaries(&state, &principal).await?;
    let (page, next) = paged(listed, &page, |s| &s.id)?;
    Ok(answer(&req, &state, page, next))
}

/// One service the caller's organization offers, with whether the caller has its token.
#[utoipa::path(get, path = "/api/v1/mcp/services/{id}", params(("id" = uuid::Uuid, Path, description = "The service's id")), responses(
    (status = 200, description = "`data` is the service", body = Envelope<ServiceSummary>),
    (status = 400, description = "VALIDATION_ERROR (id)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (mcp:read)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND (unknown, or not the caller's organization's)", body = ErrorBody),
))]
pub(super) async fn one(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::McpRead)).await?;
    let found = find(&state, &principal, "id", &id).await?;
    Ok(answer(&req, &state, found, None))
}

/// The service `raw` names by id among those the caller sees; `field` is where the id came from.
async fn find(
    state: &AppState,
    principal: &KeyPrincipal,
    field: &str,
    raw: &str,
) -> Result<ServiceSummary, ApiError> {
    let id = ServiceId::parse(raw).ok_or_else(|| ApiError::invalid(field, "not a service id"))?;
    let found = summaries(state, principal).await?.into_iter().find(|s| s.id == id.to_string());
    found.ok_or_else(ApiError::not_found)
}

/// Every service the caller's organization offers, as the caller sees it.
async fn summaries(state: &AppState, principal: &KeyPrincipal) -> Result<Vec<ServiceSummary>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let catalog = db::services::catalog(conn.conn(), principal.organization_id).await?;
    let tokens =
        db::user_tokens::list_for_user(conn.conn(), principal.organization_id, principal.user_id).await?;
    let origin = &state.settings.origin;
    Ok(catalog
        .into_iter()
        .filter(|row| principal.reach.allows_service(&row.name))
        .map(|row| {
            let configured = row
                .token_service_name
                .as_ref()
                .is_none_or(|name| tokens.iter().any(|t| &t.service_name == name));
            ServiceSummary {
                id: row.id.to_string(),
                path: format!("{origin}/mcp/{}", row.name),
                system: row.organization_id.is_none(),
                kind: row.transport.as_str().to_owned(),
                token_name: row.token_service_name,
                configured,
                name: row.name,
                description: row.description,
                version: row.version,
            }
        })
        .collect())
}

/// The caller's own token for a service.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenInput {
    /// The token (e.g. a GitHub personal access token); stored encrypted, never shown again.
    token: String,
}

/// What storing a token did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Configured {
    service: String,
    /// The name the token is stored under.
    token_name: String,
    /// Whether a token of that name was replaced.
    replaced: bool,
    /// The other services of the organization that use the same token, and now have it too.
    also_used_by: Vec<String>,
}

/// Stores the caller's token for the service, under the token name it uses (audited).
#[utoipa::path(post, path = "/api/v1/mcp/services/{id}/configure", request_body = TokenInput, params(("id" = uuid::Uuid, Path, description = "The service's id")), responses(
    (status = 200, description = "`data` says where the token went", body = Envelope<Configured>),
    (status = 400, description = "VALIDATION_ERROR (id, token, or a service that needs none)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (tokens:write)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorBody),
))]
pub(super) async fn configure(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<TokenInput>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &req, Scope::TokensWrite).await?;
    let service = find(&state, &owner.principal, "id", &id).await?;
    let Some(token_name) = service.token_name else {
        return Err(ApiError::invalid("id", "this service needs no token of the caller's"));
    };
    let name = ServiceName::parse(&token_name).map_err(|e| ApiError::invalid("id", e))?;
    let token = body.token.trim();
    tokens::check_token(token).map_err(|e| ApiError::invalid("token", &e))?;
    let replaced = tokens::store(&state, &owner, &name, token).await?;
    let catalog =
        db::services::catalog(state.db.acquire().await?.conn(), owner.principal.organization_id).await?;
    let also_used_by = catalog
        .into_iter()
        .filter(|s| s.token_service_name.as_deref() == Some(token_name.as_str()) && s.name != service.name)
        .map(|s| s.name)
        .collect();
    let configured = Configured { service: service.name, token_name, replaced, also_used_by };
    Ok(answer(&req, &state, configured, None))
}

/// One tool call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ToolCall {
    service_id: String,
    tool_name: String,
    /// The tool's arguments (an object); none by default.
    parameters: Option<serde_json::Map<String, Value>>,
}

/// A tool's answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolResult {
    /// The MCP `CallToolResult`: `content`, and `isError` when the tool itself failed.
    #[schema(value_type = Object)]
    result: Value,
    /// Milliseconds from the request's arrival to the answer.
    execution_time: u64,
}

/// Calls one tool through the gateway, as an MCP client would (the same checks, credential,
/// limits and tool policy), recorded in the request log. Needs `mcp:write`.
#[utoipa::path(post, path = "/api/v1/mcp/execute/tool", request_body = ToolCall, responses(
    (status = 200, description = "`data.result` is the tool's result (`isError` when the tool failed)", body = Envelope<ToolResult>),
    (status = 400, description = "VALIDATION_ERROR, or MCP_SERVICE_UNCONFIGURED (the caller's token for the service is not stored)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (mcp:write, or a tool the key or the caller's role may not call)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND (the service)", body = ErrorBody),
    (status = 429, description = "RATE_LIMIT_EXCEEDED (the key's rate limit or the organization's daily quota)", body = ErrorBody),
    (status = 502, description = "MCP_SERVICE_ERROR (the service failed or answered with an error)", body = ErrorBody),
    (status = 504, description = "MCP_SERVICE_ERROR (the service did not answer in time)", body = ErrorBody),
))]
pub(super) async fn execute(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<ToolCall>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let principal = caller(&state, &req, Some(Scope::McpWrite)).await?;
    let ToolCall { service_id, tool_name, parameters } = body.into_inner();
    let service = find(&state, &principal, "serviceId", &service_id).await?;
    if tool_name.is_empty() || tool_name.len() > 200 {
        return Err(ApiError::invalid("toolName", "a tool's name, 1 to 200 characters"));
    }
    let arguments = Value::Object(parameters.unwrap_or_default());
    let answered = endpoint::call_tool(&req, &state, &principal, &service.name, &tool_name, arguments)
        .await
        .map_err(refused)?;
    match answered {
        Ok(result) => {
            let execution_time = started.elapsed().as_millis() as u64;
            Ok(answer(&req, &state, ToolResult { result, execution_time }, None))
        }
        Err(error) => {
            let message = error["message"].as_str().unwrap_or("The service answered with an error");
            let message = crate::telemetry::redact::redact_text(message, &[]).into_owned();
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "MCP_SERVICE_ERROR", message)
                .with_details(json!({ "code": error["code"] })))
        }
    }
}

/// The gateway's refusal of a tool call, in the API's words.
fn refused(refusal: Refusal) -> ApiError {
    let message = refusal.error.message.clone();
    let code = refusal.error.code;
    let details = json!({ "jsonrpcCode": code });
    let error = match (refusal.status, code) {
        (_, refusal::TOKEN_MISSING) => {
            ApiError::new(StatusCode::BAD_REQUEST, "MCP_SERVICE_UNCONFIGURED", message)
        }
        (_, refusal::RATE_LIMITED) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", message)
        }
        (StatusCode::GATEWAY_TIMEOUT, _) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "MCP_SERVICE_ERROR", message)
        }
        (_, refusal::UPSTREAM_FAILED) => ApiError::new(StatusCode::BAD_GATEWAY, "MCP_SERVICE_ERROR", message),
        (StatusCode::NOT_FOUND, _) => ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", message),
        (StatusCode::FORBIDDEN, _) => {
            ApiError::new(StatusCode::FORBIDDEN, "AUTH_INSUFFICIENT_SCOPE", message)
        }
        (StatusCode::UNAUTHORIZED, _) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_INVALID_CREDENTIALS", message)
        }
        (StatusCode::BAD_REQUEST, _) => ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message),
        (StatusCode::SERVICE_UNAVAILABLE, _) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", message)
        }
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "MCP_SERVICE_ERROR", message),
    };
    let retry_after = refusal.retry_after_seconds().map(|s| s.to_string());
    ApiError { retry_after, ..error.with_details(details) }
}
