//! Account recovery without email: an admin issues a member a single-use link, valid for 24
//! hours and shown once (like an invitation), with which they choose a new password; the
//! operator can issue one for anyone from the command line (`admin reset-password`). Setting
//! the password ends every session of the member and signs the link's holder in; their API
//! keys stay. Only the link token's SHA-256 is stored, and each new link voids the earlier.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::members::refuse_on_row;
use super::{Layout, PasswordTwice, audited, parse_id, public_base, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::db::audit::Action;
use crate::db::password_resets::{NewPasswordReset, PasswordReset};
use crate::db::{self, Conn, audit};
use crate::error::AppError;
use crate::ids::{OrgId, UserId};

pub const RESET_HOURS: i64 = 24;

/// A link just stored, the one time its URL is known.
pub struct IssuedLink {
    pub id: Uuid,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new link for the member, its URL on `base`.
pub async fn issue_link(
    conn: Conn<'_>,
    organization_id: OrgId,
    member: UserId,
    issued_by: Option<UserId>,
    base: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<IssuedLink> {
    let token = crate::crypto::random_token();
    let hash = crate::crypto::link_token_hash(&token);
    let (id, expires_at) = (Uuid::now_v7(), now + Duration::hours(RESET_HOURS));
    let reset =
        NewPasswordReset { id, organization_id, user_id: member, token_hash: &hash, issued_by, expires_at };
    db::password_resets::issue(conn, reset, now).await?;
    Ok(IssuedLink { id, url: format!("{base}/password-reset/{token}"), expires_at })
}

#[derive(Template)]
#[template(path = "members/reset_issued.html")]
pub struct IssuedPage {
    layout: Layout,
    email: String,
    url: String,
    hours: i64,
}

/// An admin's link for a member of their organization (404 for anyone else's).
pub async fn issue(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let member =
        db::users::find_member(tx.conn(), user.organization_id, id).await?.ok_or(AppError::NotFound)?;
    if !member.is_active {
        drop(tx);
        return refuse_on_row(&state, &user, id, "Reactivate this member before resetting their password.")
            .await;
    }
    let base = public_base(&state, &req);
    let link = issue_link(tx.conn(), user.organization_id, id, Some(user.id), &base, now).await?;
    let after = json!({ "email": member.email, "reset": link.id, "expires_at": link.expires_at });
    audited(tx.conn(), &user, Action::PasswordResetIssued, id, None, Some(after), now).await?;
    tx.commit().await?;
    let page = IssuedPage {
        layout: Layout::signed_in("Password-reset link", "/members", &user, &state),
        email: member.email,
        url: link.url,
        hours: RESET_HOURS,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "password_reset/form.html")]
pub struct ResetPage {
    layout: Layout,
    token: String,
    email: String,
    password_error: Option<String>,
    confirm_error: Option<String>,
}

#[derive(Template)]
#[template(path = "password_reset/gone.html")]
pub struct GonePage {
    layout: Layout,
}

/// The link behind a token: `Some` when it can still be used, `None` when it was used, voided
/// or has expired (or its member was deactivated), 404 when there is no such link.
async fn lookup(state: &AppState, token: &str) -> Result<Option<PasswordReset>, AppError> {
    let hash = crate::crypto::link_token_hash(token);
    let found = db::password_resets::find_by_token_hash(state.db.acquire().await?.conn(), &hash).await?;
    let reset = found.ok_or(AppError::NotFound)?;
    Ok(reset.usable(state.clock.now()).then_some(reset))
}

fn gone(state: &AppState, session: &WebSession, status: StatusCode) -> Result<HttpResponse, AppError> {
    render(
        status,
        &GonePage { layout: Layout::public("Link no longer valid", "/password-reset", session, state) },
    )
}

fn reset_page(state: &AppState, session: &WebSession, token: &str, reset: &PasswordReset) -> ResetPage {
    ResetPage {
        layout: Layout::public("Choose a new password", "/password-reset", session, state),
        token: token.to_owned(),
        email: reset.email.clone(),
        password_error: None,
        confirm_error: None,
    }
}

pub async fn form(
    state: web::Data<AppState>,
    session: WebSession,
    token: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    match lookup(&state, &token).await? {
        Some(reset) => render(StatusCode::OK, &reset_page(&state, &session, &token, &reset)),
        None => gone(&state, &session, StatusCode::GONE),
    }
}

pub async fn submit(
    state: web::Data<AppState>,
    session: WebSession,
    client: ClientInfo,
    token: web::Path<String>,
    form: web::Form<PasswordTwice>,
) -> Result<HttpResponse, AppError> {
    let Some(reset) = lookup(&state, &token).await? else {
        return gone(&state, &session, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let mut page = reset_page(&state, &session, &token, &reset);
    let password = match form.check() {
        Ok(password) => password,
        Err((password_error, confirm_error)) => {
            (page.password_error, page.confirm_error) = (password_error, confirm_error);
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let hash = state.passwords.hash(password.into_secret()).await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    // Used or voided since the page was shown: nothing changes.
    if !db::password_resets::use_up(tx.conn(), reset.id, now).await? {
        drop(tx);
        return gone(&state, &session, StatusCode::UNPROCESSABLE_ENTITY);
    }
    db::users::set_password_hash(tx.conn(), reset.user_id, &hash, now).await?;
    let ended = db::sessions::delete_all_for_user(tx.conn(), reset.user_id).await?;
    let entry = audit::Entry {
        organization_id: Some(reset.organization_id),
        actor_user_id: Some(reset.user_id),
        actor_email: Some(&reset.email),
        target_id: Some(reset.user_id.to_string()),
        after: Some(json!({ "reset": reset.id, "sessions_ended": ended })),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        ..audit::Entry::new(Action::PasswordReset)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    session.sign_in(reset.user_id, &client)?;
    session.put_notice("Your new password is set; every other session of yours was signed out.")?;
    Ok(see_other("/"))
}
