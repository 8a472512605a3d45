//! The JSON API under `/api/v1`, for automation (CI jobs, scripts). A caller presents an API
//! key (`Authorization: Bearer mcp_sk_…`) and may do what its scopes allow, as at the gateway.
//! Every answer is one envelope: `{success: true, data, meta}`, or `{success: false, error:
//! {code, message, details}}` with the status the code implies. Lists are paged by cursor
//! (`limit` 20 by default, at most 100; `meta.nextCursor` while there is more). Changes go
//! through the same functions as the dashboard's forms, audited as the key's owner. The OpenAPI
//! 3.1 document at `/api/v1/openapi.json` is generated from these handlers (`utoipa`).

mod account;
mod logs;
mod organization;
mod services;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::api_key::{KeyPrincipal, KeyRejection};
use crate::db;
use crate::domain::{Role, Scope};
use crate::error::AppError;
use crate::gateway::admit;
use crate::ids::{OrgId, UserId};
use crate::telemetry::logging::Correlation;
use crate::web::{Actor, FieldErrors};

/// The largest request body the API reads.
const BODY_LIMIT: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(BODY_LIMIT)
        .error_handler(|error, _| ApiError::unreadable_body(&error).into());
    let query = web::QueryConfig::default()
        .error_handler(|error, _| ApiError::invalid("query", &error.to_string()).into());
    cfg.service(
        web::scope("/api/v1")
            .app_data(json)
            .app_data(query)
            .service(web::resource("/openapi.json").get(openapi).default_service(only("GET")))
            .service(web::resource("/users/me").get(account::me).default_service(only("GET")))
            .service(
                web::resource("/users/me/api-keys")
                    .get(account::keys)
                    .post(account::create_key)
                    .default_service(only("GET, POST")),
            )
            .service(
                web::resource("/users/me/api-keys/{id}")
                    .delete(account::revoke_key)
                    .default_service(only("DELETE")),
            )
            .service(web::resource("/mcp/services").get(services::list).default_service(only("GET")))
            .service(web::resource("/mcp/services/{id}").get(services::one).default_service(only("GET")))
            .service(
                web::resource("/mcp/services/{id}/configure")
                    .post(services::configure)
                    .default_service(only("POST")),
            )
            .service(web::resource("/mcp/execute/tool").post(services::execute).default_service(only("POST")))
            .service(web::resource("/logs/requests").get(logs::requests).default_service(only("GET")))
            .service(web::resource("/logs/requests/{id}").get(logs::request).default_service(only("GET")))
            .service(web::resource("/usage").get(logs::usage).default_service(only("GET")))
            .service(
                web::resource("/organizations/me")
                    .get(organization::show)
                    .patch(organization::update)
                    .default_service(only("GET, PATCH")),
            )
            .service(
                web::resource("/organizations/me/users")
                    .get(organization::members)
                    .default_service(only("GET")),
            )
            .service(
                web::resource("/organizations/me/users/{id}")
                    .patch(organization::change_role)
                    .default_service(only("PATCH")),
            )
            .service(
                web::resource("/organizations/me/invitations")
                    .post(organization::invite)
                    .default_service(only("POST")),
            )
            .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::not_found()) })),
    );
}

/// Another method on a known path: 405 naming the ones it takes.
fn only(allowed: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(allowed)) })
}

#[derive(OpenApi)]
#[openapi(
    info(title = "MCP Platform API", description = "Automation for MCP Platform: the caller's account and keys, the services they reach and their tokens, tool calls, the request log and usage, and (admins) the organization and its members."),
    paths(
        account::me, account::keys, account::create_key, account::revoke_key,
        services::list, services::one, services::configure, services::execute,
        logs::requests, logs::request, logs::usage,
        organization::show, organization::update, organization::members, organization::change_role, organization::invite,
    ),
    components(schemas(ErrorBody, ErrorDetail, Meta)),
    modifiers(&BearerKey)
)]
struct ApiDoc;

/// Every operation takes an API key as a bearer token.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("mcp_sk_…").build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("apiKey", SecurityScheme::Http(scheme));
        openapi.security = Some(vec![SecurityRequirement::new("apiKey", Vec::<String>::new())]);
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// What every answer carries besides its data.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Meta {
    /// The request's correlation id, also in `X-Correlation-Id`.
    request_id: String,
    /// The cursor of the next page of a list, while there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A successful answer: `{success: true, data, meta}`.
#[derive(Serialize, ToSchema)]
struct Envelope<T> {
    success: bool,
    data: T,
    meta: Meta,
}

/// 200 with `data`.
fn answer<T: Serialize>(
    req: &HttpRequest,
    state: &AppState,
    data: T,
    next_cursor: Option<String>,
) -> HttpResponse {
    answer_with(StatusCode::OK, req, state, data, next_cursor)
}

fn answer_with<T: Serialize>(
    status: StatusCode,
    req: &HttpRequest,
    state: &AppState,
    data: T,
    next_cursor: Option<String>,
) -> HttpResponse {
    let meta = Meta { request_id: Correlation::of(req, state.clock.now()).to_string(), next_cursor };
    HttpResponse::build(status).json(Envelope { success: true, data, meta })
}

/// A refusal, as the envelope says it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    /// The methods a path takes (`Allow`), for a 405.
    allow: Option<&'static str>,
    /// Seconds after which trying again may work (`Retry-After`).
    retry_after: Option<String>,
}

/// `{success: false, error}`.
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    success: bool,
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// AUTH_INVALID_CREDENTIALS, AUTH_TOKEN_EXPIRED, AUTH_INSUFFICIENT_SCOPE, RESOURCE_NOT_FOUND,
    /// VALIDATION_ERROR, CONFLICT, METHOD_NOT_ALLOWED, MCP_SERVICE_ERROR, MCP_SERVICE_UNCONFIGURED,
    /// RATE_LIMIT_EXCEEDED, SERVICE_UNAVAILABLE.
    code: String,
    message: String,
    /// For VALIDATION_ERROR: `field` (the first) and `fields` (each field's message).
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: json!({}), allow: None, retry_after: None }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "There is nothing here")
    }

    fn method_not_allowed(allowed: &'static str) -> ApiError {
        let methods: Vec<&str> = allowed.split(", ").collect();
        ApiError {
            allow: Some(allowed),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("Only {allowed} is allowed here"),
            )
            .with_details(json!({ "allowed": methods }))
        }
    }

    /// Bad input at one field (or part of the request: `query`, `body`).
    fn invalid(field: &str, message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("{field}: {message}"))
            .with_details(json!({ "field": field, "fields": { field: message } }))
    }

    /// The errors a dashboard form would show at its fields, named as the API's fields.
    fn fields(errors: &FieldErrors) -> ApiError {
        let fields: serde_json::Map<String, Value> =
            errors.iter().map(|(field, message)| (camel_case(field), Value::from(message))).collect();
        // The first error found, whatever order the map keeps.
        let (first, message) = errors
            .iter()
            .next()
            .map_or(("body".to_owned(), ""), |(field, message)| (camel_case(field), message));
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("{first}: {message}"))
            .with_details(json!({ "field": first, "fields": fields }))
    }

    /// A body that is not the JSON the operation takes (malformed, a wrong type, an unknown or
    /// missing field, too large, not JSON at all).
    fn unreadable_body(error: &actix_web::error::JsonPayloadError) -> ApiError {
        use actix_web::error::JsonPayloadError;
        let message = match error {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                format!("the body is larger than {BODY_LIMIT} bytes")
            }
            JsonPayloadError::ContentType => "send the body as application/json".to_owned(),
            JsonPayloadError::Deserialize(e) => e.to_string(),
            other => other.to_string(),
        };
        ApiError::invalid("body", &message)
    }

    fn unavailable(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "the API cannot reach the database");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "Try again in a moment")
    }

    fn insufficient_scope(scope: Scope) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AUTH_INSUFFICIENT_SCOPE",
            format!("This API key lacks the {} scope", scope.as_str()),
        )
        .with_details(json!({ "required": scope.as_str() }))
    }
}

/// `default_key_expiry_days` → `defaultKeyExpiryDays`.
fn camel_case(field: &str) -> String {
    let mut parts = field.split('_');
    let mut name = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status).json(json!({
            "success": false,
            "error": { "code": self.code, "message": self.message, "details": self.details },
        }));
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::from(AppError::from(e))
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        match e {
            AppError::NotFound => ApiError::not_found(),
            AppError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", message),
            AppError::TooManyRequests { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs.to_string()),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "Too many requests")
            },
            other => ApiError::unavailable(format!("{other:?}")),
        }
    }
}

/// The caller, whose key must hold `scope` (if any).
async fn caller(state: &AppState, req: &HttpRequest, scope: Option<Scope>) -> Result<KeyPrincipal, ApiError> {
    let unauthorized =
        |message: String| ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_INVALID_CREDENTIALS", message);
    let hash = admit::presented_key(req).map_err(|refusal| unauthorized(refusal.error.message))?;
    let principal = admit::key_principal(state, hash).await.map_err(|rejection| match rejection {
        KeyRejection::Expired | KeyRejection::Rolled => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AUTH_TOKEN_EXPIRED",
            format!("Unauthorized: {rejection}"),
        ),
        KeyRejection::Unavailable(e) => ApiError::unavailable(e),
        other => unauthorized(format!("Unauthorized: {other}")),
    })?;
    match scope {
        Some(scope) if !principal.scopes.contains(scope) => Err(ApiError::insufficient_scope(scope)),
        _ => Ok(principal),
    }
}

/// The owner of the presented key, who the audit trail names for what the request changes.
struct KeyOwner {
    principal: KeyPrincipal,
    email: String,
    client: ClientInfo,
}

impl Actor for KeyOwner {
    fn organization_id(&self) -> OrgId {
        self.principal.organization_id
    }

    fn user_id(&self) -> UserId {
        self.principal.user_id
    }

    fn email(&self) -> &str {
        &self.email
    }

    fn client(&self) -> &ClientInfo {
        &self.client
    }

    fn role(&self) -> Role {
        self.principal.role
    }
}

/// The caller as one who changes something: their key must hold `scope`.
async fn owner(state: &AppState, req: &HttpRequest, scope: Scope) -> Result<KeyOwner, ApiError> {
    let principal = caller(state, req, Some(scope)).await?;
    let mut conn = state.db.acquire().await?;
    let member = db::users::find_member(conn.conn(), principal.organization_id, principal.user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(KeyOwner { principal, email: member.email, client: ClientInfo::of(req) })
}

#[derive(Deserialize, utoipa::IntoParams)]
struct Page {
    /// How many (1 to 100, default 20).
    limit: Option<String>,
    /// `meta.nextCursor` of the page before.
    cursor: Option<String>,
}

/// How many items a page holds: `limit` as asked (1 to 100), 20 by default.
fn page_size(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(20),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid("limit", "a whole number from 1 to 100")),
        },
    }
}

/// The page of `items` (ordered, each with an id) that `page` asks for, and the next page's
/// cursor (the last id on this one) while there is more.
fn paged<T>(
    items: Vec<T>,
    page: &Page,
    id: impl Fn(&T) -> &str,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = page_size(page.limit.as_deref())?;
    let start = match page.cursor.as_deref() {
        None => 0,
        Some(after) => items
            .iter()
            .position(|item| id(item) == after)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::invalid("cursor", "not a cursor of this list"))?,
    };
    let mut page: Vec<T> = items.into_iter().skip(start).take(limit + 1).collect();
    let next = match page.len() > limit {
        true => {
            page.truncate(limit);
            page.last().map(|item| id(item).to_owned())
        }
        false => None,
    };
    Ok((page, next))
}

/// An id in a path.
fn path_id<T: crate::ids::Id>(raw: &str) -> Result<T, ApiError> {
    crate::web::parse_id(raw).map_err(|_| ApiError::invalid("id", "not an id"))
}
