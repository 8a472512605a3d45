//! Sign-in and sign-out. A failed sign-in says the same thing, in the same time, whether the
//! email is unknown, the password wrong or the account deactivated.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Layout, audited, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::device;
use crate::auth::gate::CurrentUser;
use crate::auth::password::Verification;
use crate::auth::session::WebSession;
use crate::auth::throttle::{self, Attempt};
use crate::db;
use crate::db::audit::{self, Action};
use crate::domain::Email;
use crate::error::AppError;

pub const FAILED: &str = "Email or password is incorrect.";

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    layout: Layout,
    email: String,
    email_error: Option<String>,
    error: Option<String>,
}

fn page(state: &AppState, session: &WebSession, email: String) -> LoginPage {
    LoginPage {
        layout: Layout::public("Sign in", "/login", session, state),
        email,
        email_error: None,
        error: None,
    }
}

pub async fn form(
    state: web::Data<AppState>,
    session: WebSession,
    user: Option<CurrentUser>,
) -> Result<HttpResponse, AppError> {
    if user.is_some() {
        return Ok(see_other("/"));
    }
    if !db::users::any_exists(state.db.acquire().await?.conn()).await? {
        return Ok(see_other("/setup"));
    }
    render(StatusCode::OK, &page(&state, &session, String::new()))
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: WebSession,
    client: ClientInfo,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    if let Some(ip) = client.ip {
        state
            .login_ip_limiter
            .check(ip)
            .map_err(|secs| AppError::TooManyRequests { retry_after_secs: secs })?;
    }
    let LoginForm { email: email_input, password } = form.into_inner();
    let email = match Email::parse(&email_input) {
        Ok(email) => email,
        Err(message) => {
            let page = LoginPage { email_error: Some(message.into()), ..page(&state, &session, email_input) };
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };

    let now = state.clock.now();
    let mut conn = state.db.acquire().await?;
    let credentials = db::users::credentials_by_email(conn.conn(), &email).await?;
    // A browser that signed in to this account before is throttled on its own failures only.
    let device = req
        .cookie(device::COOKIE)
        .and_then(|cookie| state.devices.verify(cookie.value(), now))
        .filter(|device| credentials.as_ref().is_some_and(|c| c.id == device.user_id));
    let ip = client.ip_string();
    let attempt = Attempt { ip: ip.as_deref(), device: device.as_ref().map(|d| d.id.as_str()) };
    let failures = db::login_failures::since(conn.conn(), &email, now - chrono::Duration::hours(1)).await?;
    if let Some(wait) = throttle::sign_in_wait(&failures, &attempt, now) {
        let secs = wait.num_seconds().max(1);
        let page = LoginPage {
            error: Some(format!("Too many failed sign-ins for this account. Try again in {secs} seconds.")),
            ..page(&state, &session, email_input)
        };
        let mut response = render(StatusCode::TOO_MANY_REQUESTS, &page)?;
        response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return Ok(response);
    }
    // Hashing takes a while: give the connection back first.
    drop(conn);

    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let verification = state.passwords.verify(SecretString::from(password.clone()), stored).await?;
    let user_agent = client.user_agent.clone();
    let mut entry = audit::Entry {
        organization_id: credentials.as_ref().map(|c| c.organization_id),
        actor_user_id: credentials.as_ref().map(|c| c.id),
        actor_email: Some(email.as_str()),
        ip: ip.clone(),
        user_agent,
        ..audit::Entry::new(Action::SignIn)
    };
    match (credentials, verification) {
        (Some(user), Verification::Valid { needs_rehash }) if user.is_active => {
            let upgraded = match needs_rehash {
                true => Some(state.passwords.hash(SecretString::from(password)).await?),
                false => None,
            };
            let mut tx = state.db.begin().await?;
            if let Some(hash) = upgraded {
                db::users::upgrade_password_hash(tx.conn(), user.id, &hash).await?;
            }
            db::login_failures::clear(tx.conn(), &email, attempt.ip, attempt.device).await?;
            db::users::record_login(tx.conn(), user.id, now).await?;
            audit::record(tx.conn(), entry, now).await?;
            tx.commit().await?;
            session.sign_in(user.id, &client)?;
            let device = device.unwrap_or_else(|| device::new_device(user.id));
            let cookie = Cookie::build(device::COOKIE, state.devices.issue(&device, now))
                .path("/login")
                .http_only(true)
                .secure(state.settings.cookie_secure)
                .same_site(SameSite::Strict)
                .max_age(actix_web::cookie::time::Duration::days(device::LIFETIME.num_days()))
                .finish();
            let mut response = see_other("/");
            response.add_cookie(&cookie).map_err(|e| AppError::Unexpected(e.into()))?;
            Ok(response)
        }
        _ => {
            entry.action = Action::SignInFailed;
            entry.success = false;
            let mut tx = state.db.begin().await?;
            db::login_failures::record(tx.conn(), &email, attempt.ip, attempt.device, now).await?;
            audit::record(tx.conn(), entry, now).await?;
            tx.commit().await?;
            state.metrics.sign_in_failed();
            let page = LoginPage { error: Some(FAILED.into()), ..page(&state, &session, email_input) };
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

pub async fn logout(
    state: web::Data<AppState>,
    session: WebSession,
    user: CurrentUser,
) -> Result<HttpResponse, AppError> {
    audited(state.db.acquire().await?.conn(), &user, Action::SignOut, user.id, None, None, state.clock.now())
        .await?;
    session.sign_out();
    Ok(see_other("/login"))
}
