//! Accepting an invitation: the link's holder chooses a password and joins the organization.
//! Links are single-use and expire; only their SHA-256 is stored.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Layout, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::session::WebSession;
use crate::db::{self, audit, invitations::Invitation};
use crate::domain::{Email, NewPassword};
use crate::error::AppError;

#[derive(Template)]
#[template(path = "invitations/accept.html")]
pub struct AcceptPage {
    layout: Layout,
    token: String,
    organization: String,
    email: String,
    role: String,
    password_error: Option<String>,
    confirm_error: Option<String>,
    form_error: Option<String>,
}

#[derive(Template)]
#[template(path = "invitations/gone.html")]
pub struct GonePage {
    layout: Layout,
}

/// The invitation behind a link, or the page to answer with when there is none to use.
async fn lookup(
    state: &AppState,
    session: &WebSession,
    token: &str,
) -> Result<Result<Invitation, HttpResponse>, AppError> {
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let found = db::invitations::find_by_token_hash(state.db.acquire().await?.conn(), &hash).await?;
    match found {
        None => Err(AppError::NotFound),
        Some(invitation) if invitation.usable(state.clock.now()) => Ok(Ok(invitation)),
        Some(_) => {
            let page = GonePage {
                layout: Layout::public("Invitation no longer valid", "/invitations", session, state),
            };
            Ok(Err(render(StatusCode::GONE, &page)?))
        }
    }
}

fn accept_page(state: &AppState, session: &WebSession, token: &str, invitation: &Invitation) -> AcceptPage {
    AcceptPage {
        layout: Layout::public("Join", "/invitations", session, state),
        token: token.to_owned(),
        organization: invitation.organization_name.clone(),
        email: invitation.email.clone(),
        role: invitation.role.to_string(),
        password_error: None,
        confirm_error: None,
        form_error: None,
    }
}

pub async fn form(
    state: web::Data<AppState>,
    session: WebSession,
    token: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    match lookup(&state, &session, &token).await? {
        Ok(invitation) => render(StatusCode::OK, &accept_page(&state, &session, &token, &invitation)),
        Err(gone) => Ok(gone),
    }
}

#[derive(Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

pub async fn accept(
    state: web::Data<AppState>,
    session: WebSession,
    client: ClientInfo,
    token: web::Path<String>,
    form: web::Form<AcceptForm>,
) -> Result<HttpResponse, AppError> {
    let invitation = match lookup(&state, &session, &token).await? {
        Ok(invitation) => invitation,
        Err(gone) => return Ok(gone),
    };
    let mut page = accept_page(&state, &session, &token, &invitation);
    let password = NewPassword::parse(&form.password).map_err(|e| page.password_error = Some(e)).ok();
    if password.is_some() && form.password != form.password_confirm {
        page.confirm_error = Some("The passwords do not match.".into());
    }
    let (Some(password), None) = (password, &page.confirm_error) else {
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let email =
        Email::parse(&invitation.email).map_err(|e| anyhow::anyhow!("stored invitation email: {e}"))?;
    let hash = state.passwords.hash(password.into_secret()).await?;
    let now = state.clock.now();
    let user_id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    if db::users::email_exists(tx.conn(), email.as_str()).await? {
        drop(tx);
        page.form_error = Some(format!("{email} already has an account: sign in instead."));
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    // Used, revoked or expired since the page was shown: nothing is created.
    if !db::invitations::accept(tx.conn(), invitation.id, now).await? {
        drop(tx);
        let gone = GonePage {
            layout: Layout::public("Invitation no longer valid", "/invitations", &session, &state),
        };
        return render(StatusCode::GONE, &gone);
    }
    let user = db::users::NewUser {
        id: user_id,
        organization_id: invitation.organization_id,
        email: &email,
        password_hash: &hash,
        role: invitation.role,
    };
    db::users::insert(tx.conn(), user, now).await?;
    let entry = audit::Entry {
        organization_id: Some(invitation.organization_id),
        actor_user_id: Some(user_id),
        actor_email: Some(email.as_str()),
        target_type: Some("invitation"),
        target_id: Some(invitation.id.to_string()),
        after: Some(json!({ "email": email.as_str(), "role": invitation.role.as_str() })),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        ..audit::Entry::new("invitation.accepted")
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    session.sign_in(user_id, &client)?;
    Ok(see_other("/"))
}
