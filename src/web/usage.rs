//! The usage page: requests over time by outcome, error rate, latency and breakdowns, for a
//! range and optionally one service, read from the roll-ups only, each figure against the
//! period before.

use actix_htmx::Htmx;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Duration, Months, Utc};
use serde::Deserialize;

use super::charts::{self, Series, count, millis};
use super::{Layout, filters, render};
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db::usage::{Breakdown, BreakdownRow, Whose, Window};
use crate::db::{self, PooledConn};
use crate::domain::Role;
use crate::error::AppError;
use crate::ids::ServiceId;
use crate::telemetry::rollup::{Counts, Grain};

/// Rows in each breakdown table.
const BREAKDOWN_ROWS: i64 = 20;

/// The ranges the page offers, as written in its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Range {
    pub const ALL: [Range; 5] = [Range::Day, Range::Week, Range::Month, Range::Quarter, Range::Year];
    const DEFAULT: Range = Range::Month;

    pub fn code(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
            Range::Quarter => "90d",
            Range::Year => "12m",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Range::Day => "24 hours",
            Range::Week => "7 days",
            Range::Month => "30 days",
            Range::Quarter => "90 days",
            Range::Year => "12 months",
        }
    }

    pub fn parse(raw: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.code() == raw)
    }

    /// The periods the range shows, ending with the one `now` is in.
    pub fn window(self, now: DateTime<Utc>) -> Window {
        let (grain, count) = match self {
            Range::Day => (Grain::Hour, 24),
            Range::Week => (Grain::Day, 7),
            Range::Month => (Grain::Day, 30),
            Range::Quarter => (Grain::Day, 90),
            Range::Year => (Grain::Month, 12),
        };
        let to = grain.next(grain.start(now));
        let from = match grain {
            Grain::Hour => to - Duration::hours(count),
            Grain::Day => to - Duration::days(count),
            Grain::Month => to.checked_sub_months(Months::new(count as u32)).unwrap_or(to),
        };
        Window { grain, from, to }
    }
}

/// The window of the same length just before.
pub fn previous(window: Window) -> Window {
    let from = match window.grain {
        Grain::Month => {
            let months = periods(window).len() as u32;
            window.from.checked_sub_months(Months::new(months)).unwrap_or(window.from)
        }
        _ => window.from - (window.to - window.from),
    };
    Window { grain: window.grain, from, to: window.from }
}

/// The period starts of a window.
pub fn periods(window: Window) -> Vec<DateTime<Utc>> {
    let mut starts = Vec::new();
    let mut at = window.from;
    while at < window.to {
        starts.push(at);
        at = window.grain.next(at);
    }
    starts
}

fn period_label(grain: Grain, at: DateTime<Utc>) -> String {
    match grain {
        Grain::Hour => at.format("%H:00").to_string(),
        Grain::Day => at.format("%b %-d").to_string(),
        Grain::Month => at.format("%b %Y").to_string(),
    }
}

#[derive(Deserialize, Default)]
pub struct UsageQuery {
    #[serde(default)]
    range: String,
    #[serde(default)]
    service: String,
}

/// A headline figure with the previous period's.
pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub previous: String,
    /// The change in words, e.g. "up 12%", or empty when there is nothing to compare with.
    pub change: String,
}

/// One row of the table under the charts.
pub struct PointRow {
    pub label: String,
    pub counts: Counts,
}

pub struct BreakdownTable {
    pub title: &'static str,
    /// The first column's heading.
    pub dimension: &'static str,
    pub rows: Vec<BreakdownRow>,
    pub with_service: bool,
}

pub struct RangeLink {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "usage/body.html")]
pub struct UsageBody {
    range: Range,
    ranges: Vec<RangeLink>,
    services: Vec<String>,
    service: String,
    notices: Vec<String>,
    figures: Vec<Figure>,
    requests_chart: String,
    latency_chart: String,
    points: Vec<PointRow>,
    breakdowns: Vec<BreakdownTable>,
}

#[derive(Template)]
#[template(path = "usage/show.html")]
pub struct UsagePage {
    layout: Layout,
    body: String,
}

pub async fn show(
    user: CurrentUser,
    state: web::Data<AppState>,
    htmx: Htmx,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, AppError> {
    let mut notices = Vec::new();
    let range = match query.range.trim() {
        "" => Range::DEFAULT,
        raw => Range::parse(raw).unwrap_or_else(|| {
            notices
                .push(format!("There is no range \"{raw}\"; showing the last {}.", Range::DEFAULT.label()));
            Range::DEFAULT
        }),
    };
    let mut conn = state.db.acquire().await?;
    let catalog = db::services::catalog(conn.conn(), user.organization_id).await?;
    let wanted = query.service.trim();
    let service = match catalog.iter().find(|s| s.name == wanted) {
        Some(found) => Some((found.name.clone(), found.id)),
        None if wanted.is_empty() => None,
        None => {
            notices.push(format!("There is no service \"{wanted}\"; showing all services."));
            None
        }
    };
    let body = body(
        &mut conn,
        &user,
        state.clock.now(),
        range,
        service,
        catalog.into_iter().map(|s| s.name).collect(),
        notices,
    )
    .await?;
    let body = body.render().map_err(|e| AppError::Unexpected(e.into()))?;
    // htmx swaps the body alone; without JavaScript, and when htmx restores a page from
    // history, the whole page comes back.
    let mut response = if htmx.is_htmx && !htmx.boosted && !htmx.history_restore_request {
        HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body)
    } else {
        render(
            StatusCode::OK,
            &UsagePage { layout: Layout::signed_in("Usage", "/usage", &user, &state), body },
        )?
    };
    response.headers_mut().insert(header::VARY, header::HeaderValue::from_static("HX-Request"));
    Ok(response)
}

async fn body(
    conn: &mut PooledConn,
    user: &CurrentUser,
    now: DateTime<Utc>,
    range: Range,
    service: Option<(String, ServiceId)>,
    services: Vec<String>,
    notices: Vec<String>,
) -> Result<UsageBody, AppError> {
    let organization_id = user.organization_id;
    let window = range.window(now);
    let service_id = service.as_ref().map(|(_, id)| *id);
    let whose = Whose::Organization;
    let series = db::usage::series(conn.conn(), organization_id, window, service_id, whose).await?;
    let before = db::usage::series(conn.conn(), organization_id, previous(window), service_id, whose).await?;

    let starts = periods(window);
    let mut points: Vec<PointRow> = starts
        .iter()
        .map(|&at| PointRow { label: period_label(window.grain, at), counts: Counts::default() })
        .collect();
    for (at, counts) in &series {
        if let Some(i) = starts.iter().position(|s| s == at) {
            points[i].counts = *counts;
        }
    }
    let total = Counts::total(series.iter().map(|(_, c)| c));
    let earlier = Counts::total(before.iter().map(|(_, c)| c));

    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let values = |f: fn(&Counts) -> i64| points.iter().map(|p| f(&p.counts) as f64).collect::<Vec<_>>();
    let titles = points
        .iter()
        .map(|p| {
            format!(
                "{}: {} requests, {} successes, {} tool errors, {} failures",
                p.label,
                count(p.counts.requests),
                count(p.counts.successes()),
                count(p.counts.tool_errors),
                count(p.counts.failures)
            )
        })
        .collect();
    let requests_chart = charts::stacked_bars(
        &format!("Requests per {}, by outcome", grain_name(window.grain)),
        &labels,
        &[
            Series { name: "Successes", class: "success", values: values(|c| c.successes()) },
            Series { name: "Tool errors", class: "tool-error", values: values(|c| c.tool_errors) },
            Series { name: "Failures", class: "failure", values: values(|c| c.failures) },
        ],
        titles,
    );
    let latency_chart = charts::lines(
        "Latency, p50 and p95",
        &labels,
        vec![
            ("p50", "p50", points.iter().map(|p| p.counts.percentile(0.5)).collect()),
            ("p95", "p95", points.iter().map(|p| p.counts.percentile(0.95)).collect()),
        ],
        &|v| millis(v),
    );

    let mut breakdowns = vec![
        table(conn, user, window, service_id, Breakdown::Service).await?,
        table(conn, user, window, service_id, Breakdown::Tool).await?,
    ];
    if user.role.allows(Role::Developer) {
        breakdowns.push(table(conn, user, window, service_id, Breakdown::Key).await?);
    }
    if user.role.allows(Role::Admin) {
        breakdowns.push(table(conn, user, window, service_id, Breakdown::Member).await?);
    }

    let service_name = service.map(|(name, _)| name).unwrap_or_default();
    let ranges = Range::ALL
        .into_iter()
        .map(|r| RangeLink { label: r.label(), href: usage_href(r, &service_name), current: r == range })
        .collect();
    Ok(UsageBody {
        range,
        ranges,
        services,
        service: service_name,
        notices,
        figures: figures(&total, &earlier),
        requests_chart: requests_chart.render().map_err(|e| AppError::Unexpected(e.into()))?,
        latency_chart: latency_chart.render().map_err(|e| AppError::Unexpected(e.into()))?,
        points,
        breakdowns,
    })
}

async fn table(
    conn: &mut PooledConn,
    user: &CurrentUser,
    window: Window,
    service: Option<ServiceId>,
    by: Breakdown,
) -> Result<BreakdownTable, AppError> {
    // Developers see their own keys; admins every key, and members.
    let whose = match by {
        Breakdown::Key if !user.role.allows(Role::Admin) => Whose::Member(user.id),
        _ => Whose::Organization,
    };
    let mut rows =
        db::usage::breakdown(conn.conn(), user.organization_id, window, service, whose, by, BREAKDOWN_ROWS)
            .await?;
    for row in &mut rows {
        if row.label.is_empty() {
            row.label = match by {
                Breakdown::Tool => "(other methods)",
                _ => "(none)",
            }
            .to_owned();
        }
    }
    let (title, dimension) = match by {
        Breakdown::Service => ("By service", "Service"),
        Breakdown::Tool => ("By tool", "Tool"),
        Breakdown::Key if !user.role.allows(Role::Admin) => ("By your API keys", "API key"),
        Breakdown::Key => ("By API key", "API key"),
        Breakdown::Member => ("By member", "Member"),
    };
    Ok(BreakdownTable { title, dimension, rows, with_service: by == Breakdown::Tool })
}

fn grain_name(grain: Grain) -> &'static str {
    match grain {
        Grain::Hour => "hour",
        Grain::Day => "day",
        Grain::Month => "month",
    }
}

pub fn usage_href(range: Range, service: &str) -> String {
    let mut pairs = vec![("range", range.code())];
    if !service.is_empty() {
        pairs.push(("service", service));
    }
    format!("/usage?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

pub fn figures(now: &Counts, before: &Counts) -> Vec<Figure> {
    let percent = |rate: Option<f64>| rate.map_or("–".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let latency = |ms: Option<f64>| ms.map_or("–".to_owned(), millis);
    vec![
        Figure {
            name: "Requests",
            value: count(now.requests),
            previous: count(before.requests),
            change: change(Some(now.requests as f64), Some(before.requests as f64), "%"),
        },
        Figure {
            name: "Error rate",
            value: percent(now.error_rate()),
            previous: percent(before.error_rate()),
            change: change(
                now.error_rate().map(|r| r * 100.0),
                before.error_rate().map(|r| r * 100.0),
                " points",
            ),
        },
        Figure {
            name: "Latency p50",
            value: latency(now.percentile(0.5)),
            previous: latency(before.percentile(0.5)),
            change: change(now.percentile(0.5), before.percentile(0.5), "%"),
        },
        Figure {
            name: "Latency p95",
            value: latency(now.percentile(0.95)),
            previous: latency(before.percentile(0.95)),
            change: change(now.percentile(0.95), before.percentile(0.95), "%"),
        },
    ]
}

/// How a figure moved: relative ("%") or in percentage points (" points").
fn change(now: Option<f64>, before: Option<f64>, unit: &str) -> String {
    let (Some(now), Some(before)) = (now, before) else { return String::new() };
    let delta = if unit == "%" {
        if before == 0.0 {
            return if now == 0.0 { "no change".to_owned() } else { "new".to_owned() };
        }
        (now - before) / before * 100.0
    } else {
        now - before
    };
    match delta {
        d if d.abs() < 0.05 => "no change".to_owned(),
        d if d > 0.0 => format!("up {d:.1}{unit}"),
        d => format!("down {:.1}{unit}", -d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 30, 0).unwrap()
    }

    #[test]
    fn each_range_ends_with_the_period_now_is_in_and_its_previous_period_touches_it() {
        let now = at(2026, 3, 1, 10);
        for range in Range::ALL {
            let window = range.window(now);
            assert!(window.from < now && now < window.to, "{range:?}");
            let before = previous(window);
            assert_eq!(before.to, window.from);
            assert_eq!(periods(before).len(), periods(window).len(), "{range:?}");
        }
        assert_eq!(periods(Range::Day.window(now)).len(), 24);
        assert_eq!(periods(Range::Quarter.window(now)).len(), 90);
        let year = Range::Year.window(now);
        assert_eq!(periods(year).len(), 12);
        assert_eq!(year.from, Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap());
        assert_eq!(previous(year).from, Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn changes_read_in_words() {
        assert_eq!(change(Some(112.0), Some(100.0), "%"), "up 12.0%");
        assert_eq!(change(Some(50.0), Some(100.0), "%"), "down 50.0%");
        assert_eq!(change(Some(5.0), Some(0.0), "%"), "new");
        assert_eq!(change(Some(0.0), Some(0.0), "%"), "no change");
        assert_eq!(change(Some(3.5), Some(1.0), " points"), "up 2.5 points");
        assert_eq!(change(None, Some(1.0), "%"), "");
    }

    #[test]
    fn links_keep_the_service() {
        assert_eq!(usage_href(Range::Week, ""), "/usage?range=7d");
        assert_eq!(usage_href(Range::Year, "git hub&x"), "/usage?range=12m&service=git+hub%26x");
    }
}
