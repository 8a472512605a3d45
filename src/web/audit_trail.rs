//! The audit trail (admins): every change and sign-in in the organization, newest first, with
//! filters by actor, action and date range.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::filters;
use super::{Layout, render};
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db::audit::{AuditFilter, AuditRow};
use crate::db::{self};
use crate::error::AppError;

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
    rows: Vec<AuditRow>,
    query: AuditQuery,
    from_error: Option<&'static str>,
    to_error: Option<&'static str>,
    next_before: Option<String>,
}

impl AuditRow {
    pub fn change(&self) -> String {
        let show = |v: &Option<sqlx::types::Json<serde_json::Value>>| v.as_ref().map(|j| j.0.to_string());
        match (show(&self.before_state), show(&self.after_state)) {
            (Some(before), Some(after)) => format!("{before} → {after}"),
            (Some(before), None) => format!("was {before}"),
            (None, Some(after)) => after,
            (None, None) => String::new(),
        }
    }
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

pub async fn list(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let from = parse_day(&query.from);
    let to = parse_day(&query.to);
    let (from_error, to_error) = (from.err(), to.err());
    let filter = AuditFilter {
        actor: &query.actor.trim().to_lowercase(),
        action: query.action.trim(),
        from: from.ok().flatten().map(start_of),
        until: to.ok().flatten().and_then(|d| d.succ_opt()).map(start_of),
        before: parse_cursor(&query.before),
    };
    let mut rows =
        db::audit::search(state.db.acquire().await?.conn(), user.organization_id, &filter, PAGE_SIZE + 1)
            .await?;
    let next_before = (rows.len() as i64 > PAGE_SIZE).then(|| {
        rows.truncate(PAGE_SIZE as usize);
        rows.last().map(|r| format!("{}.{}", r.created_at.timestamp_micros(), r.id)).unwrap_or_default()
    });
    let status = if from_error.is_some() || to_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
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
