//! The JSON API under `/api/v1`, for automation (CI jobs, scripts). A caller presents an API
//! key (`Authorization: Bearer mcp_sk_…`) and may do what its scopes allow, as at the gateway.
//! Every answer is one envelope: `{success: true, data, meta}`, or `{success: false, error:
//! {code, message, details}}` with the status the code implies. Lists are paged by cursor
//! (`limit` 20 by default, at most 100; `meta.nextCursor` while there is more). The OpenAPI 3.1
//! document at `/api/v1/openapi.json` is generated from these handlers (`utoipa`).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::api_key::{KeyPrincipal, KeyRejection};
use crate::db;
use crate::domain::Scope;
use crate::gateway::admit;
use crate::ids::ServiceId;
use crate::telemetry::logging::Correlation;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Another method on a known path: 405 naming the one it takes.
    let only_get = || web::to(|| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) });
    cfg.service(
        web::scope("/api/v1")
            .service(web::resource("/openapi.json").get(openapi).default_service(only_get()))
            .service(web::resource("/users/me").get(me).default_service(only_get()))
            .service(web::resource("/mcp/services").get(services).default_service(only_get()))
            .service(web::resource("/mcp/services/{id}").get(service).default_service(only_get()))
            .service(web::resource("/organizations/me").get(organization).default_service(only_get()))
            .service(web::resource("/organizations/me/users").get(members).default_service(only_get()))
            .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::not_found()) })),
    );
}

#[derive(OpenApi)]
#[openapi(
    info(title = "MCP Platform API", description = "Automation for MCP Platform: the caller's account and the services they reach."),
    paths(me, services, service, organization, members),
    components(schemas(Me, ServiceSummary, Organization, Retention, Member, ErrorBody, ErrorDetail, Meta)),
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

fn answer<T: Serialize>(
    req: &HttpRequest,
    state: &AppState,
    data: T,
    next_cursor: Option<String>,
) -> HttpResponse {
    let meta = Meta { request_id: Correlation::of(req, state.clock.now()).to_string(), next_cursor };
    HttpResponse::Ok().json(Envelope { success: true, data, meta })
}

/// A refusal, as the envelope says it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
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
    /// VALIDATION_ERROR, METHOD_NOT_ALLOWED, SERVICE_UNAVAILABLE.
    code: String,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: json!({}) }
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "There is nothing here")
    }

    /// Every path of the API takes GET only, so far.
    fn method_not_allowed() -> ApiError {
        ApiError {
            details: json!({ "allowed": ["GET"] }),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "Only GET is allowed here")
        }
    }

    fn invalid(field: &str, message: &str) -> ApiError {
        ApiError {
            details: json!({ "field": field }),
            ..ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("{field}: {message}"))
        }
    }

    fn unavailable(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "the API cannot reach the database");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "Try again in a moment")
    }
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
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::unavailable(e)
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
        Some(scope) if !principal.scopes.contains(scope) => Err(ApiError {
            details: json!({ "required": scope.as_str() }),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "AUTH_INSUFFICIENT_SCOPE",
                format!("This API key lacks the {} scope", scope.as_str()),
            )
        }),
        _ => Ok(principal),
    }
}

/// The caller's account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Me {
    id: String,
    email: String,
    role: String,
    organization_id: String,
    /// The scopes the presented key holds (as the owner's role allows today).
    scopes: Vec<String>,
}

/// The caller's account and the presented key's scopes.
#[utoipa::path(get, path = "/api/v1/users/me", responses(
    (status = 200, description = "`data` is the caller", body = Envelope<Me>),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
))]
async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, None).await?;
    let mut conn = state.db.acquire().await?;
    let user = db::users::find_member(conn.conn(), principal.organization_id, principal.user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let me = Me {
        id: user.id.to_string(),
        email: user.email,
        role: user.role.as_str().to_owned(),
        organization_id: user.organization_id.to_string(),
        scopes: Scope::ALL
            .into_iter()
            .filter(|s| principal.scopes.contains(*s))
            .map(|s| s.as_str().to_owned())
            .collect(),
    };
    Ok(answer(&req, &state, me, None))
}

/// A service the caller's organization offers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ServiceSummary {
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

#[derive(Deserialize, utoipa::IntoParams)]
struct Page {
    /// How many (1 to 100, default 20).
    limit: Option<String>,
    /// `meta.nextCursor` of the page before.
    cursor: Option<String>,
}

/// The services the caller's organization offers, system services first, by name.
#[utoipa::path(get, path = "/api/v1/mcp/services", params(Page), responses(
    (status = 200, description = "`data` is a page of services", body = Envelope<Vec<ServiceSummary>>),
    (status = 400, description = "VALIDATION_ERROR (limit or cursor)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (mcp:read)", body = ErrorBody),
))]
async fn services(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::McpRead)).await?;
    let listed = summaries(&state, &principal).await?;
    let (page, next) = paged(listed, &page, |s| &s.id)?;
    Ok(answer(&req, &state, page, next))
}

/// The page of `items` (ordered, each with an id) that `page` asks for, and the next page's
/// cursor (the last id on this one) while there is more.
fn paged<T>(
    items: Vec<T>,
    page: &Page,
    id: impl Fn(&T) -> &str,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = match page.limit.as_deref() {
        None => 20,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", "a whole number from 1 to 100")),
        },
    };
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

/// One service the caller's organization offers, with whether the caller has its token.
#[utoipa::path(get, path = "/api/v1/mcp/services/{id}", params(("id" = uuid::Uuid, Path, description = "The service's id")), responses(
    (status = 200, description = "`data` is the service", body = Envelope<ServiceSummary>),
    (status = 400, description = "VALIDATION_ERROR (id)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (mcp:read)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND (unknown, or not the caller's organization's)", body = ErrorBody),
))]
async fn service(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::McpRead)).await?;
    let id = ServiceId::parse(&id).ok_or_else(|| ApiError::invalid("id", "not a service id"))?;
    let found = summaries(&state, &principal).await?.into_iter().find(|s| s.id == id.to_string());
    Ok(answer(&req, &state, found.ok_or_else(ApiError::not_found)?, None))
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

/// The caller's organization.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Organization {
    id: String,
    name: String,
    slug: String,
    plan: String,
    /// Preselected expiry of new API keys, in days.
    default_key_expiry_days: u16,
    retention: Retention,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// How long the organization keeps what it records, in days.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Retention {
    request_logs: u16,
    usage: u16,
    audit: u16,
}

/// The caller's organization, its plan and settings.
#[utoipa::path(get, path = "/api/v1/organizations/me", responses(
    (status = 200, description = "`data` is the organization", body = Envelope<Organization>),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:organization)", body = ErrorBody),
))]
async fn organization(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::AdminOrganization)).await?;
    let mut conn = state.db.acquire().await?;
    let found = db::organizations::find(conn.conn(), principal.organization_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let settings = found.settings.0;
    let organization = Organization {
        id: found.id.to_string(),
        name: found.name,
        slug: found.slug,
        plan: found.plan,
        default_key_expiry_days: settings.default_key_expiry_days,
        retention: Retention {
            request_logs: settings.log_retention_days,
            usage: settings.rollup_retention_days,
            audit: settings.audit_retention_days,
        },
        created_at: found.created_at,
    };
    Ok(answer(&req, &state, organization, None))
}

/// A member of the caller's organization.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Member {
    id: String,
    email: String,
    /// `admin`, `developer` or `viewer`.
    role: String,
    active: bool,
    last_login_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The members of the caller's organization, by email.
#[utoipa::path(get, path = "/api/v1/organizations/me/users", params(Page), responses(
    (status = 200, description = "`data` is a page of members", body = Envelope<Vec<Member>>),
    (status = 400, description = "VALIDATION_ERROR (limit or cursor)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:users)", body = ErrorBody),
))]
async fn members(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::AdminUsers)).await?;
    let mut conn = state.db.acquire().await?;
    let listed: Vec<Member> = db::users::list_members(conn.conn(), principal.organization_id)
        .await?
        .into_iter()
        .map(|user| Member {
            id: user.id.to_string(),
            email: user.email,
            role: user.role.as_str().to_owned(),
            active: user.is_active,
            last_login_at: user.last_login_at,
            created_at: user.created_at,
        })
        .collect();
    let (page, next) = paged(listed, &page, |m| &m.id)?;
    Ok(answer(&req, &state, page, next))
}
