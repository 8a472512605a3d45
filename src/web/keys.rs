//! API keys: each developer and admin manages their own; admins also see and revoke every key
//! of the organization. A new key is shown once, on the page that answers its creation.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::json;

use super::confirm::{self, Confirm};
use super::connect::{self, Snippet};
use super::filters;
use super::{Actor, FieldErrors, Layout, audited, parse_id, render, see_other};
use crate::app::AppState;
use crate::catalog::tool_policy::KeyReach;

use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::crypto::api_key::ApiKey;
use crate::db::api_keys::{KeyRow, KeyStatus};
use crate::db::audit::Action;
use crate::db::{self};
use crate::domain::{Scope, Scopes};
use crate::error::AppError;
use crate::gateway::cache::Change;
use crate::ids::KeyId;

const EXPIRY_CHOICES: [&str; 3] = ["30", "90", "365"];
const DEFAULT_GRACE_HOURS: i64 = 24;
const MAX_GRACE_HOURS: i64 = 24 * 30;

/// The create form as typed, kept when it comes back with errors.
pub struct KeyForm {
    name: String,
    scopes: Vec<String>,
    expiry: String,
    custom_date: String,
    /// Requests per minute; empty: the plan's default.
    rate_limit: String,
    /// The services and tools the key is for (`KeyReach`); empty: every one.
    reach: String,
}

/// The highest per-key rate limit a form takes (requests per minute).
const MAX_RATE_LIMIT: u32 = 1_000_000;

impl Default for KeyForm {
    fn default() -> Self {
        KeyForm {
            name: String::new(),
            scopes: Scopes::DEFAULT.iter().map(|s| s.as_str().to_owned()).collect(),
            expiry: "365".into(),
            custom_date: String::new(),
            rate_limit: String::new(),
            reach: String::new(),
        }
    }
}

impl KeyForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> KeyForm {
        let mut form = KeyForm { scopes: Vec::new(), ..KeyForm::default() };
        for (name, value) in pairs {
            match name.as_str() {
                "name" => form.name = value,
                "scope" => form.scopes.push(value),
                "expiry" => form.expiry = value,
                "custom_date" => form.custom_date = value,
                "rate_limit" => form.rate_limit = value,
                "reach" => form.reach = value,
                _ => {}
            }
        }
        form
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Template)]
#[template(path = "keys/list.html")]
pub struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    now: DateTime<Utc>,
    grantable: Vec<&'static str>,
    form: KeyForm,
    errors: FieldErrors,
    /// A refused roll: which key, and why.
    roll_error: Option<(KeyId, String)>,
    is_admin: bool,
    /// The plan's rate limit for keys without their own.
    plan_rate_limit: Option<u32>,
}

#[derive(Template)]
#[template(path = "keys/created.html")]
pub struct CreatedPage {
    layout: Layout,
    name: String,
    key: String,
    expires_at: Option<DateTime<Utc>>,
    rolled: bool,
    /// For each service the key reaches: its clients' configuration.
    connect: Vec<(String, Vec<Snippet>)>,
}

#[derive(Template)]
#[template(path = "keys/organization.html")]
pub struct OrganizationKeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    now: DateTime<Utc>,
}

async fn keys_page(
    state: &AppState,
    user: &CurrentUser,
    form: KeyForm,
    errors: FieldErrors,
    roll_error: Option<(KeyId, String)>,
) -> Result<KeysPage, AppError> {
    let mut conn = state.db.acquire().await?;
    let keys = db::api_keys::list_for_user(conn.conn(), user.organization_id, user.id).await?;
    let plan =
        db::organizations::find(conn.conn(), user.organization_id).await?.map(|o| o.plan).unwrap_or_default();
    Ok(KeysPage {
        plan_rate_limit: state.plans.of(&plan).requests_per_minute,
        layout: Layout::signed_in("API keys", "/keys", user, state),
        keys,
        now: state.clock.now(),
        grantable: Scope::ALL.into_iter().filter(|s| s.allowed_for(user.role)).map(Scope::as_str).collect(),
        form,
        errors,
        roll_error,
        is_admin: user.role == crate::domain::Role::Admin,
    })
}

pub async fn list(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let org = db::organizations::find(state.db.acquire().await?.conn(), user.organization_id).await?;
    let expiry = org.map_or(365, |o| o.settings.default_key_expiry_days).to_string();
    let form = KeyForm { expiry, ..KeyForm::default() };
    render(StatusCode::OK, &keys_page(&state, &user, form, FieldErrors::default(), None).await?)
}

/// A key's name (trimmed) is between 1 and 100 printable characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("Give the key a name, e.g. the machine or tool that uses it.")
    } else if name.chars().count() > 100 || name.chars().any(char::is_control) {
        Err("Use at most 100 printable characters.")
    } else {
        Ok(())
    }
}

/// Checks the form; the result is the key's name, scopes and expiry, or the errors to show.
fn validate(
    form: &KeyForm,
    user: &CurrentUser,
    now: DateTime<Utc>,
) -> Result<(String, Scopes, DateTime<Utc>, Option<i32>), FieldErrors> {
    let mut errors = FieldErrors::default();
    let rate_limit = match form.rate_limit.trim() {
        "" => None,
        raw => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_RATE_LIMIT).contains(&n) => Some(n as i32),
            _ => {
                errors.add("rate_limit", format!("Enter requests per minute from 1 to {MAX_RATE_LIMIT}, or leave it empty for the plan's limit."));
                None
            }
        },
    };
    let name = form.name.trim();
    if let Err(e) = check_name(name) {
        errors.add("name", e);
    }
    let scopes = match Scopes::parse(form.scopes.iter().map(String::as_str)) {
        Err(e) => {
            errors.add("scopes", format!("That is an {e}."));
            None
        }
        Ok(scopes) if scopes.is_empty() => {
            errors.add("scopes", "Choose at least one scope.");
            None
        }
        Ok(scopes) => {
            let too_much = scopes.iter().find(|s| !s.allowed_for(user.role));
            if let Some(scope) = too_much {
                errors.add("scopes", format!("Your role ({}) cannot grant {}.", user.role, scope.as_str()));
                None
            } else {
                Some(scopes)
            }
        }
    };
    let expires_at = if EXPIRY_CHOICES.contains(&form.expiry.as_str()) {
        form.expiry.parse::<i64>().ok().map(|days| now + Duration::days(days))
    } else if form.expiry == "custom" {
        match NaiveDate::parse_from_str(form.custom_date.trim(), "%Y-%m-%d") {
            Err(_) => {
                errors.add("expiry", "Enter the date as YYYY-MM-DD.");
                None
            }
            Ok(date) => {
                // The key works through the whole chosen day (UTC).
                let end = date.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
                match end {
                    Some(end) if end <= now => {
                        errors.add("expiry", "The expiry date is in the past.");
                        None
                    }
                    Some(end) if end > now + Duration::days(5 * 366) => {
                        errors.add("expiry", "Choose a date within five years.");
                        None
                    }
                    end => end,
                }
            }
        }
    } else {
        errors.add("expiry", "Choose when the key expires.");
        None
    };
    match (!errors.has("name"), scopes, expires_at) {
        (true, Some(scopes), Some(expires_at)) if !errors.has("expiry") && !errors.has("rate_limit") => {
            Ok((name.to_owned(), scopes, expires_at, rate_limit))
        }
        _ => Err(errors),
    }
}

pub async fn create(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    let form = KeyForm::from_pairs(form.into_inner());
    let now = state.clock.now();
    let checked = match validate(&form, &user, now) {
        Ok(valid) => reachable(&state, &user, &form).await?.map(|reach| (valid, reach)),
        Err(errors) => Err(errors),
    };
    let ((name, scopes, expires_at, rate_limit), reach) = match checked {
        Ok(valid) => valid,
        Err(errors) => {
            return render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &keys_page(&state, &user, form, errors, None).await?,
            );
        }
    };
    let spec = KeySpec { name, scopes, expires_at, rate_limit, reach: reach.to_stored() };
    let (_, key) = issue(&state, &user, &spec).await?;
    let new =
        NewKey { name: spec.name, sealed_key: String::new(), expires_at, rolled: false, reach: spec.reach };
    show_once(&state, &session, &user, new, &key)
}

/// A new key as checked, by the dashboard's form or the API.
pub struct KeySpec {
    pub name: String,
    pub scopes: Scopes,
    pub expires_at: DateTime<Utc>,
    /// Requests per minute; `None`: the plan's.
    pub rate_limit: Option<i32>,
    /// The services and tools it is narrowed to, as stored (`KeyReach::to_stored`).
    pub reach: Option<String>,
}

/// Makes the key `spec` describes for `owner`, audited, in one transaction. The key itself is
/// returned: the one time it exists in clear.
pub async fn issue(
    state: &AppState,
    owner: &impl Actor,
    spec: &KeySpec,
) -> Result<(KeyId, ApiKey), AppError> {
    let now = state.clock.now();
    let key = ApiKey::generate();
    let id = KeyId::new();
    let display = key.display();
    let mut tx = state.db.begin().await?;
    let row = db::api_keys::NewKey {
        id,
        organization_id: owner.organization_id(),
        user_id: owner.user_id(),
        name: &spec.name,
        key_hash: &key.hash(),
        display_key: &display,
        scopes: &spec.scopes.to_string(),
        expires_at: Some(spec.expires_at),
        rolled_from_id: None,
        rate_limit_per_minute: spec.rate_limit,
        reach: spec.reach.as_deref(),
    };
    db::api_keys::insert(tx.conn(), row, now).await?;
    let after = json!({ "name": spec.name, "display": display, "scopes": spec.scopes.to_string(), "expires_at": spec.expires_at, "rate_limit_per_minute": spec.rate_limit, "reach": spec.reach });
    audited(tx.conn(), owner, Action::ApiKeyCreated, id, None, Some(after), now).await?;
    tx.commit().await?;
    Ok((id, key))
}

/// The services and tools the form narrows the key to, each service one the member can use; or
/// the error to show at the field.
async fn reachable(
    state: &AppState,
    user: &CurrentUser,
    form: &KeyForm,
) -> Result<Result<KeyReach, FieldErrors>, AppError> {
    Ok(check_reach(state, user.organization_id, &form.reach).await?.map_err(|e| FieldErrors::one("reach", e)))
}

/// The services and tools `text` names (`KeyReach::from_input`), each service one the
/// organization offers; or what is wrong with it.
pub async fn check_reach(
    state: &AppState,
    organization_id: crate::ids::OrgId,
    text: &str,
) -> Result<Result<KeyReach, String>, AppError> {
    let reach = match KeyReach::from_input(text) {
        Ok(reach) => reach,
        Err(e) => {
            return Ok(Err(format!("{e}. Write services, or service/tool, separated by spaces or commas.")));
        }
    };
    let mut conn = state.db.acquire().await?;
    for service in reach.services().into_iter().flatten() {
        if db::services::find_for_organization(conn.conn(), organization_id, service).await?.is_none() {
            return Ok(Err(format!("There is no service named \"{service}\".")));
        }
    }
    Ok(Ok(reach))
}

/// A new key on its way to the one page that shows it: sealed into the session, which is stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct NewKey {
    name: String,
    sealed_key: String,
    expires_at: DateTime<Utc>,
    rolled: bool,
    /// The services and tools it is narrowed to, as stored.
    #[serde(default)]
    reach: Option<String>,
}

/// Redirects to the page that shows the new key (after POST, so a reload makes no other key).
fn show_once(
    state: &AppState,
    session: &WebSession,
    user: &CurrentUser,
    mut new: NewKey,
    key: &ApiKey,
) -> Result<HttpResponse, AppError> {
    new.sealed_key = state.flash.seal(user.session_id, key.expose());
    session.put_flash(&new)?;
    Ok(see_other(NEW_KEY_PAGE))
}

const NEW_KEY_PAGE: &str = "/keys/new";

/// Shows a key just created or rolled, once: a reload finds nothing and goes to the list.
pub async fn created(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
) -> Result<HttpResponse, AppError> {
    let Some(new) = session.take_flash::<NewKey>() else { return Ok(see_other("/keys")) };
    let Some(key) = state.flash.open(user.session_id, &new.sealed_key) else { return Ok(see_other("/keys")) };
    // How to connect each service the key reaches, with the key in it (the one time it is shown).
    let reach = KeyReach::from_stored(new.reach.as_deref());
    let services = db::services::catalog(state.db.acquire().await?.conn(), user.organization_id).await?;
    let base = crate::web::public_base(&state, &req);
    let connect = services
        .iter()
        .filter(|service| reach.allows_service(&service.name))
        .map(|service| {
            let url = format!("{base}/mcp/{}", service.name);
            (service.name.clone(), connect::snippets(&service.name, &url, &key))
        })
        .collect();
    let title = if new.rolled { "API key rolled" } else { "API key created" };
    let page = CreatedPage {
        layout: Layout::signed_in(title, "/keys", &user, &state),
        name: new.name,
        key,
        expires_at: Some(new.expires_at),
        rolled: new.rolled,
        connect,
    };
    render(StatusCode::OK, &page)
}

/// Whose keys a revocation may reach: the user's own, or (admins) any of the organization's.
#[derive(Clone, Copy)]
pub enum Whose {
    Mine,
    Organization,
}

/// The key, if it is one the user may manage this way; 404 otherwise.
async fn find_key(
    conn: db::Conn<'_>,
    user: &impl Actor,
    whose: Whose,
    id: KeyId,
) -> Result<KeyRow, AppError> {
    let organization_id = user.organization_id();
    let key = match whose {
        Whose::Mine => db::api_keys::find_mine(conn, organization_id, user.user_id(), id).await?,
        Whose::Organization => db::api_keys::find_in_organization(conn, organization_id, id).await?,
    };
    key.ok_or(AppError::NotFound)
}

/// Revokes the key and returns it as it was.
pub async fn revoke_key(
    state: &AppState,
    user: &impl Actor,
    whose: Whose,
    id: KeyId,
) -> Result<KeyRow, AppError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let key = find_key(tx.conn(), user, whose, id).await?;
    if db::api_keys::revoke(tx.conn(), user.organization_id(), id, now).await? {
        let before = json!({ "name": key.name, "display": key.display_key, "owner": key.owner_email, "status": key.status(now) });
        let after = json!({ "status": "revoked" });
        audited(tx.conn(), user, Action::ApiKeyRevoked, id, Some(before), Some(after), now).await?;
    }
    tx.commit().await?;
    state.changed(Change::Key(id)).await;
    Ok(key)
}

/// Asks before revoking, naming the key and who loses what.
async fn confirm_revoking(
    state: &AppState,
    user: &CurrentUser,
    whose: Whose,
    id: KeyId,
) -> Result<HttpResponse, AppError> {
    let key = find_key(state.db.acquire().await?.conn(), user, whose, id).await?;
    let (action, back, clients) = match whose {
        Whose::Mine => (format!("/keys/{id}/revoke"), "/keys", "Every MCP client".to_owned()),
        Whose::Organization => (
            format!("/organization/keys/{id}/revoke"),
            "/organization/keys",
            format!("Every MCP client of {}", key.owner_email),
        ),
    };
    let confirm = Confirm {
        question: format!("Revoke API key {}?", key.name),
        consequence: format!(
            "{clients} that uses {} stops reaching the gateway at once. This cannot be undone.",
            key.display_key
        ),
        verb: "Revoke",
        action,
        fields: Vec::new(),
        back,
    };
    confirm::page(user, state, confirm)
}

pub async fn confirm_revoke(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    confirm_revoking(&state, &user, Whose::Mine, parse_id(&id)?).await
}

pub async fn revoke(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let key = revoke_key(&state, &user, Whose::Mine, parse_id(&id)?).await?;
    session.put_notice(format!("API key {} ({}) revoked.", key.name, key.display_key))?;
    Ok(see_other("/keys"))
}

#[derive(serde::Deserialize)]
pub struct RollForm {
    #[serde(default)]
    grace_hours: String,
}

/// Replaces a key with a new one; the old one keeps working for the chosen grace time.
pub async fn roll(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
    form: web::Form<RollForm>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let old = db::api_keys::find_mine(tx.conn(), user.organization_id, user.id, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let grace_hours = match form.grace_hours.trim() {
        "" => Some(DEFAULT_GRACE_HOURS),
        raw => raw.parse::<i64>().ok().filter(|h| (0..=MAX_GRACE_HOURS).contains(h)),
    };
    let refusal = match grace_hours {
        None => Some(format!("Enter the grace time in hours, from 0 to {MAX_GRACE_HOURS}.")),
        Some(_) if old.status(now) != KeyStatus::Active => {
            Some("Only an active key can be rolled.".to_owned())
        }
        Some(_) => None,
    };
    let (Some(grace_hours), None) = (grace_hours, refusal.clone()) else {
        drop(tx);
        let page =
            keys_page(&state, &user, KeyForm::default(), FieldErrors::default(), refusal.map(|r| (id, r)))
                .await?;
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let scopes =
        Scopes::parse(old.scopes.split_whitespace()).map_err(|e| anyhow::anyhow!(e))?.limited_to(user.role);
    let lifetime = old.expires_at.map_or(Duration::days(365), |t| t - old.created_at);
    let expires_at = now + lifetime;
    let key = ApiKey::generate();
    let new_id = KeyId::new();
    let display = key.display();
    let row = db::api_keys::NewKey {
        id: new_id,
        organization_id: user.organization_id,
        user_id: user.id,
        name: &old.name,
        key_hash: &key.hash(),
        display_key: &display,
        scopes: &scopes.to_string(),
        expires_at: Some(expires_at),
        rolled_from_id: Some(id),
        rate_limit_per_minute: old.rate_limit_per_minute,
        reach: old.reach.as_deref(),
    };
    // Marked first: of two rolls at the same moment, the second finds the key rolled.
    let grace_until = now + Duration::hours(grace_hours);
    if !db::api_keys::mark_rolled(tx.conn(), user.organization_id, id, now, grace_until).await? {
        return Err(AppError::Conflict(
            "This key was rolled or revoked at the same moment, so it was not rolled again. \
             Reload the keys page to see its replacement."
                .to_owned(),
        ));
    }
    db::api_keys::insert(tx.conn(), row, now).await?;
    audited(
        tx.conn(),
        &user,
        Action::ApiKeyRolled,
        id,
        Some(json!({ "name": old.name, "display": old.display_key })),
        Some(json!({ "replaced_by": new_id, "display": display, "grace_hours": grace_hours })),
        now,
    )
    .await?;
    tx.commit().await?;
    state.changed(Change::Key(id)).await;
    let new =
        NewKey { name: old.name, sealed_key: String::new(), expires_at, rolled: true, reach: old.reach };
    show_once(&state, &session, &user, new, &key)
}

pub async fn organization_keys(
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let keys =
        db::api_keys::list_for_organization(state.db.acquire().await?.conn(), user.organization_id).await?;
    let page = OrganizationKeysPage {
        layout: Layout::signed_in("All API keys", "/organization/keys", &user, &state),
        keys,
        now: state.clock.now(),
    };
    render(StatusCode::OK, &page)
}

pub async fn confirm_organization_revoke(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    confirm_revoking(&state, &user, Whose::Organization, parse_id(&id)?).await
}

pub async fn organization_revoke(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let key = revoke_key(&state, &user, Whose::Organization, parse_id(&id)?).await?;
    session
        .put_notice(format!("API key {} ({}) of {} revoked.", key.name, key.display_key, key.owner_email))?;
    Ok(see_other("/organization/keys"))
}
