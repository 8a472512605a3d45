//! Members (admins): the directory with search, filters and pagination; invitations (single
//! and from CSV) with single-use links; role changes; deactivation and reactivation. The last
//! active admin of an organization can be neither demoted nor deactivated.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Layout, audit_by, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::gate::CurrentUser;
use crate::db::invitations::PendingInvitation;
use crate::db::users::{MemberFilter, User};
use crate::db::{self, Tx, audit};
use crate::domain::{Email, Role};
use crate::error::AppError;

const PAGE_SIZE: i64 = 50;
pub const INVITATION_DAYS: i64 = 7;
const MAX_CSV_LINES: usize = 500;

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
    email: String,
    #[serde(default)]
    role: String,
}

#[derive(Default)]
pub struct InviteErrors {
    email: Option<String>,
    role: Option<String>,
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
    invite_errors: InviteErrors,
    csv: String,
    csv_errors: Vec<String>,
    /// An action refused on one member's row: whose, and why.
    row_error: Option<(Uuid, String)>,
    roles: [Role; 3],
}

/// One invitation link, shown once right after it is made.
pub struct NewLink {
    email: String,
    role: Role,
    url: String,
}

#[derive(Template)]
#[template(path = "members/invited.html")]
pub struct InvitedPage {
    layout: Layout,
    links: Vec<NewLink>,
}

/// Everything the members page shows besides the forms.
struct PageParts {
    query: DirectoryQuery,
    invite: InviteForm,
    invite_errors: InviteErrors,
    csv: String,
    csv_errors: Vec<String>,
    row_error: Option<(Uuid, String)>,
}

impl Default for PageParts {
    fn default() -> Self {
        PageParts {
            query: DirectoryQuery::default(),
            invite: InviteForm { email: String::new(), role: Role::Developer.as_str().into() },
            invite_errors: InviteErrors::default(),
            csv: String::new(),
            csv_errors: Vec::new(),
            row_error: None,
        }
    }
}

async fn members_page(
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

/// The origin invitation links point at: the configured public URL, or the one the admin used.
fn link_base(state: &AppState, req: &HttpRequest) -> String {
    match &state.settings.public_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// Checks one invitation request against the organization; the error is for the email field.
async fn check_invitee(
    tx: &mut Tx,
    user: &CurrentUser,
    email: &Email,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<(), String>, AppError> {
    if db::users::email_exists(tx.conn(), email.as_str()).await? {
        return Ok(Err(format!("{email} already has an account.")));
    }
    if db::invitations::pending_for_email(tx.conn(), user.organization_id, email.as_str(), now).await? {
        return Ok(Err(format!("{email} already has a pending invitation.")));
    }
    Ok(Ok(()))
}

/// Creates one invitation in `tx` and returns its link.
async fn create_invitation(
    tx: &mut Tx,
    user: &CurrentUser,
    client: &ClientInfo,
    base: &str,
    email: &Email,
    role: Role,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<NewLink, AppError> {
    let token = URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<32>());
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let id = Uuid::now_v7();
    let expires_at = now + Duration::days(INVITATION_DAYS);
    let invitation = db::invitations::NewInvitation {
        id,
        organization_id: user.organization_id,
        email: email.as_str(),
        role,
        token_hash: &hash,
        invited_by: user.id,
        expires_at,
    };
    db::invitations::insert(tx.conn(), invitation, now).await?;
    let entry = audit::Entry {
        target_type: Some("invitation"),
        target_id: Some(id.to_string()),
        after: Some(json!({ "email": email.as_str(), "role": role.as_str(), "expires_at": expires_at })),
        ..audit_by("invitation.created", user, client)
    };
    audit::record(tx.conn(), entry, now).await?;
    Ok(NewLink { email: email.to_string(), role, url: format!("{base}/invitations/{token}") })
}

pub async fn invite(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    form: web::Form<InviteForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let now = state.clock.now();
    let mut errors = InviteErrors::default();
    let email = Email::parse(&form.email).map_err(|e| errors.email = Some(e.into())).ok();
    let role = Role::parse(&form.role)
        .map_err(|_| errors.role = Some("Choose admin, developer or viewer.".into()))
        .ok();
    let mut tx = state.db.begin().await?;
    if let Some(email) = &email
        && let Err(message) = check_invitee(&mut tx, &user, email, now).await?
    {
        errors.email = Some(message);
    }
    let (Some(email), Some(role), None) = (email, role, &errors.email) else {
        drop(tx);
        let parts = PageParts { invite: form, invite_errors: errors, ..PageParts::default() };
        return render(StatusCode::UNPROCESSABLE_ENTITY, &members_page(&state, &user, parts).await?);
    };
    let link =
        create_invitation(&mut tx, &user, &client, &link_base(&state, &req), &email, role, now).await?;
    tx.commit().await?;
    let page = InvitedPage {
        layout: Layout::signed_in("Invitation created", "/members", &user, &state),
        links: vec![link],
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    csv: String,
}

/// Invites everyone in a pasted CSV of `email,role` lines, or no one when any line is wrong.
pub async fn invite_bulk(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    form: web::Form<BulkForm>,
) -> Result<HttpResponse, AppError> {
    let csv = form.into_inner().csv;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let mut errors = Vec::new();
    let mut valid: Vec<(Email, Role)> = Vec::new();
    let lines: Vec<(usize, &str)> =
        csv.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    if lines.is_empty() {
        errors.push("Paste at least one line: email,role".to_owned());
    } else if lines.len() > MAX_CSV_LINES {
        errors.push(format!("At most {MAX_CSV_LINES} lines at once."));
    }
    for (number, line) in lines.iter().take(MAX_CSV_LINES) {
        if *number == 1 && line.to_ascii_lowercase().replace(' ', "") == "email,role" {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [email, role] = fields[..] else {
            errors.push(format!("Line {number}: expected email,role"));
            continue;
        };
        let email = match Email::parse(email) {
            Ok(email) => email,
            Err(e) => {
                errors.push(format!("Line {number}: {e}"));
                continue;
            }
        };
        let Ok(role) = Role::parse(role) else {
            errors.push(format!("Line {number}: unknown role \"{role}\" (admin, developer or viewer)"));
            continue;
        };
        if valid.iter().any(|(seen, _)| *seen == email) {
            errors.push(format!("Line {number}: {email} appears twice"));
            continue;
        }
        if let Err(message) = check_invitee(&mut tx, &user, &email, now).await? {
            errors.push(format!("Line {number}: {message}"));
            continue;
        }
        valid.push((email, role));
    }
    if !errors.is_empty() || valid.is_empty() {
        drop(tx);
        if errors.is_empty() {
            errors.push("The CSV holds no invitations.".to_owned());
        }
        let parts = PageParts { csv, csv_errors: errors, ..PageParts::default() };
        return render(StatusCode::UNPROCESSABLE_ENTITY, &members_page(&state, &user, parts).await?);
    }
    let base = link_base(&state, &req);
    let mut links = Vec::with_capacity(valid.len());
    for (email, role) in &valid {
        links.push(create_invitation(&mut tx, &user, &client, &base, email, *role, now).await?);
    }
    tx.commit().await?;
    let page =
        InvitedPage { layout: Layout::signed_in("Invitations created", "/members", &user, &state), links };
    render(StatusCode::OK, &page)
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound)
}

pub async fn revoke_invitation(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let email =
        db::invitations::revoke(tx.conn(), user.organization_id, id, now).await?.ok_or(AppError::NotFound)?;
    let entry = audit::Entry {
        target_type: Some("invitation"),
        target_id: Some(id.to_string()),
        before: Some(json!({ "email": email, "status": "pending" })),
        after: Some(json!({ "status": "revoked" })),
        ..audit_by("invitation.revoked", &user, &client)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    Ok(see_other("/members"))
}

/// Refuses a change that would leave the organization without an active admin.
async fn keeps_an_admin(tx: &mut Tx, user: &CurrentUser, member: &User) -> Result<bool, AppError> {
    if member.role != Role::Admin || !member.is_active {
        return Ok(true);
    }
    Ok(db::users::count_active_admins(tx.conn(), user.organization_id).await? > 1)
}

async fn refuse_on_row(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
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

pub async fn change_role(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    id: web::Path<String>,
    form: web::Form<RoleForm>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    db::organizations::lock(tx.conn(), user.organization_id).await?;
    let member =
        db::users::find_member(tx.conn(), user.organization_id, id).await?.ok_or(AppError::NotFound)?;
    let Ok(role) = Role::parse(&form.role) else {
        drop(tx);
        return refuse_on_row(&state, &user, id, "Choose admin, developer or viewer.").await;
    };
    if role == member.role {
        return Ok(see_other("/members"));
    }
    if role != Role::Admin && !keeps_an_admin(&mut tx, &user, &member).await? {
        drop(tx);
        return refuse_on_row(
            &state,
            &user,
            id,
            "This is the last active admin: make someone else admin first.",
        )
        .await;
    }
    db::users::set_role(tx.conn(), user.organization_id, id, role, now).await?;
    let entry = audit::Entry {
        target_type: Some("user"),
        target_id: Some(id.to_string()),
        before: Some(json!({ "email": member.email, "role": member.role.as_str() })),
        after: Some(json!({ "email": member.email, "role": role.as_str() })),
        ..audit_by("member.role_changed", &user, &client)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    Ok(see_other("/members"))
}

/// Deactivates a member: their sessions end at once and their API keys stop working.
pub async fn deactivate(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    set_active(user, state, client, id, false).await
}

/// Reactivates a member. Keys revoked meanwhile stay revoked.
pub async fn reactivate(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    set_active(user, state, client, id, true).await
}

async fn set_active(
    user: CurrentUser,
    state: web::Data<AppState>,
    client: ClientInfo,
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
        return refuse_on_row(
            &state,
            &user,
            id,
            "This is the last active admin: make someone else admin first.",
        )
        .await;
    }
    db::users::set_active(tx.conn(), user.organization_id, id, active, now).await?;
    let ended = if active { 0 } else { db::sessions::delete_all_for_user(tx.conn(), id).await? };
    let entry = audit::Entry {
        target_type: Some("user"),
        target_id: Some(id.to_string()),
        before: Some(json!({ "email": member.email, "active": member.is_active })),
        after: Some(json!({ "email": member.email, "active": active, "sessions_ended": ended })),
        ..audit_by(if active { "member.reactivated" } else { "member.deactivated" }, &user, &client)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    Ok(see_other("/members"))
}
