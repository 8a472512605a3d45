//! Sign-in and sign-out. A failed sign-in says the same thing, in the same time, whether the
//! email is unknown, the password wrong or the account deactivated.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Layout, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::gate::CurrentUser;
use crate::auth::password::Verification;
use crate::auth::session::WebSession;
use crate::auth::throttle;
use crate::db;
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
    let failures = db::login_failures::since(conn.conn(), &email, now - chrono::Duration::hours(1)).await?;
    if let Some(wait) = throttle::account_wait(&failures, now) {
        let secs = wait.num_seconds().max(1);
        let page = LoginPage {
            error: Some(format!("Too many failed sign-ins for this account. Try again in {secs} seconds.")),
            ..page(&state, &session, email_input)
        };
        let mut response = render(StatusCode::TOO_MANY_REQUESTS, &page)?;
        response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return Ok(response);
    }
    let credentials = db::users::credentials_by_email(conn.conn(), &email).await?;
    // Hashing takes a while: give the connection back first.
    drop(conn);

    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let verification = state.passwords.verify(SecretString::from(password.clone()), stored).await?;
    let mut conn = state.db.acquire().await?;
    match (credentials, verification) {
        (Some(user), Verification::Valid { needs_rehash }) if user.is_active => {
            if needs_rehash {
                let hash = state.passwords.hash(SecretString::from(password)).await?;
                db::users::upgrade_password_hash(conn.conn(), user.id, &hash).await?;
            }
            db::login_failures::clear(conn.conn(), &email).await?;
            db::users::record_login(conn.conn(), user.id, now).await?;
            session.sign_in(user.id, &client)?;
            Ok(see_other("/"))
        }
        _ => {
            let ip = client.ip_string();
            db::login_failures::record(conn.conn(), &email, ip.as_deref(), now).await?;
            let page = LoginPage { error: Some(FAILED.into()), ..page(&state, &session, email_input) };
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

pub async fn logout(session: WebSession) -> HttpResponse {
    session.sign_out();
    see_other("/login")
}
