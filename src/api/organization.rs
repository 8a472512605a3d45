//! The caller's organization (`admin:organization`) and its members (`admin:users`), changed
//! through the same rules as the dashboard's settings and members pages, and audited alike.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Envelope, ErrorBody, Page, answer, answer_with, caller, owner, paged, path_id};
use crate::app::AppState;
use crate::db;
use crate::db::users::User;
use crate::domain::Scope;
use crate::ids::{OrgId, UserId};
use crate::web::members::InviteForm;
use crate::web::{invitations, members, organization as settings};

/// The caller's organization.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Organization {
    id: String,
    name: String,
    slug: String,
    plan: String,
    contact_email: Option<String>,
    /// Preselected expiry of new API keys, in days.
    default_key_expiry_days: u16,
    retention: Retention,
    created_at: DateTime<Utc>,
}

/// How long the organization keeps what it records, in days.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Retention {
    /// Request logs: 7 to 730.
    #[schema(minimum = 7, maximum = 730)]
    request_logs: u16,
    /// Usage roll-ups: 30 to 3650.
    #[schema(minimum = 30, maximum = 3650)]
    usage: u16,
    /// The audit trail: 30 to 3650.
    #[schema(minimum = 30, maximum = 3650)]
    audit: u16,
}

async fn organization(
    state: &AppState,
    id: OrgId,
) -> Result<(db::organizations::Organization, Organization), ApiError> {
    let found = db::organizations::find(state.db.acquire().await?.conn(), id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let settings = &found.settings;
    let shown = Organization {
        id: found.id.to_string(),
        name: found.name.clone(),
        slug: found.slug.clone(),
        plan: found.plan.clone(),
        contact_email: found.contact_email.clone(),
        default_key_expiry_days: settings.default_key_expiry_days,
        retention: Retention {
            request_logs: settings.log_retention_days,
            usage: settings.rollup_retention_days,
            audit: settings.audit_retention_days,
        },
        created_at: found.created_at,
    };
    Ok((found, shown))
}

/// The caller's organization, its plan and settings.
#[utoipa::path(get, path = "/api/v1/organizations/me", responses(
    (status = 200, description = "`data` is the organization", body = Envelope<Organization>),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:organization)", body = ErrorBody),
))]
pub(super) async fn show(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::AdminOrganization)).await?;
    let (_, shown) = organization(&state, principal.organization_id).await?;
    Ok(answer(&req, &state, shown, None))
}

/// The settings to change; what is left out stays.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SettingsChange {
    name: Option<String>,
    contact_email: Option<String>,
    /// 30, 90 or 365.
    #[schema(minimum = 30, maximum = 365)]
    default_key_expiry_days: Option<u16>,
    retention: Option<Retention>,
}

/// Changes the organization's settings (audited); the answer is the organization as it is now.
#[utoipa::path(patch, path = "/api/v1/organizations/me", request_body = SettingsChange, responses(
    (status = 200, description = "`data` is the organization, changed", body = Envelope<Organization>),
    (status = 400, description = "VALIDATION_ERROR (at `details.fields`)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:organization)", body = ErrorBody),
))]
pub(super) async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SettingsChange>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &req, Scope::AdminOrganization).await?;
    let (found, _) = organization(&state, owner.principal.organization_id).await?;
    let change = body.into_inner();
    let mut form = settings::form_of(&found);
    if let Some(name) = change.name {
        form.name = name;
    }
    if let Some(contact) = change.contact_email {
        form.contact_email = contact;
    }
    if let Some(days) = change.default_key_expiry_days {
        form.default_key_expiry_days = days.to_string();
    }
    if let Some(retention) = change.retention {
        form.log_retention_days = retention.request_logs.to_string();
        form.rollup_retention_days = retention.usage.to_string();
        form.audit_retention_days = retention.audit.to_string();
    }
    settings::update(&state, &owner, &found, &form).await?.map_err(|errors| ApiError::fields(&errors))?;
    let (_, shown) = organization(&state, owner.principal.organization_id).await?;
    Ok(answer(&req, &state, shown, None))
}

/// A member of the caller's organization.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Member {
    id: String,
    email: String,
    /// `admin`, `developer` or `viewer`.
    role: String,
    active: bool,
    last_login_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<User> for Member {
    fn from(user: User) -> Member {
        Member {
            id: user.id.to_string(),
            email: user.email,
            role: user.role.as_str().to_owned(),
            active: user.is_active,
            last_login_at: user.last_login_at,
            created_at: user.created_at,
        }
    }
}

/// The members of the caller's organization, by email.
#[utoipa::path(get, path = "/api/v1/organizations/me/users", params(Page), responses(
    (status = 200, description = "`data` is a page of members", body = Envelope<Vec<Member>>),
    (status = 400, description = "VALIDATION_ERROR (limit or cursor)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:users)", body = ErrorBody),
))]
pub(super) async fn members(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller(&state, &req, Some(Scope::AdminUsers)).await?;
    let mut conn = state.db.acquire().await?;
    let listed: Vec<Member> = db::users::list_members(conn.conn(), principal.organization_id)
        .await?
        .into_iter()
        .map(Member::from)
        .collect();
    let (page, next) = paged(listed, &page, |m| &m.id)?;
    Ok(answer(&req, &state, page, next))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleChange {
    /// `admin`, `developer` or `viewer`. A viewer's API keys are revoked.
    role: String,
}

/// Gives a member another role (audited). The last active admin keeps theirs.
#[utoipa::path(patch, path = "/api/v1/organizations/me/users/{id}", request_body = RoleChange, params(("id" = uuid::Uuid, Path, description = "The member's id")), responses(
    (status = 200, description = "`data` is the member, changed", body = Envelope<Member>),
    (status = 400, description = "VALIDATION_ERROR (id or role)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:users)", body = ErrorBody),
    (status = 404, description = "RESOURCE_NOT_FOUND (not a member of the caller's organization)", body = ErrorBody),
    (status = 409, description = "CONFLICT (the last active admin)", body = ErrorBody),
))]
pub(super) async fn change_role(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<RoleChange>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &req, Scope::AdminUsers).await?;
    let id: UserId = path_id(&id)?;
    let (mut member, role, _) = match members::set_role(&state, &owner, id, &body.role).await? {
        Ok(changed) => changed,
        Err(message) if message == members::LAST_ADMIN => {
            return Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", message));
        }
        Err(message) => return Err(ApiError::invalid("role", message)),
    };
    member.role = role;
    Ok(answer(&req, &state, Member::from(member), None))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewInvitation {
    email: String,
    /// `admin`, `developer` or `viewer`.
    role: String,
}

/// An invitation's single-use link, valid for 7 days: send it to the invitee.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Invitation {
    email: String,
    role: String,
    url: String,
}

/// Invites someone to the organization by email and role (audited).
#[utoipa::path(post, path = "/api/v1/organizations/me/invitations", request_body = NewInvitation, responses(
    (status = 201, description = "`data.url` is the invitation's link", body = Envelope<Invitation>),
    (status = 400, description = "VALIDATION_ERROR (email: not an address, a member already, invited already, or the plan is full; role)", body = ErrorBody),
    (status = 401, description = "AUTH_INVALID_CREDENTIALS or AUTH_TOKEN_EXPIRED", body = ErrorBody),
    (status = 403, description = "AUTH_INSUFFICIENT_SCOPE (admin:users)", body = ErrorBody),
))]
pub(super) async fn invite(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<NewInvitation>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &req, Scope::AdminUsers).await?;
    let NewInvitation { email, role } = body.into_inner();
    let form = InviteForm { email, role };
    let base = crate::web::public_base(&state, &req);
    let link = invitations::invite_one(&state, &owner, &base, &form)
        .await?
        .map_err(|errors| ApiError::fields(&errors))?;
    let invitation = Invitation { email: link.email, role: link.role.as_str().to_owned(), url: link.url };
    Ok(answer_with(StatusCode::CREATED, &req, &state, invitation, None))
}
