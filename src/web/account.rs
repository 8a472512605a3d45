//! The user's own account: password change and the list of their sessions.

use actix_htmx::Htmx;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::filters;
use super::{FieldErrors, Layout, audited, parse_id, render, see_other};
use crate::app::AppState;

use crate::auth::gate::CurrentUser;
use crate::auth::password::Verification;
use crate::auth::session::WebSession;
use crate::db;
use crate::db::audit::Action;
use crate::domain::NewPassword;
use crate::error::AppError;

/// The sessions table, also sent alone as an htmx swap.
#[derive(Template)]
#[template(path = "account/sessions.html")]
pub struct SessionsTable {
    sessions: Vec<db::sessions::SessionInfo>,
    current: Uuid,
    /// For the plain forms, which work without JavaScript too.
    csrf_token: String,
}

#[derive(Template)]
#[template(path = "account/show.html")]
pub struct AccountPage {
    layout: Layout,
    sessions: SessionsTable,
    errors: FieldErrors,
    notice: Option<&'static str>,
}

async fn sessions_table(state: &AppState, user: &CurrentUser) -> Result<SessionsTable, AppError> {
    let now = state.clock.now();
    let sessions = db::sessions::list_for_user(state.db.acquire().await?.conn(), user.id, now).await?;
    Ok(SessionsTable { sessions, current: user.session_id, csrf_token: state.csrf.token(user.session_id) })
}

async fn account_page(
    state: &AppState,
    user: &CurrentUser,
    errors: FieldErrors,
    notice: Option<&'static str>,
) -> Result<AccountPage, AppError> {
    Ok(AccountPage {
        layout: Layout::signed_in("Account", "/account", user, state),
        sessions: sessions_table(state, user).await?,
        errors,
        notice,
    })
}

pub async fn show(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    render(StatusCode::OK, &account_page(&state, &user, FieldErrors::default(), None).await?)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirm: String,
}

/// Changes the password and ends every other session of the user, in one transaction.
pub async fn change_password(
    user: CurrentUser,
    state: web::Data<AppState>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let mut errors = FieldErrors::default();
    let stored = db::users::password_hash(state.db.acquire().await?.conn(), user.id).await?;
    let verified = state.passwords.verify(SecretString::from(form.current_password), stored).await?;
    if matches!(verified, Verification::Invalid) {
        errors.add("current", "This is not your current password.");
    }
    let new = NewPassword::parse(&form.new_password).map_err(|e| errors.add("new", e)).ok();
    if new.is_some() && form.new_password != form.new_password_confirm {
        errors.add("confirm", "The passwords do not match.");
    }
    let (Some(new), true) = (new, errors.is_empty()) else {
        let page = account_page(&state, &user, errors, None).await?;
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };

    let hash = state.passwords.hash(new.into_secret()).await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    db::users::set_password_hash(tx.conn(), user.id, &hash, now).await?;
    let ended = db::sessions::delete_others_for_user(tx.conn(), user.id, user.session_id).await?;
    audited(
        tx.conn(),
        &user,
        Action::PasswordChanged,
        user.id,
        None,
        Some(json!({ "other_sessions_ended": ended })),
        now,
    )
    .await?;
    tx.commit().await?;
    let page = account_page(
        &state,
        &user,
        FieldErrors::default(),
        Some("Password changed. Your other sessions have been signed out."),
    )
    .await?;
    render(StatusCode::OK, &page)
}

/// Ends one of the user's sessions. Ending the current one signs out.
pub async fn end_session(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    htmx: Htmx,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let mut tx = state.db.begin().await?;
    if !db::sessions::delete_for_user(tx.conn(), user.id, id).await? {
        return Err(AppError::NotFound);
    }
    audited(tx.conn(), &user, Action::SessionEnded, id, None, None, state.clock.now()).await?;
    tx.commit().await?;
    if id == user.session_id {
        session.sign_out();
        if htmx.is_htmx {
            htmx.redirect("/login");
            return Ok(HttpResponse::Ok().finish());
        }
        return Ok(see_other("/login"));
    }
    if htmx.is_htmx {
        return render(StatusCode::OK, &sessions_table(&state, &user).await?);
    }
    session.put_notice("That session was ended: its browser is signed out.")?;
    Ok(see_other("/account"))
}
