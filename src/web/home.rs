//! The dashboard home: the organization at a glance.

use actix_web::web;
use askama::Template;
use askama_web::WebTemplate;
use chrono::Datelike;

use super::Layout;
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db;
use crate::error::AppError;

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct HomePage {
    layout: Layout,
    organization: String,
    members: Vec<(String, i64)>,
    services: i64,
    month: String,
    usage: db::usage::Totals,
}

pub async fn show(user: CurrentUser, state: web::Data<AppState>) -> Result<HomePage, AppError> {
    let now = state.clock.now();
    let mut conn = state.db.acquire().await?;
    let members = db::users::count_active_by_role(conn.conn(), user.organization_id).await?;
    let services = db::services::count_available(conn.conn(), user.organization_id).await?;
    let usage =
        db::usage::month_totals(conn.conn(), user.organization_id, now.year(), now.month() as i32).await?;
    Ok(HomePage {
        layout: Layout::signed_in("Dashboard", "/", &user, &state),
        organization: user.organization_name.clone(),
        members,
        services,
        month: now.format("%B %Y").to_string(),
        usage,
    })
}
