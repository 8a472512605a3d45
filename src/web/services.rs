//! The service catalog (everyone), each service's configuration and gateway URL, and the
//! organization's own services (admins: HTTP upstreams only; no command ever runs from here).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Layout, audit_by, public_base, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::gate::CurrentUser;
use crate::catalog::definition::{CredentialPlacement, parse_headers, parse_upstream_url};
use crate::catalog::egress::Refused;
use crate::db::services::{ServiceFields, ServiceRow};
use crate::db::{self, audit, unique_violation};
use crate::domain::{Role, ServiceName};
use crate::error::AppError;
use crate::gateway::probe;

/// Names that would collide with the catalog's own paths.
const RESERVED_NAMES: [&str; 1] = ["new"];

#[derive(Template)]
#[template(path = "services/catalog.html")]
pub struct CatalogPage {
    layout: Layout,
    services: Vec<ServiceRow>,
    is_admin: bool,
}

#[derive(Template)]
#[template(path = "services/detail.html")]
pub struct DetailPage {
    layout: Layout,
    service: ServiceRow,
    gateway_url: String,
    has_token: bool,
    can_hold_tokens: bool,
    can_edit: bool,
    /// What "test connection" found, after the button was pressed.
    probe: Option<Result<Vec<probe::Tool>, String>>,
}

#[derive(Deserialize, Default)]
pub struct ServiceForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    is_public: Option<String>,
    #[serde(default)]
    upstream_url: String,
    #[serde(default)]
    headers: String,
    #[serde(default)]
    token_service_name: String,
    #[serde(default)]
    credential_header: String,
    #[serde(default)]
    timeout_seconds: String,
}

#[derive(Default)]
pub struct ServiceErrors {
    name: Option<String>,
    description: Option<String>,
    upstream_url: Option<String>,
    headers: Option<String>,
    token_service_name: Option<String>,
    credential_header: Option<String>,
    timeout_seconds: Option<String>,
}

#[derive(Template)]
#[template(path = "services/form.html")]
pub struct FormPage {
    layout: Layout,
    /// The name of the service being edited; `None` for a new one.
    editing: Option<String>,
    form: ServiceForm,
    errors: ServiceErrors,
}

pub async fn catalog(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let services = db::services::catalog(state.db.acquire().await?.conn(), user.organization_id).await?;
    let page = CatalogPage {
        layout: Layout::signed_in("Services", "/services", &user, &state),
        services,
        is_admin: user.role == Role::Admin,
    };
    render(StatusCode::OK, &page)
}

pub async fn detail(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let service = visible_service(&state, &user, &name).await?;
    detail_page(&req, &user, &state, service, None).await
}

/// Runs initialize and tools/list through the gateway as the signed-in member and shows the
/// service's tools, or what went wrong.
pub async fn test_connection(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    // Another organization's service answers 404 before anything is sent.
    let service = visible_service(&state, &user, &name).await?;
    let principal = probe::principal(user.organization_id, user.id, user.role);
    let found = probe::probe(&state, &req, &principal, &name).await;
    detail_page(&req, &user, &state, service, Some(found)).await
}

/// The service the member can use under this name, or 404.
async fn visible_service(state: &AppState, user: &CurrentUser, name: &str) -> Result<ServiceRow, AppError> {
    db::services::find_for_organization(state.db.acquire().await?.conn(), user.organization_id, name)
        .await?
        .ok_or(AppError::NotFound)
}

async fn detail_page(
    req: &HttpRequest,
    user: &CurrentUser,
    state: &AppState,
    service: ServiceRow,
    probe: Option<Result<Vec<probe::Tool>, String>>,
) -> Result<HttpResponse, AppError> {
    let has_token = match &service.token_service_name {
        Some(token) => {
            let mut conn = state.db.acquire().await?;
            db::user_tokens::find_sealed(conn.conn(), user.organization_id, user.id, token).await?.is_some()
        }
        None => false,
    };
    let page = DetailPage {
        layout: Layout::signed_in("Service", "/services", user, state),
        gateway_url: format!("{}/mcp/{}", public_base(state, req), service.name),
        has_token,
        can_hold_tokens: user.role.allows(Role::Developer),
        can_edit: user.role == Role::Admin && !service.is_system(),
        service,
        probe,
    };
    render(StatusCode::OK, &page)
}

fn form_page(
    state: &AppState,
    user: &CurrentUser,
    editing: Option<String>,
    form: ServiceForm,
    errors: ServiceErrors,
) -> FormPage {
    let title = if editing.is_some() { "Edit service" } else { "New service" };
    FormPage { layout: Layout::signed_in(title, "/services", user, state), editing, form, errors }
}

pub async fn new_form(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let form = ServiceForm { timeout_seconds: "60".into(), ..ServiceForm::default() };
    render(StatusCode::OK, &form_page(&state, &user, None, form, ServiceErrors::default()))
}

pub async fn edit_form(
    user: CurrentUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let service = db::services::find_own(state.db.acquire().await?.conn(), user.organization_id, &name)
        .await?
        .ok_or(AppError::NotFound)?;
    let form = ServiceForm {
        name: service.name.clone(),
        description: service.description.clone(),
        version: service.version.clone(),
        is_public: service.is_public.then(|| "on".into()),
        upstream_url: service.upstream_url.clone().unwrap_or_default(),
        headers: service.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n"),
        token_service_name: service.token_service_name.clone().unwrap_or_default(),
        credential_header: service.token_placement.clone().unwrap_or_default(),
        timeout_seconds: (service.timeout_ms / 1000).to_string(),
    };
    render(StatusCode::OK, &form_page(&state, &user, Some(service.name), form, ServiceErrors::default()))
}

/// A checked form, ready to store.
struct Valid {
    name: ServiceName,
    url: String,
    headers: std::collections::BTreeMap<String, String>,
    token: Option<ServiceName>,
    placement: Option<CredentialPlacement>,
    timeout_ms: i32,
}

/// Checks the form; on a mistake, `errors` says which field and why.
fn validate(form: &ServiceForm, errors: &mut ServiceErrors) -> Option<Valid> {
    let name = ServiceName::parse(&form.name).map_err(|e| errors.name = Some(e.into())).ok();
    if name.as_ref().is_some_and(|n| RESERVED_NAMES.contains(&n.as_str())) {
        errors.name = Some("This name is reserved; choose another.".into());
    }
    if form.description.chars().count() > 500 || form.version.chars().count() > 50 {
        errors.description =
            Some("Keep the description under 500 and the version under 50 characters.".into());
    }
    let url = parse_upstream_url(&form.upstream_url).map_err(|e| errors.upstream_url = Some(e)).ok();
    let headers = parse_headers(&form.headers).map_err(|e| errors.headers = Some(e)).ok();
    let token = match form.token_service_name.trim() {
        "" => None,
        raw => ServiceName::parse(raw).map_err(|e| errors.token_service_name = Some(e.into())).ok(),
    };
    let placement = match form.credential_header.trim() {
        "" => None,
        raw => CredentialPlacement::parse(raw).map_err(|e| errors.credential_header = Some(e)).ok(),
    };
    if form.token_service_name.trim().is_empty() != form.credential_header.trim().is_empty() {
        errors
            .credential_header
            .get_or_insert("Give both the token name and where it goes, or neither.".into());
    }
    let timeout = form.timeout_seconds.trim().parse::<i32>().ok().filter(|t| (1..=600).contains(t));
    if timeout.is_none() {
        errors.timeout_seconds = Some("Enter a timeout from 1 to 600 seconds.".into());
    }
    let no_errors = errors.name.is_none()
        && errors.description.is_none()
        && errors.token_service_name.is_none()
        && errors.credential_header.is_none();
    match (name, url, headers, timeout, no_errors) {
        (Some(name), Some(url), Some(headers), Some(timeout), true) => {
            Some(Valid { name, url: url.to_string(), headers, token, placement, timeout_ms: timeout * 1000 })
        }
        _ => None,
    }
}

fn fields<'a>(form: &'a ServiceForm, valid: &'a Valid, placement: &'a Option<String>) -> ServiceFields<'a> {
    ServiceFields {
        name: valid.name.as_str(),
        description: form.description.trim(),
        version: form.version.trim(),
        is_public: form.is_public.is_some(),
        upstream_url: &valid.url,
        headers: &valid.headers,
        token_service_name: valid.token.as_ref().map(|t| t.as_str()),
        token_placement: placement.as_deref(),
        timeout_ms: valid.timeout_ms,
    }
}

/// What the audit trail keeps of a service: its settings without header values.
fn audit_view(
    name: &str,
    url: &str,
    headers: &std::collections::BTreeMap<String, String>,
    token: Option<&str>,
) -> serde_json::Value {
    json!({ "name": name, "upstream_url": url, "header_names": headers.keys().collect::<Vec<_>>(), "token_name": token })
}

pub async fn create(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    form: web::Form<ServiceForm>,
) -> Result<HttpResponse, AppError> {
    save(user, state, client, None, form.into_inner()).await
}

pub async fn update(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    name: web::Path<String>,
    form: web::Form<ServiceForm>,
) -> Result<HttpResponse, AppError> {
    save(user, state, client, Some(name.into_inner()), form.into_inner()).await
}

async fn save(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    editing: Option<String>,
    form: ServiceForm,
) -> Result<HttpResponse, AppError> {
    let now = state.clock.now();
    // Resolved before the transaction: a name can take a while to resolve. A name that does
    // not resolve yet is accepted; every connection checks the address it reaches.
    let unreachable = match parse_upstream_url(&form.upstream_url) {
        Ok(url) => match state.gateway.policy().check_url(&url).await {
            Err(refused @ Refused::NotPublic(_)) => Some(refused),
            _ => None,
        },
        Err(_) => None,
    };
    let mut tx = state.db.begin().await?;
    let existing = match &editing {
        Some(name) => Some(
            db::services::find_own(tx.conn(), user.organization_id, name).await?.ok_or(AppError::NotFound)?,
        ),
        None => None,
    };
    let mut errors = ServiceErrors::default();
    let mut valid = validate(&form, &mut errors);
    if let Some(refused) = unreachable {
        errors.upstream_url = Some(format!("Not saved: {refused}."));
        valid = None;
    }
    if let Some(v) = &valid
        && db::services::system_name_exists(tx.conn(), v.name.as_str()).await?
    {
        errors.name = Some(format!("{} is a system service's name.", v.name));
        valid = None;
    }
    let Some(valid) = valid else {
        drop(tx);
        return render(StatusCode::UNPROCESSABLE_ENTITY, &form_page(&state, &user, editing, form, errors));
    };
    let placement = valid.placement.as_ref().map(|p| p.to_string());
    let row = fields(&form, &valid, &placement);
    let id = existing.as_ref().map_or_else(Uuid::now_v7, |s| s.id);
    let stored = match &existing {
        Some(_) => db::services::update(tx.conn(), user.organization_id, id, &row, now).await.map(|_| ()),
        None => db::services::insert(tx.conn(), user.organization_id, id, &row, now).await,
    };
    if let Err(e) = stored {
        if unique_violation(&e).is_some() {
            drop(tx);
            let errors = ServiceErrors {
                name: Some("A service with this name already exists.".into()),
                ..ServiceErrors::default()
            };
            return render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &form_page(&state, &user, editing, form, errors),
            );
        }
        return Err(e.into());
    }
    let token = valid.token.as_ref().map(|t| t.as_str());
    let entry = audit::Entry {
        target_type: Some("service"),
        target_id: Some(id.to_string()),
        before: existing.as_ref().map(|s| {
            audit_view(
                &s.name,
                s.upstream_url.as_deref().unwrap_or(""),
                &s.headers,
                s.token_service_name.as_deref(),
            )
        }),
        after: Some(audit_view(valid.name.as_str(), &valid.url, &valid.headers, token)),
        ..audit_by(if existing.is_some() { "service.updated" } else { "service.created" }, &user, &client)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    Ok(see_other(&format!("/services/{}", valid.name)))
}

pub async fn delete(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let service =
        db::services::find_own(tx.conn(), user.organization_id, &name).await?.ok_or(AppError::NotFound)?;
    db::services::delete(tx.conn(), user.organization_id, service.id, now).await?;
    let before = audit_view(
        &service.name,
        service.upstream_url.as_deref().unwrap_or(""),
        &service.headers,
        service.token_service_name.as_deref(),
    );
    let entry = audit::Entry {
        target_type: Some("service"),
        target_id: Some(service.id.to_string()),
        before: Some(before),
        ..audit_by("service.deleted", &user, &client)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    Ok(see_other("/services"))
}
