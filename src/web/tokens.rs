//! Personal service tokens (e.g. a GitHub token), write-only: after saving, only the service
//! name, the last characters and the dates are ever shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::confirm::{self, Confirm};
use super::filters;
use super::{Actor, FieldErrors, Layout, audited, render, see_other};
use crate::app::AppState;

use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::crypto::keyring::{Binding, visible_tail};
use crate::db::audit::Action;
use crate::db::{self, user_tokens::TokenRow};
use crate::domain::ServiceName;
use crate::error::AppError;
use crate::gateway::cache::Change;

const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Deserialize, Default)]
pub struct TokenForm {
    #[serde(default)]
    service_name: String,
    #[serde(default)]
    token: String,
}

#[derive(Template)]
#[template(path = "tokens/list.html")]
pub struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    /// The token names the organization's services use, each with those services and whether
    /// the user has set it.
    needed: Vec<(String, Vec<String>, bool)>,
    service_name: String,
    errors: FieldErrors,
    notice: Option<String>,
}

async fn tokens_page(
    state: &AppState,
    user: &CurrentUser,
    service_name: String,
    errors: FieldErrors,
    notice: Option<String>,
) -> Result<TokensPage, AppError> {
    let mut conn = state.db.acquire().await?;
    let tokens = db::user_tokens::list_for_user(conn.conn(), user.organization_id, user.id).await?;
    let mut needed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for service in db::services::catalog(conn.conn(), user.organization_id).await? {
        if let Some(token) = service.token_service_name {
            needed.entry(token).or_default().push(service.name);
        }
    }
    let needed = needed
        .into_iter()
        .map(|(token, services)| {
            let set = tokens.iter().any(|t| t.service_name == token);
            (token, services, set)
        })
        .collect();
    Ok(TokensPage {
        layout: Layout::signed_in("Service tokens", "/tokens", user, state),
        tokens,
        needed,
        service_name,
        errors,
        notice,
    })
}

pub async fn list(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    render(StatusCode::OK, &tokens_page(&state, &user, String::new(), FieldErrors::default(), None).await?)
}

/// Sets or replaces the user's token for a service.
pub async fn save(
    user: CurrentUser,
    state: web::Data<AppState>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, AppError> {
    let TokenForm { service_name, token } = form.into_inner();
    let mut errors = FieldErrors::default();
    let name = ServiceName::parse(&service_name).map_err(|e| errors.add("service_name", e)).ok();
    let token = token.trim();
    if let Err(e) = check_token(token) {
        errors.add("token", e);
    }
    let (Some(name), true) = (name, errors.is_empty()) else {
        // The token itself is never sent back.
        let page = tokens_page(&state, &user, service_name, errors, None).await?;
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    store(&state, &user, &name, token).await?;
    let notice = format!("Your {name} token is saved.");
    render(
        StatusCode::OK,
        &tokens_page(&state, &user, String::new(), FieldErrors::default(), Some(notice)).await?,
    )
}

/// What is wrong with a token as pasted (trimmed), if anything.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        Err("Paste the token.".to_owned())
    } else if token.len() > MAX_TOKEN_LEN {
        Err(format!("A token can be at most {MAX_TOKEN_LEN} bytes."))
    } else if token.chars().any(char::is_control) {
        Err("The token cannot contain line breaks or control characters.".to_owned())
    } else {
        Ok(())
    }
}

/// Sets or replaces `user`'s token `name` (sealed, audited); whether one was replaced.
pub async fn store(
    state: &AppState,
    user: &impl Actor,
    name: &ServiceName,
    token: &str,
) -> Result<bool, AppError> {
    let now = state.clock.now();
    let (organization_id, user_id) = (user.organization_id(), user.user_id());
    let binding = Binding { organization_id, user_id, service_name: name.as_str() };
    let sealed = state.keyring.seal(&state.db, now, token, binding).await?;
    let last4 = visible_tail(token);
    let mut tx = state.db.begin().await?;
    let row = db::user_tokens::NewToken {
        organization_id,
        user_id,
        service_name: name.as_str(),
        ciphertext: &sealed.bytes,
        key_id: &sealed.key_id,
        last4: &last4,
    };
    let replaced = db::user_tokens::upsert(tx.conn(), row, now).await?;
    audited(
        tx.conn(),
        user,
        if replaced { Action::ServiceTokenReplaced } else { Action::ServiceTokenCreated },
        name,
        None,
        Some(json!({ "service_name": name.as_str() })),
        now,
    )
    .await?;
    tx.commit().await?;
    token_changed(state, user, name).await;
    Ok(replaced)
}

pub async fn confirm_delete(
    user: CurrentUser,
    state: web::Data<AppState>,
    service: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = ServiceName::parse(&service).map_err(|_| AppError::NotFound)?;
    let mut conn = state.db.acquire().await?;
    let tokens = db::user_tokens::list_for_user(conn.conn(), user.organization_id, user.id).await?;
    if !tokens.iter().any(|t| t.service_name == name.as_str()) {
        return Err(AppError::NotFound);
    }
    let users: Vec<String> = db::services::catalog(conn.conn(), user.organization_id)
        .await?
        .into_iter()
        .filter(|s| s.token_service_name.as_deref() == Some(name.as_str()))
        .map(|s| s.name)
        .collect();
    let consequence = match users.as_slice() {
        [] => "No service of your organization uses it now.".to_owned(),
        [one] => {
            format!("{one} stops working for you until you store a new one; nobody else's token changes.")
        }
        many => format!(
            "{} ({}) stop working for you until you store a new one; nobody else's token changes.",
            confirm::counted(many.len() as i64, "service"),
            many.join(", ")
        ),
    };
    let confirm = Confirm {
        question: format!("Delete your {name} token?"),
        consequence,
        verb: "Delete",
        action: format!("/tokens/{name}/delete"),
        fields: Vec::new(),
        back: "/tokens",
    };
    confirm::page(&user, &state, confirm)
}

pub async fn delete(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    service: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = ServiceName::parse(&service).map_err(|_| AppError::NotFound)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !db::user_tokens::delete(tx.conn(), user.organization_id, user.id, name.as_str()).await? {
        return Err(AppError::NotFound);
    }
    audited(
        tx.conn(),
        &user,
        Action::ServiceTokenDeleted,
        &name,
        Some(json!({ "service_name": name.as_str() })),
        None,
        now,
    )
    .await?;
    tx.commit().await?;
    token_changed(&state, &user, &name).await;
    session.put_notice(format!("Your {name} token was deleted."))?;
    Ok(see_other("/tokens"))
}

/// Says that the member's token `name` changed: the gateway's copies of it go.
async fn token_changed(state: &AppState, user: &impl Actor, name: &impl std::fmt::Display) {
    let change = Change::Token {
        organization_id: user.organization_id(),
        user_id: user.user_id(),
        name: name.to_string(),
    };
    state.changed(change).await;
}
