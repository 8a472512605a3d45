//! The request log and usage (`logs:read`): admins read the organization's calls, others their
//! own, with the explorer's filters; usage comes from the roll-ups, as on the usage page.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Envelope, ErrorBody, KeyOwner, answer, owner, path_id};
use crate::app::AppState;
use crate::db;
use crate::db::request_logs::LogRow;
use crate::db::usage::{Breakdown, Whose};
use crate::domain::Scope;
use crate::ids::LogId;
use crate::telemetry::rollup::{Counts, Grain};
use crate::web::logs::{self as explorer, LogsQuery};
use crate::web::usage::Range;

/// The explorer's filters, and the page.
#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct LogFilters {
    /// A service's name.
    service: Option<String>,
    /// A member's id (admins only).
    member: Option<String>,
    /// An API key's id.
    key: Option<String>,
    /// A JSON-RPC method, e.g. `tools/call`.
    method: Option<String>,
    tool: Option<String>,
    /// `success`, `tool_error` or `failure`.
    outcome: Option<String>,
    /// From this day (`YYYY-MM-DD`) or moment (`YYYY-MM-DDTHH:MM`, UTC).
    from: Option<String>,
    /// Up to this day (inclusive) or moment.
    to: Option<String>,
    /// How many (1 to 100, default 20).
    limit: Option<String>,
    /// `meta.nextCursor` of the page before.
    cursor: Option<String>,
}

/// One recorded call.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RequestLog {
    /// Also the call's correlation id (`X-Correlation-Id`).
    id: String,
    created_at: String,
    service: String,
    method: Option<String>,
    tool: Option<String>,
    outcome: String,
    http_status: i32,
    /// The JSON-RPC error code, if the call failed.
    error_code: Option<i32>,
    error_message: Option<String>,
    duration_ms: i64,
    /// `2026-07-28` (stateless) or `2025-11-25` (a session).
    era: String,
    user_id: Option<String>,
    member_email: Option<String>,
    api_key_id: Option<String>,
    key_name: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    /// The request and response as recorded (redacted, cut at the recording limit); in the
    /// answer for one call only.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<String>,
}

impl RequestLog {
    fn of(row: LogRow, with_bodies: bool) -> RequestLog {
        let body = |b: Option<db::compact_body::CompactBody<'static>>| b.map(|b| b.0.into_owned());
        let (request_body, response_body) = match with_bodies {
            true => (body(row.request_body), body(row.response_body)),
            false => (None, None),
        };
        RequestLog {
            id: row.id.to_string(),
            created_at: row.created_at.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            service: row.service_name,
            method: row.method,
            tool: row.tool_name,
            outcome: db::request_logs::Outcome::from_code(row.outcome).as_str().to_owned(),
            http_status: row.http_status,
            error_code: row.error_code,
            error_message: row.error_message,
            duration_ms: row.duration_ms,
            era: if row.stateless { "2026-07-28" } else { "2025-11-25" }.to_owned(),
            user_id: row.user_id.map(|id| id.to_string()),
            member_email: row.member_email,
            api_key_id: row.api_key_id.map(|id| id.to_string()),
            key_name: row.key_name,
            ip: row.ip,
            user_agent: row.user_agent,
            request_body,
            response_body,
        }
    }
}

/// Recorded calls, newest first: the organization's for admins, the caller's own otherwise. A
/// filtered page reads a bounded stretch of the log, so it may hold fewer than `limit` calls
/// while `meta.nextCursor` says there is more to search.
#[utoipa::path(get, path = "/api/v1/logs/requests", params(LogFilters), responses(
    (status = 200, description = "`data` is a page of calls", body = Envelope<Vec<RequestLog>>),
    (status = 400, description = "VALIDATION_ERROR (a filter, limit or cursor)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (logs:read)", body = ErrorBody),
))]
pub(super) async fn requests(
    req: HttpRequest,
    state: web::Data<AppState>,
    filters: web::Query<LogFilters>,
) -> Result<HttpResponse, ApiError> {
    let reader = owner(&state, &req, Scope::LogsRead).await?;
    let filters = filters.into_inner();
    let limit = super::page_size(filters.limit.as_deref())?;
    let cursor = match filters.cursor.as_deref() {
        None => String::new(),
        Some(raw) => match uuid::Uuid::parse_str(raw) {
            Ok(id) => id.to_string(),
            Err(_) => return Err(ApiError::invalid("cursor", "not a cursor of this list")),
        },
    };
    let text = |v: Option<String>| v.unwrap_or_default();
    let query = LogsQuery {
        service: text(filters.service),
        member: text(filters.member),
        key: text(filters.key),
        method: text(filters.method),
        tool: text(filters.tool),
        outcome: text(filters.outcome),
        from: text(filters.from),
        to: text(filters.to),
        correlation: String::new(),
        before: cursor,
    };
    let mut conn = state.db.acquire().await?;
    let mut errors = crate::web::FieldErrors::default();
    let resolved = explorer::resolve(&mut conn, &reader, &query, &mut errors, &mut Vec::new()).await?;
    if !errors.is_empty() {
        return Err(ApiError::fields(&errors));
    }
    let organization_id = reader.principal.organization_id;
    let (rows, next, _) = explorer::page(&mut conn, organization_id, resolved.search, limit as i64).await?;
    let calls: Vec<RequestLog> = rows.into_iter().map(|row| RequestLog::of(row, false)).collect();
    Ok(answer(&req, &state, calls, next.map(|id| id.to_string())))
}

/// One recorded call, with its request and response as recorded.
#[utoipa::path(get, path = "/api/v1/logs/requests/{id}", params(("id" = uuid::Uuid, Path, description = "The call's id (its correlation id)")), responses(
    (status = 200, description = "`data` is the call", body = Envelope<RequestLog>),
    (status = 400, description = "VALIDATION_ERROR (id)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (logs:read)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND (unknown, or not one the caller may read)", body = ErrorBody),
))]
pub(super) async fn request(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let reader = owner(&state, &req, Scope::LogsRead).await?;
    let id: LogId = path_id(&id)?;
    let mut conn = state.db.acquire().await?;
    let own = explorer::own(&reader);
    let found = db::request_logs::find(conn.conn(), reader.principal.organization_id, own, id).await?;
    let found = found.ok_or_else(ApiError::not_found)?;
    Ok(answer(&req, &state, RequestLog::of(found, true), None))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct UsageFilters {
    /// `24h`, `7d`, `30d` (default), `90d` or `12m`.
    range: Option<String>,
    /// A service's name; all services by default.
    service: Option<String>,
}

/// The organization's calls over a range, from the roll-ups.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Usage {
    range: String,
    /// `hour`, `day` or `month`: the length of each period of `series`.
    grain: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    service: Option<String>,
    totals: Figures,
    /// The periods with calls, oldest first.
    series: Vec<Period>,
    /// The services with calls, most first (at most 100).
    services: Vec<Named>,
    /// The tools with calls, most first (at most 100).
    tools: Vec<Named>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Figures {
    requests: i64,
    /// Answered by the service (tool errors included).
    successful: i64,
    /// Calls the tool answered with `isError`.
    tool_errors: i64,
    /// Refused, client errors and upstream failures.
    failures: i64,
    average_ms: Option<f64>,
}

impl From<&Counts> for Figures {
    fn from(counts: &Counts) -> Figures {
        Figures {
            requests: counts.requests,
            successful: counts.successes(),
            tool_errors: counts.tool_errors,
            failures: counts.failures,
            average_ms: counts.average(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Period {
    start: DateTime<Utc>,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Named {
    name: String,
    /// The service, for a tool.
    service: Option<String>,
    #[serde(flatten)]
    figures: Figures,
}

/// The organization's calls over a range, by period, service and tool (`logs:read`).
#[utoipa::path(get, path = "/api/v1/usage", params(UsageFilters), responses(
    (status = 200, description = "`data` is the usage", body = Envelope<Usage>),
    (status = 400, description = "VALIDATION_ERROR (range or service)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (logs:read)", body = ErrorBody),
))]
pub(super) async fn usage(
    req: HttpRequest,
    state: web::Data<AppState>,
    filters: web::Query<UsageFilters>,
) -> Result<HttpResponse, ApiError> {
    let reader: KeyOwner = owner(&state, &req, Scope::LogsRead).await?;
    let range = match filters.range.as_deref() {
        None => Range::Month,
        Some(raw) => {
            Range::parse(raw).ok_or_else(|| ApiError::invalid("range", "24h, 7d, 30d, 90d or 12m"))?
        }
    };
    let organization_id = reader.principal.organization_id;
    let mut conn = state.db.acquire().await?;
    let service = match filters.service.as_deref() {
        None => None,
        Some(name) => {
            let found = db::services::find_for_organization(conn.conn(), organization_id, name).await?;
            Some(found.ok_or_else(|| {
                ApiError::invalid("service", "no service of the organization has this name")
            })?)
        }
    };
    let window = range.window(state.clock.now());
    let service_id = service.as_ref().map(|s| s.id);
    let series =
        db::usage::series(conn.conn(), organization_id, window, service_id, Whose::Organization).await?;
    let totals = Counts::total(series.iter().map(|(_, counts)| counts));
    let named = |rows: Vec<db::usage::BreakdownRow>| {
        rows.into_iter()
            .map(|row| Named { figures: Figures::from(&row.counts), name: row.label, service: row.service })
            .collect()
    };
    let mut by = async |breakdown| {
        let whose = Whose::Organization;
        db::usage::breakdown(conn.conn(), organization_id, window, service_id, whose, breakdown, 100).await
    };
    let services = named(by(Breakdown::Service).await?);
    let tools = named(by(Breakdown::Tool).await?);
    let usage = Usage {
        range: range.code().to_owned(),
        grain: match window.grain {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Month => "month",
        }
        .to_owned(),
        from: window.from,
        to: window.to,
        service: service.map(|s| s.name),
        totals: Figures::from(&totals),
        series: series
            .iter()
            .map(|(start, counts)| Period { start: *start, figures: Figures::from(counts) })
            .collect(),
        services,
        tools,
    };
    Ok(answer(&req, &state, usage, None))
}
