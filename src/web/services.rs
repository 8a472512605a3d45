//! The service catalog (everyone), each service's configuration and gateway URL, and the
//! organization's own services (admins: HTTP upstreams only; no command ever runs from here).

use std::collections::BTreeMap;

use crate::ids::ServiceId;
use actix_htmx::Htmx;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde_json::json;

use super::confirm::{self, Confirm};
use super::connect::{self, Snippet};
use super::{FieldErrors, Layout, audited, filters, public_base, render, see_other};
use crate::app::AppState;

use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::catalog::definition::{CredentialPlacement, parse_headers, parse_upstream_url};
use crate::catalog::egress::Refused;
use crate::catalog::tool_policy::ToolPolicy;
use crate::db::audit::Action;
use crate::db::request_logs::LogRow;
use crate::db::services::{SealedHeader, ServiceFields, ServiceRow};
use crate::db::{self, unique_violation};
use crate::domain::{Role, ServiceName};
use crate::error::AppError;
use crate::gateway::cache::Change;
use crate::gateway::probe;
use crate::telemetry::rollup::{Counts, Grain};

/// Names that would collide with the catalog's own paths.
const RESERVED_NAMES: [&str; 1] = ["new"];

#[derive(Template)]
#[template(path = "services/catalog.html")]
pub struct CatalogPage {
    layout: Layout,
    services: Vec<(ServiceRow, Counts)>,
    is_admin: bool,
}

#[derive(Template)]
#[template(path = "services/detail.html")]
pub struct DetailPage {
    layout: Layout,
    service: ServiceRow,
    gateway_url: String,
    /// The common clients' configuration for it, with a placeholder for the key.
    snippets: Vec<Snippet>,
    has_token: bool,
    can_hold_tokens: bool,
    can_edit: bool,
    /// "Test connection", for those who may run it.
    probe: Option<ProbePanel>,
    /// Calls over the last 24 hours and the last successful call.
    health: Counts,
    /// The last unsuccessful call of the last 24 hours, for admins.
    last_error: Option<LogRow>,
    /// Which tools are offered to whom, as it applies to this organization.
    policy: ToolPolicy,
    /// The MCP revisions the upstream speaks, as last asked.
    speaks: Option<&'static str>,
    /// The policy form, for admins: as stored, or as typed with its errors.
    policy_form: Option<(PolicyForm, FieldErrors)>,
}

/// The tool-policy form as typed.
pub struct PolicyForm {
    listed: bool,
    offered: String,
    roles: String,
}

impl PolicyForm {
    fn of(policy: &ToolPolicy) -> PolicyForm {
        PolicyForm {
            listed: policy.offered.is_some(),
            offered: policy.offered_text(),
            roles: policy.roles_text(),
        }
    }
}

#[derive(serde::Deserialize)]
pub struct PolicyInput {
    #[serde(default)]
    offer: String,
    #[serde(default)]
    offered: String,
    #[serde(default)]
    roles: String,
}

/// The window service health covers.
const HEALTH_HOURS: i64 = 24;

/// The start of the service-health window: the 24 hourly periods ending with this one.
fn health_since(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    Grain::Hour.start(now) - chrono::Duration::hours(HEALTH_HOURS - 1)
}

/// "Test connection" and what it found once pressed; htmx swaps it alone.
#[derive(Template)]
#[template(path = "services/probe.html")]
pub struct ProbePanel {
    service_name: String,
    csrf_token: String,
    result: Option<Result<Vec<probe::Tool>, String>>,
}

#[derive(Default)]
pub struct ServiceForm {
    name: String,
    description: String,
    version: String,
    is_public: Option<String>,
    upstream_url: String,
    /// New headers, one `Name: value` per line (a stored header's name replaces its value).
    headers: String,
    /// The headers already stored: their values are never shown, only replaced or removed.
    stored: Vec<StoredHeader>,
    token_service_name: String,
    credential_header: String,
    timeout_seconds: String,
}

/// A stored header as the form shows it: its name and last 4 characters; a new value (empty
/// keeps the stored one), or removed.
#[derive(Default)]
pub struct StoredHeader {
    name: String,
    last4: String,
    value: String,
    remove: bool,
}

impl ServiceForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> ServiceForm {
        let mut form = ServiceForm::default();
        let mut removed = Vec::new();
        for (name, value) in pairs {
            match name.as_str() {
                "name" => form.name = value,
                "description" => form.description = value,
                "version" => form.version = value,
                "is_public" => form.is_public = Some(value),
                "upstream_url" => form.upstream_url = value,
                "headers" => form.headers = value,
                "stored_name" => form.stored.push(StoredHeader { name: value, ..StoredHeader::default() }),
                "stored_value" => {
                    if let Some(stored) = form.stored.last_mut() {
                        stored.value = value;
                    }
                }
                "stored_remove" => removed.push(value),
                "token_service_name" => form.token_service_name = value,
                "credential_header" => form.credential_header = value,
                "timeout_seconds" => form.timeout_seconds = value,
                _ => {}
            }
        }
        for stored in &mut form.stored {
            stored.remove = removed.contains(&stored.name);
        }
        form
    }

    /// The stored headers of `service` as the form shows them; a name the service does not
    /// have is dropped.
    fn show_stored(&mut self, service: Option<&ServiceRow>) {
        let sealed = service.map_or(&[][..], |s| &s.sealed_headers[..]);
        let mut shown = Vec::with_capacity(sealed.len());
        for header in sealed {
            let input = self.stored.iter().find(|s| s.name == header.name);
            shown.push(StoredHeader {
                name: header.name.clone(),
                last4: header.last4.clone(),
                value: input.map(|s| s.value.clone()).unwrap_or_default(),
                remove: input.is_some_and(|s| s.remove),
            });
        }
        self.stored = shown;
    }

    /// Drops every header value typed in, so a form shown again holds no secret; true when
    /// there was one.
    fn forget_values(&mut self) -> bool {
        let mut had_values = false;
        for stored in &mut self.stored {
            had_values |= !stored.value.trim().is_empty();
            stored.value.clear();
        }
        let names: Vec<String> = self
            .headers
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|line| {
                // A line without a name may be a bare secret: it goes too.
                let (name, value) = line.split_once(':').unzip();
                had_values |= value.is_none_or(|v| !v.trim().is_empty());
                name.map(|name| format!("{}: ", name.trim()))
            })
            .collect();
        self.headers = names.join("\n");
        had_values
    }
}

#[derive(Template)]
#[template(path = "services/form.html")]
pub struct FormPage {
    layout: Layout,
    /// The name of the service being edited; `None` for a new one.
    editing: Option<String>,
    form: ServiceForm,
    errors: FieldErrors,
}

pub async fn catalog(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let mut conn = state.db.acquire().await?;
    let services = db::services::catalog(conn.conn(), user.organization_id).await?;
    let mut health =
        db::usage::service_health(conn.conn(), user.organization_id, health_since(state.clock.now())).await?;
    let services = services
        .into_iter()
        .map(|s| {
            let counts = health.remove(&s.id).unwrap_or_default();
            (s, counts)
        })
        .collect();
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
    detail_page(&req, &user, &state, service, None, None).await
}

/// Sets which tools of the service the organization's members are offered, and to whom.
pub async fn set_tool_policy(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    name: web::Path<String>,
    input: web::Form<PolicyInput>,
) -> Result<HttpResponse, AppError> {
    let service = visible_service(&state, &user, &name).await?;
    let input = input.into_inner();
    let form = PolicyForm { listed: input.offer == "listed", offered: input.offered, roles: input.roles };
    let checked = match input.offer.as_str() {
        "all" | "listed" => ToolPolicy::from_form(form.listed, &form.offered, &form.roles),
        _ => Err(("offer", "Choose whether every tool or only the listed ones are offered.".to_owned())),
    };
    let policy = match checked {
        Ok(policy) => policy,
        Err((field, message)) => {
            let errors = FieldErrors::one(field, message);
            let mut page = detail_page(&req, &user, &state, service, None, Some((form, errors))).await?;
            *page.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(page);
        }
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let before = db::tool_policies::effective(tx.conn(), user.organization_id, service.id).await?;
    db::tool_policies::set(tx.conn(), user.organization_id, service.id, &policy, now).await?;
    let view = |policy: &ToolPolicy| json!({ "service": service.name, "policy": policy });
    audited(
        tx.conn(),
        &user,
        Action::ToolPolicyChanged,
        service.id,
        Some(view(&before)),
        Some(view(&policy)),
        now,
    )
    .await?;
    tx.commit().await?;
    state
        .changed(Change::Service { organization_id: user.organization_id, name: service.name.clone() })
        .await;
    session.put_notice(format!("The tool policy of {} is saved; it applies at once.", service.name))?;
    Ok(see_other(&format!("/services/{}#tools", service.name)))
}

/// Runs initialize and tools/list through the gateway as the signed-in member and shows the
/// service's tools, or what went wrong.
pub async fn test_connection(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    htmx: Htmx,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    // Another organization's service answers 404 before anything is sent.
    let service = visible_service(&state, &user, &name).await?;
    let caller = probe::caller(user.organization_id, user.id, user.role);
    let found = probe::probe(&state, &req, &caller, &name).await;
    // htmx asked for the panel alone; without JavaScript the whole page comes back.
    if htmx.is_htmx {
        return render(StatusCode::OK, &probe_panel(&state, &user, &service, Some(found)));
    }
    detail_page(&req, &user, &state, service, Some(found), None).await
}

fn probe_panel(
    state: &AppState,
    user: &CurrentUser,
    service: &ServiceRow,
    result: Option<Result<Vec<probe::Tool>, String>>,
) -> ProbePanel {
    ProbePanel { service_name: service.name.clone(), csrf_token: state.csrf.token(user.session_id), result }
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
    typed_policy: Option<(PolicyForm, FieldErrors)>,
) -> Result<HttpResponse, AppError> {
    let policy =
        db::tool_policies::effective(state.db.acquire().await?.conn(), user.organization_id, service.id)
            .await?;
    let policy_form = (user.role == Role::Admin)
        .then(|| typed_policy.unwrap_or_else(|| (PolicyForm::of(&policy), FieldErrors::default())));
    let has_token = match &service.token_service_name {
        Some(token) => {
            let mut conn = state.db.acquire().await?;
            db::user_tokens::find_sealed(conn.conn(), user.organization_id, user.id, token).await?.is_some()
        }
        None => false,
    };
    let now = state.clock.now();
    let (health, last_error) = {
        let mut conn = state.db.acquire().await?;
        let mut health =
            db::usage::service_health(conn.conn(), user.organization_id, health_since(now)).await?;
        let last_error = if user.role.allows(Role::Admin) {
            let since = now - chrono::Duration::hours(HEALTH_HOURS);
            let latest = db::request_logs::latest_unsuccessful(
                conn.conn(),
                user.organization_id,
                None,
                Some(service.id),
                since,
                1,
            );
            latest.await?.pop()
        } else {
            None
        };
        (health.remove(&service.id).unwrap_or_default(), last_error)
    };
    let gateway_url = format!("{}/mcp/{}", public_base(state, req), service.name);
    let page = DetailPage {
        health,
        last_error,
        layout: Layout::signed_in(format!("{} · Services", service.name), "/services", user, state),
        snippets: connect::snippets(&service.name, &gateway_url, connect::KEY_PLACEHOLDER),
        gateway_url,
        has_token,
        can_hold_tokens: user.role.allows(Role::Developer),
        can_edit: user.role == Role::Admin && !service.is_system(),
        probe: user.role.allows(Role::Developer).then(|| probe_panel(state, user, &service, probe)),
        speaks: state.gateway.speaks_in_words(service.id),
        service,
        policy,
        policy_form,
    };
    render(StatusCode::OK, &page)
}

fn form_page(
    state: &AppState,
    user: &CurrentUser,
    editing: Option<String>,
    form: ServiceForm,
    errors: FieldErrors,
) -> FormPage {
    let title = if editing.is_some() { "Edit service" } else { "New service" };
    FormPage { layout: Layout::signed_in(title, "/services", user, state), editing, form, errors }
}

pub async fn new_form(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let form = ServiceForm { timeout_seconds: "60".into(), ..ServiceForm::default() };
    render(StatusCode::OK, &form_page(&state, &user, None, form, FieldErrors::default()))
}

pub async fn edit_form(
    user: CurrentUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let service = db::services::find_own(state.db.acquire().await?.conn(), user.organization_id, &name)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut form = ServiceForm {
        name: service.name.clone(),
        description: service.description.clone(),
        version: service.version.clone(),
        is_public: service.is_public.then(|| "on".into()),
        upstream_url: service.upstream_url.clone().unwrap_or_default(),
        token_service_name: service.token_service_name.clone().unwrap_or_default(),
        credential_header: service.token_placement.clone().unwrap_or_default(),
        timeout_seconds: (service.timeout_ms / 1000).to_string(),
        ..ServiceForm::default()
    };
    form.show_stored(Some(&service));
    render(StatusCode::OK, &form_page(&state, &user, Some(service.name), form, FieldErrors::default()))
}

/// A checked form, ready to store.
struct Valid {
    name: ServiceName,
    url: String,
    /// Header values to seal: new headers and new values of stored ones.
    new_headers: BTreeMap<String, String>,
    /// Stored headers to drop.
    removed: Vec<String>,
    token: Option<ServiceName>,
    placement: Option<CredentialPlacement>,
    timeout_ms: i32,
}

/// Checks the form; on a mistake, `errors` says which field and why.
fn validate(form: &ServiceForm, errors: &mut FieldErrors) -> Option<Valid> {
    let name = ServiceName::parse(&form.name).map_err(|e| errors.add("name", e)).ok();
    if name.as_ref().is_some_and(|n| RESERVED_NAMES.contains(&n.as_str())) {
        errors.add("name", "This name is reserved; choose another.");
    }
    if form.description.chars().count() > 500 || form.version.chars().count() > 50 {
        errors.add("description", "Keep the description under 500 and the version under 50 characters.");
    }
    let url = parse_upstream_url(&form.upstream_url).map_err(|e| errors.add("upstream_url", e)).ok();
    // A new value for a stored header is one more `Name: value` line.
    let replaced = form.stored.iter().filter(|s| !s.remove && !s.value.trim().is_empty());
    let lines: Vec<String> = replaced
        .map(|s| format!("{}: {}", s.name, s.value))
        .chain(form.headers.lines().map(str::to_owned))
        .collect();
    let headers = parse_headers(&lines.join("\n")).map_err(|e| errors.add("headers", e)).ok();
    let token = match form.token_service_name.trim() {
        "" => None,
        raw => ServiceName::parse(raw).map_err(|e| errors.add("token_service_name", e)).ok(),
    };
    let placement = match form.credential_header.trim() {
        "" => None,
        raw => CredentialPlacement::parse(raw).map_err(|e| errors.add("credential_header", e)).ok(),
    };
    if form.token_service_name.trim().is_empty() != form.credential_header.trim().is_empty() {
        errors.add("credential_header", "Give both the token name and where it goes, or neither.");
    }
    let timeout = form.timeout_seconds.trim().parse::<i32>().ok().filter(|t| (1..=600).contains(t));
    if timeout.is_none() {
        errors.add("timeout_seconds", "Enter a timeout from 1 to 600 seconds.");
    }
    let no_errors = !errors.has("name")
        && !errors.has("description")
        && !errors.has("token_service_name")
        && !errors.has("credential_header");
    match (name, url, headers, timeout, no_errors) {
        (Some(name), Some(url), Some(new_headers), Some(timeout), true) => Some(Valid {
            name,
            url: url.to_string(),
            new_headers,
            removed: form.stored.iter().filter(|s| s.remove).map(|s| s.name.clone()).collect(),
            token,
            placement,
            timeout_ms: timeout * 1000,
        }),
        _ => None,
    }
}

fn fields<'a>(
    form: &'a ServiceForm,
    valid: &'a Valid,
    placement: &'a Option<String>,
    headers: &'a [SealedHeader],
) -> ServiceFields<'a> {
    ServiceFields {
        name: valid.name.as_str(),
        description: form.description.trim(),
        version: form.version.trim(),
        is_public: form.is_public.is_some(),
        upstream_url: &valid.url,
        headers,
        token_service_name: valid.token.as_ref().map(|t| t.as_str()),
        token_placement: placement.as_deref(),
        timeout_ms: valid.timeout_ms,
    }
}

/// What the audit trail keeps of a service: its settings without header values.
fn audit_view(name: &str, url: &str, headers: &[SealedHeader], token: Option<&str>) -> serde_json::Value {
    let header_names: Vec<&str> = headers.iter().map(|h| h.name.as_str()).collect();
    json!({ "name": name, "upstream_url": url, "header_names": header_names, "token_name": token })
}

/// The stored headers that stay (not removed, not given a new value), then the new ones.
fn merged_headers(
    stored: &[SealedHeader],
    valid: &Valid,
    sealed_new: Vec<SealedHeader>,
) -> Vec<SealedHeader> {
    let replaced = |name: &str| {
        valid.removed.iter().chain(valid.new_headers.keys()).any(|n| n.eq_ignore_ascii_case(name))
    };
    let mut headers: Vec<SealedHeader> = stored.iter().filter(|h| !replaced(&h.name)).cloned().collect();
    headers.extend(sealed_new);
    headers.sort_by_key(|h| h.name.to_ascii_lowercase());
    headers
}

pub async fn create(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    save(user, state, session, None, ServiceForm::from_pairs(form.into_inner())).await
}

pub async fn update(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    name: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    save(user, state, session, Some(name.into_inner()), ServiceForm::from_pairs(form.into_inner())).await
}

/// The form again, with the errors, its stored headers as they are and no header value typed
/// in: a secret is never written back into a page.
fn refused_form(
    state: &AppState,
    user: &CurrentUser,
    editing: Option<String>,
    mut form: ServiceForm,
    mut errors: FieldErrors,
    existing: Option<&ServiceRow>,
) -> Result<HttpResponse, AppError> {
    form.show_stored(existing);
    if form.forget_values() {
        errors.add("headers", "Header values are not shown again: enter them again.");
    }
    render(StatusCode::UNPROCESSABLE_ENTITY, &form_page(state, user, editing, form, errors))
}

async fn save(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    editing: Option<String>,
    form: ServiceForm,
) -> Result<HttpResponse, AppError> {
    let now = state.clock.now();
    let existing = match &editing {
        Some(name) => Some(
            db::services::find_own(state.db.acquire().await?.conn(), user.organization_id, name)
                .await?
                .ok_or(AppError::NotFound)?,
        ),
        None => None,
    };
    let mut errors = FieldErrors::default();
    let mut valid = validate(&form, &mut errors);
    // A name can take a while to resolve: before the transaction. A name that does not resolve
    // yet is accepted; every connection checks the address it reaches.
    if let Ok(url) = parse_upstream_url(&form.upstream_url)
        && let Err(refused @ Refused::NotPublic(_)) = state.gateway.policy().check_url(&url).await
    {
        errors.add("upstream_url", format!("Not saved: {refused}."));
        valid = None;
    }
    let Some(valid) = valid else {
        return refused_form(&state, &user, editing, form, errors, existing.as_ref());
    };
    let id = existing.as_ref().map_or_else(ServiceId::new, |s| s.id);
    // Sealed before the transaction, which holds SQLite's write lock that sealing may need.
    let sealed_new =
        crate::crypto::headers::seal(&state.keyring, &state.db, now, id, &valid.new_headers).await?;

    let mut tx = state.db.begin().await?;
    let current = match &editing {
        Some(name) => Some(
            db::services::find_own(tx.conn(), user.organization_id, name).await?.ok_or(AppError::NotFound)?,
        ),
        None => None,
    };
    if current.as_ref().is_some_and(|c| c.id != id) {
        return Err(AppError::Conflict("This service was deleted and made again meanwhile.".into()));
    }
    if db::services::system_name_exists(tx.conn(), valid.name.as_str()).await? {
        drop(tx);
        errors.add("name", format!("{} is a system service's name.", valid.name));
        return refused_form(&state, &user, editing, form, errors, existing.as_ref());
    }
    if current.is_none() {
        let (plan, used) = super::organization::plan_and_use(&mut tx, &state, user.organization_id).await?;
        if let Some(message) =
            super::organization::over_limit(&plan, "services", plan.services, used.services, 1)
        {
            drop(tx);
            errors.add("name", message);
            return refused_form(&state, &user, editing, form, errors, existing.as_ref());
        }
    }
    let stored = current.as_ref().map_or(&[][..], |c| &c.sealed_headers[..]);
    let headers = merged_headers(stored, &valid, sealed_new);
    let placement = valid.placement.as_ref().map(|p| p.to_string());
    let row = fields(&form, &valid, &placement, &headers);
    let written = match &current {
        Some(_) => db::services::update(tx.conn(), user.organization_id, id, &row, now).await.map(|_| ()),
        None => db::services::insert(tx.conn(), user.organization_id, id, &row, now).await,
    };
    if let Err(e) = written {
        if unique_violation(&e).is_some() {
            drop(tx);
            errors.add("name", "A service with this name already exists.");
            return refused_form(&state, &user, editing, form, errors, existing.as_ref());
        }
        return Err(e.into());
    }
    let token = valid.token.as_ref().map(|t| t.as_str());
    audited(
        tx.conn(),
        &user,
        if current.is_some() { Action::ServiceUpdated } else { Action::ServiceCreated },
        id,
        current.as_ref().map(|s| {
            audit_view(
                &s.name,
                s.upstream_url.as_deref().unwrap_or(""),
                &s.sealed_headers,
                s.token_service_name.as_deref(),
            )
        }),
        Some(audit_view(valid.name.as_str(), &valid.url, &headers, token)),
        now,
    )
    .await?;
    tx.commit().await?;
    // The gateway may keep the service under its old name and under its new one.
    for name in current.iter().map(|c| c.name.as_str()).chain([valid.name.as_str()]) {
        state.changed(Change::Service { organization_id: user.organization_id, name: name.to_owned() }).await;
    }
    let done = if current.is_some() { "saved" } else { "created" };
    session.put_notice(format!("Service {} {done}.", valid.name))?;
    Ok(see_other(&format!("/services/{}", valid.name)))
}

pub async fn confirm_delete(
    user: CurrentUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let service = db::services::find_own(state.db.acquire().await?.conn(), user.organization_id, &name)
        .await?
        .ok_or(AppError::NotFound)?;
    let confirm = Confirm {
        question: format!("Delete service {}?", service.name),
        consequence: format!(
            "/mcp/{} stops answering at once for every member and API key; its request logs and usage stay.",
            service.name
        ),
        verb: "Delete",
        action: format!("/services/{}/delete", service.name),
        fields: Vec::new(),
        back: "/services",
    };
    confirm::page(&user, &state, confirm)
}

pub async fn delete(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
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
        &service.sealed_headers,
        service.token_service_name.as_deref(),
    );
    audited(tx.conn(), &user, Action::ServiceDeleted, service.id, Some(before), None, now).await?;
    tx.commit().await?;
    session.put_notice(format!("Service {} was deleted.", service.name))?;
    state.changed(Change::Service { organization_id: user.organization_id, name: service.name }).await;
    Ok(see_other("/services"))
}
