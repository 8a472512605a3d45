//! The caller's account and their API keys. A key with `keys:write` creates and revokes its
//! owner's keys, and can only create keys that hold at most what it holds itself: its scopes,
//! the services and tools it reaches, its expiry and its own rate limit.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Envelope, ErrorBody, answer, answer_with, caller, owner, path_id};
use crate::app::AppState;
use crate::db;
use crate::db::api_keys::KeyRow;
use crate::domain::{Scope, Scopes};
use crate::ids::KeyId;
use crate::web::keys::{self as dashboard, KeySpec, Whose};

/// The caller's account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Me {
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
pub(super) async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
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
        scopes: principal.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
    };
    Ok(answer(&req, &state, me, None))
}

/// One of the caller's API keys (never the key itself, which only its creation answers).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ApiKeyInfo {
    id: String,
    name: String,
    /// The key's prefix and last characters, as the dashboard shows it.
    display: String,
    scopes: Vec<String>,
    /// The services and `service/tool` entries it is narrowed to; `null`: every one.
    reach: Option<Vec<String>>,
    /// `active`, `replaced, in grace`, `replaced`, `expired` or `revoked`.
    status: String,
    /// Requests per minute; `null`: the plan's.
    rate_limit_per_minute: Option<i32>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl ApiKeyInfo {
    fn of(key: KeyRow, now: DateTime<Utc>) -> ApiKeyInfo {
        ApiKeyInfo {
            id: key.id.to_string(),
            status: key.status(now).to_string(),
            scopes: key.scopes.split_whitespace().map(str::to_owned).collect(),
            reach: key.reach.as_deref().map(|r| r.split_whitespace().map(str::to_owned).collect()),
            name: key.name,
            display: key.display_key,
            rate_limit_per_minute: key.rate_limit_per_minute,
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            created_at: key.created_at,
        }
    }
}

/// The caller's API keys, newest first, revoked and expired ones included.
#[utoipa::path(get, path = "/api/v1/users/me/api-keys", params(super::Page), responses(
    (status = 200, description = "`data` is a page of keys", body = Envelope<Vec<ApiKeyInfo>>),
    (status = 400, description = "VALIDATION_ERROR (limit or cursor)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
))]
pub(super) async fn keys(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: web::Query<super::Page>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, None).await?;
    let mut conn = state.db.acquire().await?;
    let now = state.clock.now();
    let keys: Vec<ApiKeyInfo> =
        db::api_keys::list_for_user(conn.conn(), principal.organization_id, principal.user_id)
            .await?
            .into_iter()
            .map(|key| ApiKeyInfo::of(key, now))
            .collect();
    let (page, next) = super::paged(keys, &page, |k| &k.id)?;
    Ok(answer(&req, &state, page, next))
}

/// A key to create. Each setting left out takes what the presenting key has (scopes: `mcp:read`
/// and `mcp:write` as far as it holds them).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct NewKey {
    /// 1 to 100 printable characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    scopes: Option<Vec<String>>,
    /// 1 to 1826 days; by default the organization's setting. Never later than the presenting
    /// key's own expiry.
    #[schema(minimum = 1, maximum = 1826)]
    expires_in_days: Option<u32>,
    /// 1 to 1,000,000; at most the presenting key's own limit, when it has one.
    #[schema(minimum = 1, maximum = 1_000_000)]
    rate_limit_per_minute: Option<u32>,
    /// Services, or `service/tool` entries, of the organization.
    reach: Option<Vec<String>>,
}

/// The new key, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreatedKey {
    /// The key itself: store it now, it is not shown again.
    key: String,
    api_key: ApiKeyInfo,
}

const MAX_EXPIRY_DAYS: u32 = 1826;
const MAX_RATE_LIMIT: u32 = 1_000_000;

/// Creates an API key for the caller, holding at most what the presenting key holds (audited).
#[utoipa::path(post, path = "/api/v1/users/me/api-keys", request_body = NewKey, responses(
    (status = 201, description = "`data.key` is the new key, shown this once", body = Envelope<CreatedKey>),
    (status = 400, description = "VALIDATION_ERROR", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (keys:write, or more than the presenting key holds)", body = ErrorBody),
))]
pub(super) async fn create_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &req, Scope::KeysWrite).await?;
    let principal = &owner.principal;
    let now = state.clock.now();
    let mut conn = state.db.acquire().await?;
    let presenting =
        db::api_keys::find_mine(conn.conn(), principal.organization_id, principal.user_id, principal.key_id)
            .await?
            .ok_or_else(ApiError::not_found)?;
    let organization = db::organizations::find(conn.conn(), principal.organization_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    drop(conn);
    let new = body.into_inner();

    let name = new.name.trim();
    dashboard::check_name(name).map_err(|e| ApiError::invalid("name", e))?;
    let scopes = match &new.scopes {
        None => Scopes::new(Scopes::DEFAULT.into_iter().filter(|s| principal.scopes.contains(*s))),
        Some(names) => {
            Scopes::parse(names.iter().map(String::as_str)).map_err(|e| ApiError::invalid("scopes", &e))?
        }
    };
    if scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "name at least one scope"));
    }
    if let Some(beyond) = scopes.iter().find(|s| !principal.scopes.contains(*s)) {
        return Err(ApiError::insufficient_scope(beyond));
    }
    let reach = match &new.reach {
        None => principal.reach.clone(),
        Some(entries) => dashboard::check_reach(&state, principal.organization_id, &entries.join(" "))
            .await?
            .map_err(|e| ApiError::invalid("reach", &e))?,
    };
    if !reach.within(&principal.reach) {
        let message = "This API key cannot create a key that reaches more services or tools than it does";
        return Err(ApiError::new(StatusCode::FORBIDDEN, "AUTH_INSUFFICIENT_SCOPE", message)
            .with_details(serde_json::json!({ "field": "reach" })));
    }
    let expires_at = match new.expires_in_days {
        None => {
            let default = now + Duration::days(i64::from(organization.settings.default_key_expiry_days));
            presenting.expires_at.map_or(default, |limit| default.min(limit))
        }
        Some(days) if (1..=MAX_EXPIRY_DAYS).contains(&days) => {
            let expires_at = now + Duration::days(i64::from(days));
            if presenting.expires_at.is_some_and(|limit| expires_at > limit) {
                return Err(ApiError::invalid(
                    "expiresInDays",
                    "a key cannot outlive the key that creates it",
                ));
            }
            expires_at
        }
        Some(_) => return Err(ApiError::invalid("expiresInDays", "a whole number of days from 1 to 1826")),
    };
    let own_limit = presenting.rate_limit_per_minute;
    let rate_limit = match new.rate_limit_per_minute {
        None => own_limit,
        Some(n) if !(1..=MAX_RATE_LIMIT).contains(&n) => {
            return Err(ApiError::invalid("rateLimitPerMinute", "a whole number from 1 to 1000000"));
        }
        Some(n) if own_limit.is_some_and(|limit| n as i64 > i64::from(limit)) => {
            return Err(ApiError::invalid("rateLimitPerMinute", "at most the presenting key's own limit"));
        }
        Some(n) => Some(n as i32),
    };
    let spec = KeySpec { name: name.to_owned(), scopes, expires_at, rate_limit, reach: reach.to_stored() };
    let (id, key) = dashboard::issue(&state, &owner, &spec).await?;
    let created = db::api_keys::find_mine(
        state.db.acquire().await?.conn(),
        principal.organization_id,
        principal.user_id,
        id,
    )
    .await?
    .ok_or_else(ApiError::not_found)?;
    let created = CreatedKey { key: key.expose().to_owned(), api_key: ApiKeyInfo::of(created, now) };
    Ok(answer_with(StatusCode::CREATED, &req, &state, created, None))
}

/// Revokes one of the caller's keys at once (audited); the presenting key may revoke itself.
#[utoipa::path(delete, path = "/api/v1/users/me/api-keys/{id}", params(("id" = uuid::Uuid, Path, description = "The key's id")), responses(
    (status = 200, description = "`data` is the key, revoked", body = Envelope<ApiKeyInfo>),
    (status = 400, description = "VALIDATION_ERROR (id)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (keys:write)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND (not one of the caller's keys)", body = ErrorBody),
))]
pub(super) async fn revoke_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &req, Scope::KeysWrite).await?;
    let id: KeyId = path_id(&id)?;
    let mut revoked = dashboard::revoke_key(&state, &owner, Whose::Mine, id).await?;
    let now = state.clock.now();
    revoked.revoked_at = revoked.revoked_at.or(Some(now));
    Ok(answer(&req, &state, ApiKeyInfo::of(revoked, now), None))
}
