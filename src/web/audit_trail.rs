//! The audit trail (admins): every change and sign-in in the organization, newest first, with
//! filters by actor, action and date range; each entry a sentence, linked to what it changed
//! while that exists, with the fields that changed; exported as CSV with the same filters.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::confirm::a_or_an;
use super::filters;
use super::logs::neutralised;
use super::{Layout, parse_id, render};
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db::audit::{AuditFilter, AuditRow};
use crate::db::{self};
use crate::error::AppError;
use crate::ids::ServiceId;

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    before: String,
}

#[derive(Template)]
#[template(path = "audit/list.html")]
pub struct AuditPage {
    layout: Layout,
    rows: Vec<Shown>,
    query: AuditQuery,
    from_error: Option<&'static str>,
    to_error: Option<&'static str>,
    next_before: Option<String>,
}

/// An audit row as people read it: a sentence, a link to the thing when it still exists, and
/// what changed, field by field.
pub struct Shown {
    pub row: AuditRow,
    /// "ada@acme.example revoked API key ci-bot (mcp_sk_abcd...a1b2)"
    pub sentence: String,
    /// The thing's name as the sentence gives it (an email, a key's or a service's name).
    pub object: String,
    /// The thing's page, when it still exists.
    pub link: Option<Link>,
    pub diff: Vec<Difference>,
}

#[derive(Clone)]
pub enum Link {
    /// The members directory, searched for this email.
    Member(String),
    /// The organization's keys.
    Keys,
    Service(String),
}

/// One field that changed: its value before and after ("" when it had none).
pub struct Difference {
    pub field: String,
    pub before: String,
    pub after: String,
}

fn state_of(state: &Option<sqlx::types::Json<Value>>) -> Option<&Map<String, Value>> {
    state.as_ref().and_then(|json| json.0.as_object())
}

/// A value as a few words: text as it is, lists joined, nothing as "none".
fn words(value: &Value) -> String {
    match value {
        Value::Null => "none".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) => items.iter().map(words).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The fields whose values differ between before and after (all of one side when the other
/// is absent).
fn differences(row: &AuditRow) -> Vec<Difference> {
    let empty = Map::new();
    let before = state_of(&row.before_state).unwrap_or(&empty);
    let after = state_of(&row.after_state).unwrap_or(&empty);
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|field| before.get(*field) != after.get(*field))
        .map(|field| Difference {
            field: field.replace('_', " "),
            before: before.get(field).map(words).unwrap_or_default(),
            after: after.get(field).map(words).unwrap_or_default(),
        })
        .collect()
}

/// The row as a sentence, and the name of the thing it is about.
fn sentence(row: &AuditRow) -> (String, String) {
    let actor = row.actor_email.as_deref().unwrap_or("The operator");
    let field = |state: &Option<sqlx::types::Json<Value>>, name: &str| {
        state_of(state).and_then(|s| s.get(name)).and_then(Value::as_str).map(str::to_owned)
    };
    let value = |name: &str| {
        field(&row.after_state, name).or_else(|| field(&row.before_state, name)).unwrap_or_default()
    };
    let key = || {
        format!(
            "API key {} ({})",
            value("name"),
            field(&row.before_state, "display").unwrap_or_else(|| value("display"))
        )
    };
    let (email, name, service) = (value("email"), value("name"), value("service_name"));
    match row.action.as_str() {
        "auth.sign_in" => (format!("{actor} signed in"), actor.to_owned()),
        "auth.sign_in_failed" => (format!("A sign-in as {actor} failed"), actor.to_owned()),
        "auth.sign_out" => (format!("{actor} signed out"), actor.to_owned()),
        "account.password_changed" => (format!("{actor} changed their password"), actor.to_owned()),
        "account.session_ended" => (format!("{actor} ended one of their sessions"), actor.to_owned()),
        "account.password_reset" => {
            (format!("{actor} set a new password with a reset link"), actor.to_owned())
        }
        "organization.created" => (format!("{actor} created the organization"), String::new()),
        "organization.updated" => (format!("{actor} changed the organization's settings"), name),
        "organization.plan_changed" => {
            (format!("{actor} moved the organization to the {} plan", value("plan")), value("plan"))
        }
        "invitation.created" => {
            (format!("{actor} invited {email} as {} {}", a_or_an(&value("role")), value("role")), email)
        }
        "invitation.revoked" => (format!("{actor} revoked the invitation for {email}"), email),
        "invitation.accepted" => (
            format!(
                "{actor} accepted an invitation and joined as {} {}",
                a_or_an(&value("role")),
                value("role")
            ),
            actor.to_owned(),
        ),
        "member.role_changed" => {
            let (was, now) = (field(&row.before_state, "role").unwrap_or_default(), value("role"));
            (format!("{actor} made {email} {} {now} (was {was})", a_or_an(&now)), email)
        }
        "member.deactivated" => (format!("{actor} deactivated {email}"), email),
        "member.reactivated" => (format!("{actor} reactivated {email}"), email),
        "member.logs_erased" if email.is_empty() => {
            (format!("{actor} erased a member's request logs"), email)
        }
        "member.logs_erased" => (format!("{actor} erased the request logs of {email}"), email),
        "member.password_reset_issued" => {
            (format!("{actor} issued a password-reset link for {email}"), email)
        }
        "api_key.created" => (format!("{actor} created {}", key()), name),
        "api_key.revoked" => match field(&row.before_state, "owner") {
            Some(owner) if owner != actor => (format!("{actor} revoked {} of {owner}", key()), name),
            _ => (format!("{actor} revoked {}", key()), name),
        },
        "api_key.rolled" => (
            format!(
                "{actor} rolled {} into {}",
                key(),
                field(&row.after_state, "display").unwrap_or_default()
            ),
            name,
        ),
        "service.created" => (format!("{actor} created service {name}"), name),
        "service.updated" => (format!("{actor} changed service {name}"), name),
        "service.deleted" => (format!("{actor} deleted service {name}"), name),
        "service.tool_policy_changed" => {
            (format!("{actor} changed which tools of a service are offered, and to whom"), String::new())
        }
        "service_token.created" => (format!("{actor} stored their {service} token"), service),
        "service_token.replaced" => (format!("{actor} replaced their {service} token"), service),
        "service_token.deleted" => (format!("{actor} deleted their {service} token"), service),
        other => (format!("{actor}: {other}"), String::new()),
    }
}

/// The row as people read it, not yet linked.
fn describe(row: AuditRow) -> Shown {
    let (sentence, object) = sentence(&row);
    let diff = differences(&row);
    Shown { row, sentence, object, link: None, diff }
}

/// Links each entry to its thing when that still exists (members and keys of this
/// organization, and the services it sees), looking each thing up once.
async fn link(conn: &mut db::PooledConn, user: &CurrentUser, entries: &mut [Shown]) -> Result<(), AppError> {
    let services: Vec<(String, ServiceId)> = db::services::catalog(conn.conn(), user.organization_id)
        .await?
        .into_iter()
        .map(|s| (s.name, s.id))
        .collect();
    let mut known: HashMap<(String, String), Option<Link>> = HashMap::new();
    for entry in entries {
        let (Some(kind), Some(target)) = (entry.row.target_type.clone(), entry.row.target_id.clone()) else {
            continue;
        };
        if let Some(link) = known.get(&(kind.clone(), target.clone())) {
            entry.link = link.clone();
            continue;
        }
        let link = match kind.as_str() {
            "user" => match parse_id(&target) {
                Ok(id) => db::users::find_member(conn.conn(), user.organization_id, id)
                    .await?
                    .map(|m| Link::Member(m.email)),
                Err(_) => None,
            },
            "api_key" => match parse_id(&target) {
                Ok(id) => db::api_keys::find_in_organization(conn.conn(), user.organization_id, id)
                    .await?
                    .map(|_| Link::Keys),
                Err(_) => None,
            },
            "service" => services
                .iter()
                .find(|(_, id)| id.to_string() == target)
                .map(|(name, _)| Link::Service(name.clone())),
            _ => None,
        };
        entry.link = link.clone();
        known.insert((kind, target), link);
    }
    Ok(())
}

fn parse_day(raw: &str) -> Result<Option<NaiveDate>, &'static str> {
    match raw.trim() {
        "" => Ok(None),
        day => {
            NaiveDate::parse_from_str(day, "%Y-%m-%d").map(Some).map_err(|_| "Enter the date as YYYY-MM-DD.")
        }
    }
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The keyset cursor `micros.uuid` of the last row shown.
fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = raw.split_once('.')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, Uuid::parse_str(id).ok()?))
}

impl AuditQuery {
    /// The query as the filters read it: the actor's email in lower case.
    fn normalised(mut self) -> AuditQuery {
        self.actor = self.actor.trim().to_lowercase();
        self
    }
}

/// The filter the query asks for, and the errors of its dates.
fn filter_of(query: &AuditQuery) -> (AuditFilter<'_>, Option<&'static str>, Option<&'static str>) {
    let from = parse_day(&query.from);
    let to = parse_day(&query.to);
    let (from_error, to_error) = (from.err(), to.err());
    let filter = AuditFilter {
        actor: query.actor.trim(),
        action: query.action.trim(),
        from: from.ok().flatten().map(start_of),
        until: to.ok().flatten().and_then(|d| d.succ_opt()).map(start_of),
        before: parse_cursor(&query.before),
    };
    (filter, from_error, to_error)
}

pub async fn list(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner().normalised();
    let (filter, from_error, to_error) = filter_of(&query);
    let mut conn = state.db.acquire().await?;
    let mut rows = db::audit::search(conn.conn(), user.organization_id, &filter, PAGE_SIZE + 1).await?;
    let next_before = (rows.len() as i64 > PAGE_SIZE).then(|| {
        rows.truncate(PAGE_SIZE as usize);
        rows.last().map(|r| format!("{}.{}", r.created_at.timestamp_micros(), r.id)).unwrap_or_default()
    });
    let status = if from_error.is_some() || to_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut rows: Vec<Shown> = rows.into_iter().map(describe).collect();
    link(&mut conn, &user, &mut rows).await?;
    drop(conn);
    let page = AuditPage {
        layout: Layout::signed_in("Audit trail", "/audit", &user, &state),
        rows,
        query,
        from_error,
        to_error,
        next_before,
    };
    render(status, &page)
}

/// The most rows one export holds.
const EXPORT_LIMIT: usize = 100_000;
const EXPORT_PAGE: i64 = 1_000;

/// The filtered entries as CSV, newest first, each with its sentence; cells a spreadsheet would
/// run as a formula are neutralised as the request log's export does.
pub async fn export_csv(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let query = AuditQuery { before: String::new(), ..query.into_inner().normalised() };
    let (mut filter, from_error, to_error) = filter_of(&query);
    if let Some(error) = from_error.or(to_error) {
        return Ok(HttpResponse::UnprocessableEntity()
            .content_type("text/plain; charset=utf-8")
            .body(format!("The export was not made. {error}\n")));
    }
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "time",
        "actor",
        "action",
        "what_happened",
        "object",
        "target_type",
        "target_id",
        "before",
        "after",
        "ip",
        "result",
    ];
    out.write_record(header).map_err(|e| AppError::Unexpected(e.into()))?;
    let mut conn = state.db.acquire().await?;
    let mut written = 0;
    while written < EXPORT_LIMIT {
        let rows = db::audit::search(conn.conn(), user.organization_id, &filter, EXPORT_PAGE).await?;
        let Some(last) = rows.last() else { break };
        filter.before = Some((last.created_at, last.id));
        let count = rows.len();
        for entry in rows.into_iter().map(describe) {
            let row = &entry.row;
            let json = |state: &Option<sqlx::types::Json<Value>>| {
                state.as_ref().map(|j| j.0.to_string()).unwrap_or_default()
            };
            let record = [
                row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                row.actor_email.clone().unwrap_or_default(),
                row.action.clone(),
                entry.sentence.clone(),
                entry.object.clone(),
                row.target_type.clone().unwrap_or_default(),
                row.target_id.clone().unwrap_or_default(),
                json(&row.before_state),
                json(&row.after_state),
                row.ip.clone().unwrap_or_default(),
                if row.success { "ok" } else { "failed" }.to_owned(),
            ];
            out.write_record(record.iter().map(|cell| neutralised(cell).into_owned()))
                .map_err(|e| AppError::Unexpected(e.into()))?;
        }
        written += count;
        if (count as i64) < EXPORT_PAGE {
            break;
        }
    }
    let body = out.into_inner().map_err(|e| AppError::Unexpected(anyhow::anyhow!("{e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"audit-trail.csv\""))
        .body(body))
}
