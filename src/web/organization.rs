//! Organization settings (admins): name, contact email, the plan's limits (read-only) and the
//! settings as typed fields.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::{Actor, FieldErrors, Layout, audited, filters, render};
use crate::app::AppState;

use crate::auth::gate::CurrentUser;
use crate::catalog::plans::Plan;
use crate::db;
use crate::db::audit::Action;
use crate::db::organizations::{Organization, PlanUse, Settings};
use crate::domain::{Email, OrganizationName};
use crate::error::AppError;

pub const KEY_EXPIRY_CHOICES: [u16; 3] = [30, 90, 365];
const RETENTION_RANGE: std::ops::RangeInclusive<u16> = 7..=730;
/// Roll-ups and the audit trail: from a month to ten years.
const LONG_RETENTION_RANGE: std::ops::RangeInclusive<u16> = 30..=3650;

#[derive(Deserialize, Default)]
pub struct SettingsForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub contact_email: String,
    #[serde(default)]
    pub default_key_expiry_days: String,
    #[serde(default)]
    pub log_retention_days: String,
    #[serde(default)]
    pub rollup_retention_days: String,
    #[serde(default)]
    pub audit_retention_days: String,
}

#[derive(Template)]
#[template(path = "organization/settings.html")]
pub struct SettingsPage {
    layout: Layout,
    plan: Plan,
    used: PlanUse,
    form: SettingsForm,
    errors: FieldErrors,
    expiry_choices: [u16; 3],
    notice: Option<&'static str>,
}

/// The form as the organization's settings fill it.
pub fn form_of(org: &Organization) -> SettingsForm {
    SettingsForm {
        name: org.name.clone(),
        contact_email: org.contact_email.clone().unwrap_or_default(),
        default_key_expiry_days: org.settings.default_key_expiry_days.to_string(),
        log_retention_days: org.settings.log_retention_days.to_string(),
        rollup_retention_days: org.settings.rollup_retention_days.to_string(),
        audit_retention_days: org.settings.audit_retention_days.to_string(),
    }
}

/// The organization's plan and what it uses of it, read on `conn` (a form's transaction).
pub async fn plan_and_use(
    conn: &mut crate::db::Tx,
    state: &AppState,
    organization_id: crate::ids::OrgId,
) -> Result<(Plan, PlanUse), AppError> {
    let org = db::organizations::find(conn.conn(), organization_id).await?.ok_or(AppError::NotFound)?;
    let used = db::organizations::plan_use(conn.conn(), organization_id, state.clock.now()).await?;
    Ok((state.plans.of(&org.plan).clone(), used))
}

/// The form error for adding `adding` more to `used` past the plan's `limit`, if it would pass.
pub fn over_limit(plan: &Plan, what: &str, limit: Option<u32>, used: i64, adding: i64) -> Option<String> {
    let limit = limit?;
    (used + adding > i64::from(limit)).then(|| {
        format!(
            "The {} plan allows {limit} {what}, and the organization has {used}. Remove one, or ask the operator for a larger plan.",
            plan.name
        )
    })
}

async fn organization(state: &AppState, user: &CurrentUser) -> Result<Organization, AppError> {
    db::organizations::find(state.db.acquire().await?.conn(), user.organization_id)
        .await?
        .ok_or(AppError::NotFound)
}

async fn page(
    state: &AppState,
    user: &CurrentUser,
    org: &Organization,
    form: SettingsForm,
    errors: FieldErrors,
) -> Result<SettingsPage, AppError> {
    let used =
        db::organizations::plan_use(state.db.acquire().await?.conn(), org.id, state.clock.now()).await?;
    Ok(SettingsPage {
        layout: Layout::signed_in("Organization", "/organization", user, state),
        plan: state.plans.of(&org.plan).clone(),
        used,
        form,
        errors,
        expiry_choices: KEY_EXPIRY_CHOICES,
        notice: None,
    })
}

pub async fn show(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let org = organization(&state, &user).await?;
    render(StatusCode::OK, &page(&state, &user, &org, form_of(&org), FieldErrors::default()).await?)
}

pub async fn save(
    user: CurrentUser,
    state: web::Data<AppState>,
    form: web::Form<SettingsForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let org = organization(&state, &user).await?;
    if let Err(errors) = update(&state, &user, &org, &form).await? {
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page(&state, &user, &org, form, errors).await?);
    }
    let org = organization(&state, &user).await?;
    // The signed-in user's layout shows the new name at once.
    let user = CurrentUser { organization_name: org.name.clone(), ..user };
    let mut saved = page(&state, &user, &org, form_of(&org), FieldErrors::default()).await?;
    saved.notice = Some("Settings saved.");
    render(StatusCode::OK, &saved)
}

/// Saves the settings as typed (audited), or says what is wrong at each field.
pub async fn update(
    state: &AppState,
    user: &impl Actor,
    org: &Organization,
    form: &SettingsForm,
) -> Result<Result<(), FieldErrors>, AppError> {
    let mut errors = FieldErrors::default();
    let name = OrganizationName::parse(&form.name).map_err(|e| errors.add("name", e)).ok();
    let contact = Email::parse(&form.contact_email).map_err(|e| errors.add("contact_email", e)).ok();
    let expiry =
        form.default_key_expiry_days.trim().parse::<u16>().ok().filter(|d| KEY_EXPIRY_CHOICES.contains(d));
    if expiry.is_none() {
        errors.add("default_key_expiry_days", "Choose 30, 90 or 365 days.");
    }
    let mut days = |field: &'static str, raw: &str, range: std::ops::RangeInclusive<u16>| {
        let parsed = raw.trim().parse::<u16>().ok().filter(|d| range.contains(d));
        if parsed.is_none() {
            errors.add(field, format!("Enter a number of days from {} to {}.", range.start(), range.end()));
        }
        parsed
    };
    let retention = days("log_retention_days", &form.log_retention_days, RETENTION_RANGE);
    let rollups = days("rollup_retention_days", &form.rollup_retention_days, LONG_RETENTION_RANGE);
    let audit = days("audit_retention_days", &form.audit_retention_days, LONG_RETENTION_RANGE);
    let (Some(name), Some(contact), Some(expiry), Some(retention), Some(rollups), Some(audit)) =
        (name, contact, expiry, retention, rollups, audit)
    else {
        return Ok(Err(errors));
    };
    let settings = Settings {
        default_key_expiry_days: expiry,
        log_retention_days: retention,
        rollup_retention_days: rollups,
        audit_retention_days: audit,
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    db::organizations::update(tx.conn(), org.id, name.as_str(), contact.as_str(), settings, now).await?;
    audited(
        tx.conn(),
        user,
        Action::OrganizationUpdated,
        org.id,
        Some(json!({ "name": org.name, "contact_email": org.contact_email, "settings": *org.settings })),
        Some(json!({ "name": name.as_str(), "contact_email": contact.as_str(), "settings": settings })),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}
