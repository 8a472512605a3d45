//! First run: create the first organization and its admin. Gone (404) once anyone exists.

use crate::ids::{OrgId, UserId};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::{FieldErrors, Layout, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::session::WebSession;
use crate::db;
use crate::db::audit::{self, Action};
use crate::domain::{Email, NewPassword, OrganizationName, Role};
use crate::error::AppError;

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    organization: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

#[derive(Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    layout: Layout,
    organization: String,
    email: String,
    errors: FieldErrors,
}

async fn ensure_first_run(state: &AppState) -> Result<(), AppError> {
    if db::users::any_exists(state.db.acquire().await?.conn()).await? {
        return Err(AppError::NotFound);
    }
    Ok(())
}

pub async fn form(state: web::Data<AppState>, session: WebSession) -> Result<HttpResponse, AppError> {
    ensure_first_run(&state).await?;
    let page = SetupPage {
        layout: Layout::public("Set up", "/setup", &session, &state),
        organization: String::new(),
        email: String::new(),
        errors: FieldErrors::default(),
    };
    render(StatusCode::OK, &page)
}

pub async fn submit(
    state: web::Data<AppState>,
    session: WebSession,
    client: ClientInfo,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, AppError> {
    ensure_first_run(&state).await?;
    let form = form.into_inner();
    let mut errors = FieldErrors::default();
    let name = OrganizationName::parse(&form.organization).map_err(|e| errors.add("organization", e)).ok();
    let email = Email::parse(&form.email).map_err(|e| errors.add("email", e)).ok();
    let password = NewPassword::parse(&form.password).map_err(|e| errors.add("password", e)).ok();
    if password.is_some() && form.password != form.password_confirm {
        errors.add("password_confirm", "The passwords do not match.");
    }
    let (Some(name), Some(email), Some(password), false) = (name, email, password, !errors.is_empty()) else {
        let page = SetupPage {
            layout: Layout::public("Set up", "/setup", &session, &state),
            organization: form.organization,
            email: form.email,
            errors,
        };
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };

    let hash = state.passwords.hash(password.into_secret()).await?;
    let now = state.clock.now();
    let organization_id = OrgId::new();
    let user_id = UserId::new();
    let mut tx = state.db.begin().await?;
    // Two setups racing: the second finds the installation claimed and gets a 404.
    if !db::organizations::claim_installation(tx.conn(), now).await?
        || db::users::any_exists(tx.conn()).await?
    {
        return Err(AppError::NotFound);
    }
    db::organizations::insert(tx.conn(), organization_id, name.as_str(), &name.slug(), email.as_str(), now)
        .await?;
    let user = db::users::NewUser {
        id: user_id,
        organization_id,
        email: &email,
        password_hash: &hash,
        role: Role::Admin,
    };
    db::users::insert(tx.conn(), user, now).await?;
    db::users::record_login(tx.conn(), user_id, now).await?;
    let entry = audit::Entry {
        organization_id: Some(organization_id),
        actor_user_id: Some(user_id),
        actor_email: Some(email.as_str()),
        target_id: Some(organization_id.to_string()),
        after: Some(json!({ "name": name.as_str(), "admin": email.as_str() })),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        ..audit::Entry::new(Action::OrganizationCreated)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    tracing::info!(organization = %organization_id, "first organization and admin created");

    session.sign_in(user_id, &client)?;
    Ok(see_other("/"))
}
