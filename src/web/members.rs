//! Members (admins): the directory with search, filters and pagination; role changes;
//! deactivation and reactivation. The last active admin of an organization can be neither
//! demoted nor deactivated. Invitations live in `invitations`.

use crate::ids::UserId;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::confirm::{self, Confirm};
use super::filters;
use super::{Actor, FieldErrors, Layout, audited, parse_id, render, see_other};
use crate::app::AppState;

use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::db::audit::Action;
use crate::db::invitations::PendingInvitation;
use crate::db::users::{MemberFilter, User};
use crate::db::{self, Tx};
use crate::domain::Role;
use crate::error::AppError;
use crate::gateway::cache::Change;

const PAGE_SIZE: i64 = 50;
pub const LAST_ADMIN: &str = "This is the last active admin: make someone else admin first.";
#[derive(Deserialize, Default)]
pub struct DirectoryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

#[derive(Deserialize, Default)]
pub struct InviteForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub role: String,
}

#[derive(Template)]
#[template(path = "members/list.html")]
pub struct MembersPage {
    layout: Layout,
    members: Vec<User>,
    query: DirectoryQuery,
    next_after: Option<String>,
    invitations: Vec<PendingInvitation>,
    invite: InviteForm,
    invite_errors: FieldErrors,
    csv: String,
    csv_errors: Vec<String>,
    /// An action refused on one member's row: whose, and why.
    row_error: Option<(UserId, String)>,
    roles: [Role; 3],
}

/// Everything the members page shows besides the forms.
pub(super) struct PageParts {
    pub(super) query: DirectoryQuery,
    pub(super) invite: InviteForm,
    pub(super) invite_errors: FieldErrors,
    pub(super) csv: String,
    pub(super) csv_errors: Vec<String>,
    pub(super) row_error: Option<(UserId, String)>,
}

impl Default for PageParts {
    fn default() -> Self {
        PageParts {
            query: DirectoryQuery::default(),
            invite: InviteForm { email: String::new(), role: Role::Developer.as_str().into() },
            invite_errors: FieldErrors::default(),
            csv: String::new(),
            csv_errors: Vec::new(),
            row_error: None,
        }
    }
}

pub(super) async fn members_page(
    state: &AppState,
    user: &CurrentUser,
    parts: PageParts,
) -> Result<MembersPage, AppError> {
    let now = state.clock.now();
    let query = parts.query;
    let filter = MemberFilter {
        query: &query.q.trim().to_lowercase(),
        role: Role::parse(&query.role).ok(),
        active: match query.status.as_str() {
            "active" => Some(true),
            "deactivated" => Some(false),
            _ => None,
        },
        after: &query.after,
    };
    let mut conn = state.db.acquire().await?;
    let mut members = db::users::search(conn.conn(), user.organization_id, &filter, PAGE_SIZE + 1).await?;
    let next_after = (members.len() as i64 > PAGE_SIZE).then(|| {
        members.truncate(PAGE_SIZE as usize);
        members.last().map(|m| m.email.clone()).unwrap_or_default()
    });
    let invitations = db::invitations::list_pending(conn.conn(), user.organization_id, now).await?;
    Ok(MembersPage {
        layout: Layout::signed_in("Members", "/members", user, state),
        members,
        query,
        next_after,
        invitations,
        invite: parts.invite,
        invite_errors: parts.invite_errors,
        csv: parts.csv,
        csv_errors: parts.csv_errors,
        row_error: parts.row_error,
        roles: Role::ALL,
    })
}

pub async fn list(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<DirectoryQuery>,
) -> Result<HttpResponse, AppError> {
    let parts = PageParts { query: query.into_inner(), ..PageParts::default() };
    render(StatusCode::OK, &members_page(&state, &user, parts).await?)
}

/// Refuses a change that would leave the organization without an active admin.
async fn keeps_an_admin(tx: &mut Tx, user: &impl Actor, member: &User) -> Result<bool, AppError> {
    if member.role != Role::Admin || !member.is_active {
        return Ok(true);
    }
    Ok(db::users::count_active_admins(tx.conn(), user.organization_id()).await? > 1)
}

pub(super) async fn refuse_on_row(
    state: &AppState,
    user: &CurrentUser,
    id: UserId,
    message: &str,
) -> Result<HttpResponse, AppError> {
    let parts = PageParts { row_error: Some((id, message.to_owned())), ..PageParts::default() };
    render(StatusCode::UNPROCESSABLE_ENTITY, &members_page(state, user, parts).await?)
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

/// Asks before a role changes, saying what the member gains or loses.
pub async fn confirm_role(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<RoleForm>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let mut conn = state.db.acquire().await?;
    let member =
        db::users::find_member(conn.conn(), user.organization_id, id).await?.ok_or(AppError::NotFound)?;
    let Ok(role) = Role::parse(&query.role) else {
        drop(conn);
        return refuse_on_row(&state, &user, id, "Choose admin, developer or viewer.").await;
    };
    let consequence = match role {
        _ if role == member.role => format!("{} is a {role} already: nothing changes.", member.email),
        Role::Admin => {
            "They can manage members, services, every API key and the organization's settings.".to_owned()
        }
        Role::Developer if member.role == Role::Admin => {
            "They lose the admin pages (members, organization, audit trail) at once; their API keys stay."
                .to_owned()
        }
        Role::Developer => {
            "They can create API keys, store service tokens and read their own request log.".to_owned()
        }
        Role::Viewer => {
            let keys = db::api_keys::count_unrevoked_for_user(conn.conn(), user.organization_id, id).await?;
            format!(
                "Viewers hold no API keys: {} revoked at once, and a later promotion does not bring them back. They keep reading usage.",
                match keys {
                    1 => "their 1 API key is".to_owned(),
                    n => format!("their {} are", confirm::counted(n, "API key")),
                }
            )
        }
    };
    let confirm = Confirm {
        question: format!("Make {} {} {role}?", member.email, confirm::a_or_an(role.as_str())),
        consequence,
        verb: "Change the role",
        action: format!("/members/{id}/role"),
        fields: vec![("role", role.as_str().to_owned())],
        back: "/members",
    };
    confirm::page(&user, &state, confirm)
}

/// Gives the member `role` (as typed; audited): the member as they were, their new role and how
/// many of their keys were revoked with it; or why not.
pub async fn set_role(
    state: &AppState,
    user: &impl Actor,
    id: UserId,
    role: &str,
) -> Result<Result<(User, Role, u64), &'static str>, AppError> {
    let now = state.clock.now();
    let organization_id = user.organization_id();
    let mut tx = state.db.begin().await?;
    db::organizations::lock(tx.conn(), organization_id).await?;
    let member = db::users::find_member(tx.conn(), organization_id, id).await?.ok_or(AppError::NotFound)?;
    let Ok(role) = Role::parse(role) else { return Ok(Err("Choose admin, developer or viewer.")) };
    if role == member.role {
        return Ok(Ok((member, role, 0)));
    }
    if role != Role::Admin && !keeps_an_admin(&mut tx, user, &member).await? {
        return Ok(Err(LAST_ADMIN));
    }
    db::users::set_role(tx.conn(), organization_id, id, role, now).await?;
    // A viewer holds no keys: theirs are revoked, so a later promotion does not bring them back.
    let revoked = match role {
        Role::Viewer => db::api_keys::revoke_all_for_user(tx.conn(), organization_id, id, now).await?,
        _ => 0,
    };
    audited(
        tx.conn(),
        user,
        Action::MemberRoleChanged,
        id,
        Some(json!({ "email": member.email, "role": member.role.as_str() })),
        Some(json!({ "email": member.email, "role": role.as_str(), "keys_revoked": revoked })),
        now,
    )
    .await?;
    tx.commit().await?;
    state.changed(Change::Member(id)).await;
    Ok(Ok((member, role, revoked)))
}

pub async fn change_role(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
    form: web::Form<RoleForm>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let (member, role, revoked) = match set_role(&state, &user, id, &form.role).await? {
        Ok(changed) => changed,
        Err(message) => return refuse_on_row(&state, &user, id, message).await,
    };
    if role == member.role {
        return Ok(see_other("/members"));
    }
    let revoked = match revoked {
        0 => String::new(),
        n => format!("; {} revoked", confirm::counted(n as i64, "API key")),
    };
    session.put_notice(format!(
        "{} is now {} {role}{revoked}.",
        member.email,
        confirm::a_or_an(role.as_str())
    ))?;
    Ok(see_other("/members"))
}

/// Deactivates a member: their sessions end at once and their API keys are revoked.
pub async fn confirm_deactivate(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let mut conn = state.db.acquire().await?;
    let member =
        db::users::find_member(conn.conn(), user.organization_id, id).await?.ok_or(AppError::NotFound)?;
    let keys = db::api_keys::count_unrevoked_for_user(conn.conn(), user.organization_id, id).await?;
    let keys = match keys {
        0 => "They hold no API key.".to_owned(),
        1 => {
            "Their 1 API key is revoked and stops working at once; reactivating them does not bring it back."
                .to_owned()
        }
        n => format!(
            "Their {n} API keys are revoked and stop working at once; reactivating them does not bring them back."
        ),
    };
    let confirm = Confirm {
        question: format!("Deactivate {}?", member.email),
        consequence: format!("They are signed out everywhere and cannot sign in. {keys}"),
        verb: "Deactivate",
        action: format!("/members/{id}/deactivate"),
        fields: Vec::new(),
        back: "/members",
    };
    confirm::page(&user, &state, confirm)
}

pub async fn deactivate(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    set_active(user, state, session, id, false).await
}

pub async fn confirm_erase_logs(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let member = db::users::find_member(state.db.acquire().await?.conn(), user.organization_id, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let confirm = Confirm {
        question: format!("Erase the request logs of {}?", member.email),
        consequence: "Every logged call of theirs is deleted, with its bodies; usage counts stay, without their name. This cannot be undone.".to_owned(),
        verb: "Erase",
        action: format!("/members/{id}/erase-logs"),
        fields: Vec::new(),
        back: "/members",
    };
    confirm::page(&user, &state, confirm)
}

/// Erases the member's request logs (a data-subject request): the rows go; the usage roll-ups
/// keep their counts without the member. Recorded in the audit trail with the number of rows.
pub async fn erase_logs(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let member = db::users::find_member(state.db.acquire().await?.conn(), user.organization_id, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let erased = crate::telemetry::retention::erase_member(
        &state.db,
        user.organization_id,
        member.id,
        crate::telemetry::retention::BATCH,
    )
    .await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    audited(
        tx.conn(),
        &user,
        Action::MemberLogsErased,
        id,
        None,
        Some(json!({ "email": member.email, "request_log_rows": erased })),
        now,
    )
    .await?;
    tx.commit().await?;
    let erased = confirm::counted(erased as i64, "request-log row");
    session.put_notice(format!("{erased} of {} erased.", member.email))?;
    Ok(see_other("/members"))
}

/// Reactivates a member. Their keys were revoked at deactivation and stay revoked.
pub async fn reactivate(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    set_active(user, state, session, id, true).await
}

async fn set_active(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
    active: bool,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    db::organizations::lock(tx.conn(), user.organization_id).await?;
    let member =
        db::users::find_member(tx.conn(), user.organization_id, id).await?.ok_or(AppError::NotFound)?;
    if member.is_active == active {
        return Ok(see_other("/members"));
    }
    if !active && id == user.id {
        drop(tx);
        return refuse_on_row(&state, &user, id, "You cannot deactivate yourself.").await;
    }
    if !active && !keeps_an_admin(&mut tx, &user, &member).await? {
        drop(tx);
        return refuse_on_row(&state, &user, id, LAST_ADMIN).await;
    }
    db::users::set_active(tx.conn(), user.organization_id, id, active, now).await?;
    // Deactivation ends the member's sessions and revokes their keys, so a reactivation starts
    // from nothing that was out in the world meanwhile.
    let (ended, revoked) = if active {
        (0, 0)
    } else {
        (
            db::sessions::delete_all_for_user(tx.conn(), id).await?,
            db::api_keys::revoke_all_for_user(tx.conn(), user.organization_id, id, now).await?,
        )
    };
    audited(tx.conn(), &user, if active { Action::MemberReactivated } else { Action::MemberDeactivated }, id, Some(json!({ "email": member.email, "active": member.is_active })), Some(
            json!({ "email": member.email, "active": active, "sessions_ended": ended, "keys_revoked": revoked }),
        ), now).await?;
    tx.commit().await?;
    state.changed(Change::Member(id)).await;
    let notice = if active {
        format!("{} was reactivated; they can sign in again.", member.email)
    } else {
        format!(
            "{} was deactivated: {} ended, {} revoked.",
            member.email,
            confirm::counted(ended as i64, "session"),
            confirm::counted(revoked as i64, "API key")
        )
    };
    session.put_notice(notice)?;
    Ok(see_other("/members"))
}
