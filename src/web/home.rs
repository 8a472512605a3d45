//! The dashboard home: today and the last 7 days against the periods before, the busiest
//! services, the latest unsuccessful calls (admins: the organization's; developers: their own),
//! and what to do next when there is nothing yet.

use actix_web::web;
use askama::Template;
use askama_web::WebTemplate;
use chrono::Duration;

use super::usage::{Figure, Range, figures, previous};
use super::{Layout, filters};
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db;
use crate::db::request_logs::LogRow;
use crate::db::usage::{Breakdown, BreakdownRow, Whose, Window};
use crate::domain::Role;
use crate::error::AppError;
use crate::telemetry::rollup::{Counts, Grain};

/// Services in the "busiest" table and unsuccessful calls listed.
const TOP_SERVICES: i64 = 5;
const LATEST_FAILED: i64 = 10;

/// Headline figures of one period against the one before.
pub struct Period {
    pub title: &'static str,
    /// What it is compared with.
    pub against: &'static str,
    pub figures: Vec<Figure>,
}

/// A next step for someone who has not got that far yet.
pub struct NextStep {
    pub text: &'static str,
    pub href: &'static str,
    pub action: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct HomePage {
    layout: Layout,
    organization: String,
    members: Vec<(String, i64)>,
    services: i64,
    periods: [Period; 2],
    top_services: Vec<BreakdownRow>,
    /// `None` for viewers, who read no logs.
    failed: Option<Vec<LogRow>>,
    next_steps: Vec<NextStep>,
    is_admin: bool,
}

pub async fn show(user: CurrentUser, state: web::Data<AppState>) -> Result<HomePage, AppError> {
    let now = state.clock.now();
    let organization_id = user.organization_id;
    let mut conn = state.db.acquire().await?;
    let members = db::users::count_active_by_role(conn.conn(), organization_id).await?;
    let services = db::services::count_available(conn.conn(), organization_id).await?;

    // Today so far, against the same hours of yesterday; the last 7 days against the 7 before.
    let today = Window {
        grain: Grain::Hour,
        from: Grain::Day.start(now),
        to: Grain::Hour.next(Grain::Hour.start(now)),
    };
    let yesterday =
        Window { grain: Grain::Hour, from: today.from - Duration::days(1), to: today.to - Duration::days(1) };
    let week = Range::Week.window(now);
    let whole = Whose::Organization;
    let mut counts = Vec::new();
    for window in [today, yesterday, week, previous(week)] {
        let series = db::usage::series(conn.conn(), organization_id, window, None, whole).await?;
        counts.push(Counts::total(series.iter().map(|(_, c)| c)));
    }
    let top_services = db::usage::breakdown(
        conn.conn(),
        organization_id,
        week,
        None,
        whole,
        Breakdown::Service,
        TOP_SERVICES,
    )
    .await?;

    let own = (!user.role.allows(Role::Admin)).then_some(user.id);
    let failed = if user.role.allows(Role::Developer) {
        let since = now - Duration::days(7);
        Some(
            db::request_logs::latest_unsuccessful(
                conn.conn(),
                organization_id,
                own,
                None,
                since,
                LATEST_FAILED,
            )
            .await?,
        )
    } else {
        None
    };

    let mut next_steps = Vec::new();
    if user.role.allows(Role::Admin) && services == 0 {
        next_steps.push(NextStep {
            text: "No services yet: add the first MCP service your members will use.",
            href: "/services/new",
            action: "Add a service",
        });
    }
    if user.role.allows(Role::Developer) {
        if db::api_keys::list_for_user(conn.conn(), organization_id, user.id).await?.is_empty() {
            next_steps.push(NextStep {
                text: "You have no API key: an MCP client needs one to reach the gateway.",
                href: "/keys",
                action: "Create an API key",
            });
        }
        let catalog = db::services::catalog(conn.conn(), organization_id).await?;
        let stored = db::user_tokens::list_for_user(conn.conn(), organization_id, user.id).await?;
        let missing = catalog
            .iter()
            .filter_map(|s| s.token_service_name.as_deref())
            .any(|token| !stored.iter().any(|t| t.service_name == token));
        if missing {
            next_steps.push(NextStep {
                text: "Some services need your own token (for example a GitHub token) before they work for you.",
                href: "/tokens",
                action: "Store a token",
            });
        }
    }
    if counts[2].requests == 0 && services > 0 {
        next_steps.push(NextStep {
            text: "No calls in the last 7 days: point an MCP client at a service's gateway URL with an API key.",
            href: "/services",
            action: "Connect a client",
        });
    }

    Ok(HomePage {
        layout: Layout::signed_in("Dashboard", "/", &user, &state),
        organization: user.organization_name.clone(),
        members,
        services,
        periods: [
            Period {
                title: "Today",
                against: "UTC, against the same hours yesterday",
                figures: figures(&counts[0], &counts[1]),
            },
            Period {
                title: "Last 7 days",
                against: "against the 7 days before",
                figures: figures(&counts[2], &counts[3]),
            },
        ],
        top_services,
        failed,
        next_steps,
        is_admin: user.role.allows(Role::Admin),
    })
}
