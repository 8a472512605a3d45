//! The request-log explorer: admins search the organization's calls, developers their own.
//! Pages go back in time by the id of the last row shown (ids follow arrival time), so new calls
//! never shift a page. A search with filters reads at most `SCAN_BUDGET` rows per page, after
//! skipping the hours the roll-ups show hold no match; when the budget runs out first the page
//! says how far back it looked and offers to search further. Exports stream the filtered calls.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

use super::{Actor, FieldErrors, Layout, filters, parse_id, render};
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db::request_logs::{LogRow, LogSearch, Outcome};
use crate::db::usage::Dimensions;
use crate::db::{self, PooledConn};
use crate::domain::Role;
use crate::error::AppError;
use crate::ids::{Id, KeyId, LogId, OrgId, UserId};

/// Rows on a page.
const PAGE: i64 = 50;
/// Most rows a filtered page reads before it stops and offers to search further.
const SCAN_BUDGET: i64 = 5_000;
/// Messages of the same session shown on a call's page.
const SESSION_MESSAGES: i64 = 100;
/// Longest method or tool name a filter takes.
const NAME_LIMIT: usize = 200;
/// Rows per query while an export streams.
const EXPORT_PAGE: i64 = 1_000;
/// How far back an export without a From date goes.
const EXPORT_DEFAULT_DAYS: i64 = 30;

#[derive(Deserialize, Default, Clone)]
pub struct LogsQuery {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub member: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub tool: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub correlation: String,
    #[serde(default)]
    pub before: String,
}

impl LogsQuery {
    /// The query string of these filters, without the cursor.
    fn filters_query(&self) -> String {
        let pairs = [
            ("service", &self.service),
            ("member", &self.member),
            ("key", &self.key),
            ("method", &self.method),
            ("tool", &self.tool),
            ("outcome", &self.outcome),
            ("from", &self.from),
            ("to", &self.to),
        ];
        let set: Vec<_> = pairs.into_iter().filter(|(_, v)| !v.trim().is_empty()).collect();
        serde_urlencoded::to_string(set).unwrap_or_default()
    }
}

/// A choice in a filter's list.
pub struct Choice {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "logs/list.html")]
pub struct LogsPage {
    layout: Layout,
    query: LogsQuery,
    errors: FieldErrors,
    notices: Vec<String>,
    services: Vec<String>,
    members: Vec<Choice>,
    keys: Vec<Choice>,
    is_admin: bool,
    rows: Vec<LogRow>,
    /// The link to the next (older) page.
    next: Option<String>,
    /// When a filtered page stopped at its budget: how far back it looked.
    searched_to: Option<DateTime<Utc>>,
    filters_query: String,
}

/// A search made from a query: what to run, or why nothing can match.
pub struct Resolved {
    pub search: LogSearch,
    /// A pasted correlation id: that call alone is looked up.
    pub correlation: Option<LogId>,
}

fn parse_moment(raw: &str, end_of_day: bool) -> Result<Option<DateTime<Utc>>, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(moment) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M") {
        return Ok(Some(moment.and_utc()));
    }
    if let Ok(moment) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S") {
        return Ok(Some(moment.and_utc()));
    }
    match NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        // A To date includes the whole day.
        Ok(day) => {
            let day = if end_of_day { day.succ_opt().unwrap_or(day) } else { day };
            Ok(Some(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()))
        }
        Err(_) => Err("Enter a date as YYYY-MM-DD, or a time as YYYY-MM-DDTHH:MM (UTC)."),
    }
}

fn parse_name(raw: &str) -> Result<Option<String>, &'static str> {
    match raw.trim() {
        "" => Ok(None),
        name if name.len() > NAME_LIMIT => Err("That is longer than any name the log keeps."),
        name => Ok(Some(name.to_owned())),
    }
}

/// The member whose calls a user may read: their own, unless they are an admin.
pub fn own(user: &impl Actor) -> Option<UserId> {
    (!user.role().allows(Role::Admin)).then_some(user.user_id())
}

/// Turns the query into a search, with an error at each field that cannot be read.
pub async fn resolve(
    conn: &mut PooledConn,
    user: &impl Actor,
    query: &LogsQuery,
    errors: &mut FieldErrors,
    notices: &mut Vec<String>,
) -> Result<Resolved, AppError> {
    let mut search = LogSearch { own: own(user), ..LogSearch::default() };
    let service = query.service.trim();
    if !service.is_empty() {
        match db::services::find_for_organization(conn.conn(), user.organization_id(), service).await? {
            Some(found) => search.service = Some(found.id),
            None => errors.add("service", format!("There is no service named \"{service}\".")),
        }
    }
    if !query.member.trim().is_empty() {
        match uuid::Uuid::parse_str(query.member.trim()) {
            Ok(id) if user.role().allows(Role::Admin) => search.member = Some(UserId::from_uuid(id)),
            Ok(_) => errors.add("member", "You can read your own calls only."),
            Err(_) => errors.add("member", "Choose a member from the list."),
        }
    }
    if !query.key.trim().is_empty() {
        match uuid::Uuid::parse_str(query.key.trim()) {
            Ok(id) => search.key = Some(KeyId::from_uuid(id)),
            Err(_) => errors.add("key", "Choose an API key from the list."),
        }
    }
    match parse_name(&query.method) {
        Ok(method) => search.method = method,
        Err(e) => errors.add("method", e),
    }
    match parse_name(&query.tool) {
        Ok(tool) => search.tool = tool,
        Err(e) => errors.add("tool", e),
    }
    match query.outcome.trim() {
        "" => {}
        raw => match Outcome::parse(raw) {
            Some(outcome) => search.outcome = Some(outcome),
            None => errors.add("outcome", "Choose an outcome from the list."),
        },
    }
    let from = parse_moment(&query.from, false).unwrap_or_else(|e| {
        errors.add("from", e);
        None
    });
    let to = parse_moment(&query.to, true).unwrap_or_else(|e| {
        errors.add("to", e);
        None
    });
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        errors.add("to", "To must come after From.");
    }
    search.from = from.map(LogId::floor);
    search.below = to.map(LogId::floor);
    if !query.before.trim().is_empty() {
        match uuid::Uuid::parse_str(query.before.trim()) {
            Ok(cursor) => {
                let cursor = LogId::from_uuid(cursor);
                search.below = Some(search.below.map_or(cursor, |below| below.min(cursor)));
            }
            Err(_) => notices.push("That page link is not valid; showing the newest calls.".to_owned()),
        }
    }
    let correlation = match query.correlation.trim() {
        "" => None,
        raw => match uuid::Uuid::parse_str(raw) {
            Ok(id) => Some(LogId::from_uuid(id)),
            Err(_) => {
                errors.add(
                    "correlation",
                    "Paste the X-Correlation-Id value, e.g. 019ad2f1-2b4c-7e10-9a3b-5f0c2d7e8a61.",
                );
                None
            }
        },
    };
    Ok(Resolved { search, correlation })
}

/// One page of the search (`size` rows at most): its rows, the cursor of the next page, and how
/// far back a filtered search looked when its budget ran out first.
pub async fn page(
    conn: &mut PooledConn,
    organization_id: OrgId,
    mut search: LogSearch,
    size: i64,
) -> Result<(Vec<LogRow>, Option<LogId>, Option<DateTime<Utc>>), AppError> {
    if search.filters() && !search.only_unsuccessful() {
        // Skip the hours in which the roll-ups count no matching call.
        let dims = Dimensions {
            service: search.service,
            tool: search.tool.clone(),
            key: search.key,
            user: search.member.or(search.own),
        };
        let below = search.below.and_then(LogId::time).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let from = search.from.and_then(LogId::time);
        let Some(hour) =
            db::usage::newest_hour_with(conn.conn(), organization_id, &dims, from, below).await?
        else {
            return Ok((Vec::new(), None, None));
        };
        if hour < below {
            let end = LogId::floor(hour + Duration::hours(1));
            search.below = Some(search.below.map_or(end, |b| b.min(end)));
        }
        let boundary =
            db::request_logs::nth_newest(conn.conn(), organization_id, &search, SCAN_BUDGET).await?;
        let mut bounded = search.clone();
        if let Some(boundary) = boundary {
            bounded.from = Some(bounded.from.map_or(boundary, |f| f.max(boundary)));
        }
        let mut rows = db::request_logs::search(conn.conn(), organization_id, &bounded, size + 1).await?;
        if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let next = rows.last().map(|r| r.id);
            return Ok((rows, next, None));
        }
        // The budget ran out before the page filled: go on from where it stopped.
        return Ok(match boundary {
            Some(boundary) => (rows, Some(boundary), boundary.time()),
            None => (rows, None, None),
        });
    }
    let mut rows = db::request_logs::search(conn.conn(), organization_id, &search, size + 1).await?;
    let next = if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok((rows, next, None))
}

pub async fn list(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let mut conn = state.db.acquire().await?;
    let mut errors = FieldErrors::default();
    let mut notices = Vec::new();
    let resolved = resolve(&mut conn, &user, &query, &mut errors, &mut notices).await?;
    let (rows, next, searched_to) = if let Some(id) = resolved.correlation {
        let found = db::request_logs::find(conn.conn(), user.organization_id, own(&user), id).await?;
        if found.is_none() {
            let whose = if own(&user).is_some() { "among your calls" } else { "in your organization" };
            errors.add("correlation", format!("No call with this correlation id {whose}."));
        }
        (found.into_iter().collect(), None, None)
    } else if errors.is_empty() {
        page(&mut conn, user.organization_id, resolved.search, PAGE).await?
    } else {
        (Vec::new(), None, None)
    };
    let filters_query = query.filters_query();
    let next = next.map(|cursor| {
        let joiner = if filters_query.is_empty() { "" } else { "&" };
        format!("/logs?{filters_query}{joiner}before={cursor}")
    });
    let page = LogsPage {
        layout: Layout::signed_in("Request log", "/logs", &user, &state),
        services: db::services::catalog(conn.conn(), user.organization_id)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect(),
        members: if user.role.allows(Role::Admin) {
            db::users::list_members(conn.conn(), user.organization_id)
                .await?
                .into_iter()
                .map(|m| Choice { value: m.id.to_string(), label: m.email })
                .collect()
        } else {
            Vec::new()
        },
        keys: keys(&mut conn, &user).await?,
        is_admin: user.role.allows(Role::Admin),
        query,
        errors,
        notices,
        rows,
        next,
        searched_to,
        filters_query,
    };
    let status = if page.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(status, &page)
}

/// The keys a user may filter by: every key for admins, their own for developers.
async fn keys(conn: &mut PooledConn, user: &CurrentUser) -> Result<Vec<Choice>, AppError> {
    let rows = match own(user) {
        None => db::api_keys::list_for_organization(conn.conn(), user.organization_id).await?,
        Some(me) => db::api_keys::list_for_user(conn.conn(), user.organization_id, me).await?,
    };
    Ok(rows
        .into_iter()
        .map(|k| Choice { value: k.id.to_string(), label: format!("{} ({})", k.name, k.display_key) })
        .collect())
}

#[derive(Template, WebTemplate)]
#[template(path = "logs/detail.html")]
pub struct LogPage {
    layout: Layout,
    call: LogRow,
    request: String,
    response: String,
    session: Vec<LogRow>,
}

/// A JSON body indented for reading, an event stream with each event's JSON indented, anything
/// else as it was stored.
fn pretty(body: Option<&str>) -> String {
    let Some(body) = body else { return String::new() };
    let indented = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
    };
    if let Some(json) = indented(body) {
        return json;
    }
    body.lines()
        .map(|line| match line.strip_prefix("data:").map(str::trim).and_then(indented) {
            Some(json) => format!("data: {json}"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn detail(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<LogPage, AppError> {
    let id: LogId = parse_id(&id)?;
    let mut conn = state.db.acquire().await?;
    // Another organization's call, or another member's for a developer: 404.
    let call = db::request_logs::find(conn.conn(), user.organization_id, own(&user), id)
        .await?
        .ok_or(AppError::NotFound)?;
    let session =
        db::request_logs::same_session(conn.conn(), user.organization_id, &call, SESSION_MESSAGES).await?;
    // "tools/call echo to github · Calls"
    let what = [call.method.as_deref(), call.tool_name.as_deref()].into_iter().flatten().collect::<Vec<_>>();
    let what = if what.is_empty() { "A message".to_owned() } else { what.join(" ") };
    let title = format!("{what} to {} · Calls", call.service_name);
    Ok(LogPage {
        layout: Layout::signed_in(title, "/logs", &user, &state),
        request: pretty(call.request_body.as_ref().map(|b| b.0.as_ref())),
        response: pretty(call.response_body.as_ref().map(|b| b.0.as_ref())),
        call,
        session,
    })
}

/// The formats calls export to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

const CSV_HEADER: [&str; 17] = [
    "correlation_id",
    "time",
    "member",
    "api_key",
    "service",
    "method",
    "tool",
    "outcome",
    "http_status",
    "error_code",
    "error_message",
    "duration_ms",
    "ip",
    "user_agent",
    "request_body",
    "response_body",
    "truncated",
];

/// A text cell a spreadsheet would run as a formula gets a leading apostrophe.
pub fn neutralised(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Writes rows in the format; CSV without its header.
pub fn encode(rows: &[LogRow], format: Format) -> Vec<u8> {
    match format {
        Format::JsonLines => {
            let mut out = Vec::new();
            for row in rows {
                if serde_json::to_writer(&mut out, row).is_ok() {
                    out.push(b'\n');
                }
            }
            out
        }
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::new());
            for row in rows {
                let text = |v: Option<&str>| neutralised(v.unwrap_or_default()).into_owned();
                let truncated = match (row.request_truncated, row.response_truncated) {
                    (true, true) => "request, response",
                    (true, false) => "request",
                    (false, true) => "response",
                    (false, false) => "",
                };
                let record = [
                    row.id.to_string(),
                    row.created_at.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    text(row.member_email.as_deref()),
                    text(row.key_name.as_deref()),
                    neutralised(&row.service_name).into_owned(),
                    text(row.method.as_deref()),
                    text(row.tool_name.as_deref()),
                    row.outcome().as_str().to_owned(),
                    row.http_status.to_string(),
                    row.error_code.map(|c| c.to_string()).unwrap_or_default(),
                    text(row.error_message.as_deref()),
                    row.duration_ms.to_string(),
                    text(row.ip.as_deref()),
                    text(row.user_agent.as_deref()),
                    text(row.request_body.as_ref().map(|b| b.0.as_ref())),
                    text(row.response_body.as_ref().map(|b| b.0.as_ref())),
                    truncated.to_owned(),
                ];
                // Writing to memory cannot fail.
                let _ = out.write_record(&record);
            }
            out.into_inner().unwrap_or_default()
        }
    }
}

pub async fn export_csv(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, AppError> {
    export(user, state, query.into_inner(), Format::Csv).await
}

pub async fn export_jsonl(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, AppError> {
    export(user, state, query.into_inner(), Format::JsonLines).await
}

/// Streams the filtered calls, newest first, a page at a time: memory stays the same whatever
/// the number of rows. Without a From date the last `EXPORT_DEFAULT_DAYS` days are exported.
async fn export(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: LogsQuery,
    format: Format,
) -> Result<HttpResponse, AppError> {
    let mut errors = FieldErrors::default();
    let mut notices = Vec::new();
    let mut search = {
        let mut conn = state.db.acquire().await?;
        resolve(&mut conn, &user, &query, &mut errors, &mut notices).await?.search
    };
    if !errors.is_empty() {
        let message: Vec<String> = ["service", "member", "key", "method", "tool", "outcome", "from", "to"]
            .into_iter()
            .filter_map(|field| errors.get(field).map(|e| format!("{field}: {e}")))
            .collect();
        return Ok(HttpResponse::UnprocessableEntity()
            .content_type("text/plain; charset=utf-8")
            .body(format!("The export was not made. {}\n", message.join(" "))));
    }
    let now = state.clock.now();
    if search.from.is_none() {
        search.from = Some(LogId::floor(now - Duration::days(EXPORT_DEFAULT_DAYS)));
    }
    let (extension, content_type) = match format {
        Format::Csv => ("csv", "text/csv; charset=utf-8"),
        Format::JsonLines => ("jsonl", "application/x-ndjson"),
    };
    let header = match format {
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::new());
            let _ = out.write_record(CSV_HEADER);
            out.into_inner().unwrap_or_default()
        }
        Format::JsonLines => Vec::new(),
    };
    let organization_id = user.organization_id;
    let db = state.db.clone();
    let stream = futures_util::stream::unfold(Some((search, Some(header))), move |state| {
        let db = db.clone();
        async move {
            let (mut search, header) = state?;
            if let Some(header) = header {
                return Some((Ok(web::Bytes::from(header)), Some((search, None))));
            }
            let rows = async {
                let mut conn = db.acquire().await?;
                db::request_logs::search(conn.conn(), organization_id, &search, EXPORT_PAGE).await
            }
            .await;
            match rows {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let done = (rows.len() as i64) < EXPORT_PAGE;
                    search.below = rows.last().map(|r| r.id);
                    let bytes = web::Bytes::from(encode(&rows, format));
                    Some((Ok(bytes), (!done).then_some((search, None))))
                }
                Err(e) => {
                    tracing::error!(error = %e, "a request-log export failed part way");
                    Some((Err(AppError::from(e)), None))
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"request-log-{}.{extension}\"", now.format("%Y-%m-%d")),
        ))
        .streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_indented_for_reading() {
        assert_eq!(pretty(Some(r#"{"a":1}"#)), "{\n  \"a\": 1\n}");
        let stream = "id: 1\ndata: {\"a\":1}\n\n";
        assert_eq!(pretty(Some(stream)), "id: 1\ndata: {\n  \"a\": 1\n}\n");
        assert_eq!(pretty(Some("not json")), "not json");
        assert_eq!(pretty(None), "");
    }

    #[test]
    fn formula_cells_are_neutralised_and_others_kept() {
        for risky in ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralised(risky), format!("'{risky}"));
        }
        for safe in ["echo", "", "a=b", "'quoted"] {
            assert_eq!(neutralised(safe), safe);
        }
    }

    #[test]
    fn moments_read_as_dates_or_times_and_a_to_date_includes_its_day() {
        let day = parse_moment("2026-11-29", false).unwrap().unwrap();
        assert_eq!(day.to_rfc3339(), "2026-11-29T00:00:00+00:00");
        let end = parse_moment("2026-11-29", true).unwrap().unwrap();
        assert_eq!(end.to_rfc3339(), "2026-11-30T00:00:00+00:00");
        let time = parse_moment("2026-11-29T14:05", true).unwrap().unwrap();
        assert_eq!(time.to_rfc3339(), "2026-11-29T14:05:00+00:00");
        assert_eq!(parse_moment("  ", false), Ok(None));
        assert!(parse_moment("yesterday", false).is_err());
        assert!(parse_moment("2026-13-40", false).is_err());
    }
}
