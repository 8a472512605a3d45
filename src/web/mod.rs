//! Dashboard handlers, one module per area, and what their pages share.

pub mod account;
pub mod assets;
pub mod audit_trail;
pub mod charts;
pub mod confirm;
pub mod connect;
pub mod health;
pub mod home;
pub mod invitations;
pub mod keys;
pub mod login;
pub mod logs;
pub mod members;
pub mod organization;
pub mod password_reset;
pub mod services;
pub mod setup;
pub mod tokens;
pub mod usage;
pub mod user_agent;

use actix_web::HttpResponse;
use actix_web::http::{StatusCode, header};
use askama::Template;
use chrono::{DateTime, Utc};

use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::db::Conn;
use crate::db::audit::{self, Action};
use crate::domain::Role;
use crate::error::AppError;
use crate::ids::{Id, OrgId, UserId};
use crate::routes::{NavLink, nav_for};

/// What the base layout needs: the page title, the CSRF token for forms and htmx, and for
/// signed-in users their organization, email and the navigation their role may use.
pub struct Layout {
    /// Names the page: a fixed name, or one of the thing it shows.
    pub title: std::borrow::Cow<'static, str>,
    pub path: &'static str,
    pub csrf_token: String,
    pub user: Option<CurrentUser>,
    pub nav: Vec<NavLink>,
}

impl Layout {
    pub fn signed_in(
        title: impl Into<std::borrow::Cow<'static, str>>,
        path: &'static str,
        user: &CurrentUser,
        state: &AppState,
    ) -> Layout {
        Layout {
            title: title.into(),
            path,
            csrf_token: state.csrf.token(user.session_id),
            user: Some(user.clone()),
            nav: nav_for(user.role),
        }
    }

    pub fn public(title: &'static str, path: &'static str, session: &WebSession, state: &AppState) -> Layout {
        Layout {
            title: title.into(),
            path,
            csrf_token: state.csrf.token(session.id()),
            user: None,
            nav: Vec::new(),
        }
    }
}

/// Renders a page with a status other than 200, e.g. a form sent back with its errors.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Result<HttpResponse, AppError> {
    let html = page.render().map_err(|e| AppError::Unexpected(e.into()))?;
    Ok(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(html))
}

/// A new password typed twice, as the invitation and password-reset forms ask for it.
#[derive(serde::Deserialize)]
pub struct PasswordTwice {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

impl PasswordTwice {
    /// The password, or the messages for its field and for the repeated one.
    pub fn check(&self) -> Result<crate::domain::NewPassword, (Option<String>, Option<String>)> {
        let password = crate::domain::NewPassword::parse(&self.password).map_err(|e| (Some(e), None))?;
        if self.password != self.password_confirm {
            return Err((None, Some("The passwords do not match.".into())));
        }
        Ok(password)
    }
}

/// The origin users reach the platform at (`WebSettings::public_base`).
pub fn public_base(state: &AppState, req: &actix_web::HttpRequest) -> String {
    state.settings.public_base(req)
}

/// Filters the templates share.
pub mod filters {
    use chrono::{DateTime, Utc};

    /// A moment as every page writes it: `2026-11-29 21:05 UTC`, in a `<time>` that the page's
    /// script shows relative to now ("3 hours ago"), the exact local time on hover.
    #[askama::filter_fn]
    pub fn when(
        moment: &DateTime<Utc>,
        _: &dyn askama::Values,
    ) -> askama::Result<askama::filters::Safe<String>> {
        let machine = moment.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(askama::filters::Safe(format!(
            "<time datetime=\"{machine}\">{}</time>",
            moment.format("%Y-%m-%d %H:%M UTC")
        )))
    }

    /// A user agent as a person knows it: `Firefox on Linux`.
    #[askama::filter_fn]
    pub fn browser(user_agent: &str, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::user_agent::in_words(user_agent))
    }

    /// A moment to the millisecond: `2026-11-29 21:05:07.123`.
    #[askama::filter_fn]
    pub fn when_precise(moment: &DateTime<Utc>, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(moment.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
    }

    /// A count with thousands separated.
    #[askama::filter_fn]
    pub fn count(n: impl std::borrow::Borrow<i64>, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::charts::count(*n.borrow()))
    }

    /// A share as a percentage with one decimal, or a dash when there is none.
    #[askama::filter_fn]
    pub fn percent(
        share: impl std::borrow::Borrow<Option<f64>>,
        _: &dyn askama::Values,
    ) -> askama::Result<String> {
        Ok(share.borrow().map_or("–".to_owned(), |s| format!("{:.1}%", s * 100.0)))
    }

    /// A duration in ms, or a dash when there is none.
    #[askama::filter_fn]
    pub fn latency(
        ms: impl std::borrow::Borrow<Option<f64>>,
        _: &dyn askama::Values,
    ) -> askama::Result<String> {
        Ok(ms.borrow().map_or("–".to_owned(), super::charts::millis))
    }
}

/// What is wrong with a submitted form, by field name, to show at each field; none means the
/// form is valid. The first message for a field is the one kept.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    /// The form's only error.
    pub fn one(field: &'static str, message: impl Into<String>) -> FieldErrors {
        let mut errors = FieldErrors::default();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        if !self.has(field) {
            self.0.push((field, message.into()));
        }
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(name, _)| *name == field).map(|(_, message)| message.as_str())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each field with its error, in the order they were found.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(field, message)| (*field, message.as_str()))
    }
}

/// An id from a URL; anything that is not one names nothing here.
pub fn parse_id<T: Id>(raw: &str) -> Result<T, AppError> {
    uuid::Uuid::parse_str(raw).map(T::from_uuid).map_err(|_| AppError::NotFound)
}

/// The answer to a successful form post: go to `to` (Post/Redirect/Get).
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

/// Whoever does what the audit trail records: a signed-in member, or the owner of the API key a
/// request of the JSON API presents.
pub trait Actor {
    fn organization_id(&self) -> OrgId;
    fn user_id(&self) -> UserId;
    fn email(&self) -> &str;
    fn client(&self) -> &ClientInfo;
    fn role(&self) -> Role;
}

impl Actor for CurrentUser {
    fn organization_id(&self) -> OrgId {
        self.organization_id
    }

    fn user_id(&self) -> UserId {
        self.id
    }

    fn email(&self) -> &str {
        &self.email
    }

    fn client(&self) -> &ClientInfo {
        &self.client
    }

    fn role(&self) -> Role {
        self.role
    }
}

/// Records that `user` did `action` to `target`, with the thing as it was and as it is (secrets
/// are removed on the way); `conn` is the transaction of the change itself.
pub async fn audited(
    conn: Conn<'_>,
    user: &impl Actor,
    action: Action,
    target: impl std::fmt::Display,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let entry = audit::Entry {
        organization_id: Some(user.organization_id()),
        actor_user_id: Some(user.user_id()),
        actor_email: Some(user.email()),
        target_id: Some(target.to_string()),
        before,
        after,
        ip: user.client().ip_string(),
        user_agent: user.client().user_agent.clone(),
        ..audit::Entry::new(action)
    };
    audit::record(conn, entry, now).await
}
