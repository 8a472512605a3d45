//! Invitations: admins invite by email and role, one at a time or from a pasted CSV, and get a
//! single-use link valid for 7 days; the link's holder chooses a password and joins the
//! organization. Only the link token's SHA-256 is stored.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::ids::UserId;

use super::confirm::{self, Confirm};
use super::members::{InviteForm, PageParts, members_page};
use super::{Actor, FieldErrors, Layout, PasswordTwice, audited, parse_id, public_base, render, see_other};
use crate::app::AppState;
use crate::auth::ClientInfo;
use crate::auth::gate::CurrentUser;
use crate::auth::session::WebSession;
use crate::db::audit::Action;
use crate::db::{self, Tx, audit, invitations::Invitation};
use crate::domain::{Email, Role};
use crate::error::AppError;

#[derive(Template)]
#[template(path = "invitations/accept.html")]
pub struct AcceptPage {
    layout: Layout,
    token: String,
    organization: String,
    email: String,
    role: String,
    password_error: Option<String>,
    confirm_error: Option<String>,
    form_error: Option<String>,
}

#[derive(Template)]
#[template(path = "invitations/gone.html")]
pub struct GonePage {
    layout: Layout,
}

/// The invitation behind a link: `Some` when it can still be used, `None` when it was used,
/// revoked or has expired, 404 when there is no such link.
async fn lookup(state: &AppState, token: &str) -> Result<Option<Invitation>, AppError> {
    let hash = crate::crypto::link_token_hash(token);
    let found = db::invitations::find_by_token_hash(state.db.acquire().await?.conn(), &hash).await?;
    let invitation = found.ok_or(AppError::NotFound)?;
    Ok(invitation.usable(state.clock.now()).then_some(invitation))
}

/// The page for a link that can no longer be used: 410 when opened, 422 when a form was sent.
fn gone(state: &AppState, session: &WebSession, status: StatusCode) -> Result<HttpResponse, AppError> {
    let page =
        GonePage { layout: Layout::public("Invitation no longer valid", "/invitations", session, state) };
    render(status, &page)
}

fn accept_page(state: &AppState, session: &WebSession, token: &str, invitation: &Invitation) -> AcceptPage {
    AcceptPage {
        layout: Layout::public("Join", "/invitations", session, state),
        token: token.to_owned(),
        organization: invitation.organization_name.clone(),
        email: invitation.email.clone(),
        role: invitation.role.to_string(),
        password_error: None,
        confirm_error: None,
        form_error: None,
    }
}

pub async fn form(
    state: web::Data<AppState>,
    session: WebSession,
    token: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    match lookup(&state, &token).await? {
        Some(invitation) => render(StatusCode::OK, &accept_page(&state, &session, &token, &invitation)),
        None => gone(&state, &session, StatusCode::GONE),
    }
}

pub async fn accept(
    state: web::Data<AppState>,
    session: WebSession,
    client: ClientInfo,
    token: web::Path<String>,
    form: web::Form<PasswordTwice>,
) -> Result<HttpResponse, AppError> {
    let Some(invitation) = lookup(&state, &token).await? else {
        return gone(&state, &session, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let mut page = accept_page(&state, &session, &token, &invitation);
    let password = match form.check() {
        Ok(password) => password,
        Err((password_error, confirm_error)) => {
            (page.password_error, page.confirm_error) = (password_error, confirm_error);
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let email =
        Email::parse(&invitation.email).map_err(|e| anyhow::anyhow!("stored invitation email: {e}"))?;
    let hash = state.passwords.hash(password.into_secret()).await?;
    let now = state.clock.now();
    let user_id = UserId::new();
    let mut tx = state.db.begin().await?;
    // An account belongs to one organization. Whether this email has one in another is not
    // for the inviting organization to learn, so the answer is the one a used link gets, which
    // tells the person to sign in if they have an account.
    if db::users::email_exists(tx.conn(), email.as_str()).await? {
        drop(tx);
        return gone(&state, &session, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Used, revoked or expired since the page was shown: nothing is created.
    if !db::invitations::accept(tx.conn(), invitation.id, now).await? {
        drop(tx);
        return gone(&state, &session, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let user = db::users::NewUser {
        id: user_id,
        organization_id: invitation.organization_id,
        email: &email,
        password_hash: &hash,
        role: invitation.role,
    };
    // Two links for the same email accepted at the same moment: the second finds it taken.
    if let Err(e) = db::users::insert(tx.conn(), user, now).await {
        if db::users::email_taken(&e) {
            drop(tx);
            return gone(&state, &session, StatusCode::UNPROCESSABLE_ENTITY);
        }
        return Err(e.into());
    }
    let entry = audit::Entry {
        organization_id: Some(invitation.organization_id),
        actor_user_id: Some(user_id),
        actor_email: Some(email.as_str()),
        target_id: Some(invitation.id.to_string()),
        after: Some(json!({ "email": email.as_str(), "role": invitation.role.as_str() })),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        ..audit::Entry::new(Action::InvitationAccepted)
    };
    audit::record(tx.conn(), entry, now).await?;
    tx.commit().await?;
    session.sign_in(user_id, &client)?;
    Ok(see_other("/"))
}

pub const INVITATION_DAYS: i64 = 7;
const MAX_CSV_LINES: usize = 500;

/// One invitation link, shown once right after it is made.
pub struct NewLink {
    pub email: String,
    pub role: Role,
    pub url: String,
}

#[derive(Template)]
#[template(path = "members/invited.html")]
pub struct InvitedPage {
    layout: Layout,
    links: Vec<NewLink>,
}

/// Checks one invitation request against the organization; the error is for the email field.
/// Accounts of other organizations are not looked at: the answer must not reveal them.
async fn check_invitee(
    tx: &mut Tx,
    user: &impl Actor,
    email: &Email,
    now: DateTime<Utc>,
) -> Result<Result<(), String>, AppError> {
    if db::users::member_email_exists(tx.conn(), user.organization_id(), email.as_str()).await? {
        return Ok(Err(format!("{email} is already a member of your organization.")));
    }
    if db::invitations::pending_for_email(tx.conn(), user.organization_id(), email.as_str(), now).await? {
        return Ok(Err(format!("{email} already has a pending invitation.")));
    }
    Ok(Ok(()))
}

/// Creates one invitation in `tx` and returns its link.
async fn create_invitation(
    tx: &mut Tx,
    user: &impl Actor,
    base: &str,
    email: &Email,
    role: Role,
    now: DateTime<Utc>,
) -> Result<NewLink, AppError> {
    let token = crate::crypto::random_token();
    let hash = crate::crypto::link_token_hash(&token);
    let id = Uuid::now_v7();
    let expires_at = now + Duration::days(INVITATION_DAYS);
    let invitation = db::invitations::NewInvitation {
        id,
        organization_id: user.organization_id(),
        email: email.as_str(),
        role,
        token_hash: &hash,
        invited_by: user.user_id(),
        expires_at,
    };
    db::invitations::insert(tx.conn(), invitation, now).await?;
    audited(
        tx.conn(),
        user,
        Action::InvitationCreated,
        id,
        None,
        Some(json!({ "email": email.as_str(), "role": role.as_str(), "expires_at": expires_at })),
        now,
    )
    .await?;
    Ok(NewLink { email: email.to_string(), role, url: format!("{base}/invitations/{token}") })
}

pub async fn invite(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    form: web::Form<InviteForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let link = match invite_one(&state, &user, &public_base(&state, &req), &form).await? {
        Ok(link) => link,
        Err(errors) => {
            let parts = PageParts { invite: form, invite_errors: errors, ..PageParts::default() };
            return render(StatusCode::UNPROCESSABLE_ENTITY, &members_page(&state, &user, parts).await?);
        }
    };
    let page = InvitedPage {
        layout: Layout::signed_in("Invitation created", "/members", &user, &state),
        links: vec![link],
    };
    render(StatusCode::OK, &page)
}

/// Invites one person (audited) and returns their link; or what is wrong at each field.
pub async fn invite_one(
    state: &AppState,
    user: &impl Actor,
    base: &str,
    form: &InviteForm,
) -> Result<Result<NewLink, FieldErrors>, AppError> {
    let now = state.clock.now();
    let mut errors = FieldErrors::default();
    let email = Email::parse(&form.email).map_err(|e| errors.add("email", e)).ok();
    let role =
        Role::parse(&form.role).map_err(|_| errors.add("role", "Choose admin, developer or viewer.")).ok();
    let mut tx = state.db.begin().await?;
    if let Some(email) = &email
        && let Err(message) = check_invitee(&mut tx, user, email, now).await?
    {
        errors.add("email", message);
    }
    let (plan, used) = super::organization::plan_and_use(&mut tx, state, user.organization_id()).await?;
    if let Some(message) = super::organization::over_limit(&plan, "members", plan.members, used.members, 1) {
        errors.add("email", message);
    }
    let (Some(email), Some(role), true) = (email, role, errors.is_empty()) else { return Ok(Err(errors)) };
    let link = create_invitation(&mut tx, user, base, &email, role, now).await?;
    tx.commit().await?;
    Ok(Ok(link))
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
    form: web::Form<BulkForm>,
) -> Result<HttpResponse, AppError> {
    let csv = form.into_inner().csv;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let mut errors = Vec::new();
    let mut valid: Vec<(Email, Role)> = Vec::new();
    let lines = csv_lines(&csv, &mut errors);
    if lines.is_empty() && errors.is_empty() {
        errors.push("Paste at least one line: email,role".to_owned());
    } else if lines.len() > MAX_CSV_LINES {
        errors.push(format!("At most {MAX_CSV_LINES} lines at once."));
    }
    for (number, fields) in lines.iter().take(MAX_CSV_LINES) {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        if *number == 1 && fields.iter().map(|f| f.to_ascii_lowercase()).eq(["email", "role"]) {
            continue;
        }
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
    let (plan, used) = super::organization::plan_and_use(&mut tx, &state, user.organization_id).await?;
    let adding = valid.len() as i64;
    if let Some(message) =
        super::organization::over_limit(&plan, "members", plan.members, used.members, adding)
    {
        errors.push(format!("{adding} more would be too many: {message}"));
    }
    if !errors.is_empty() || valid.is_empty() {
        drop(tx);
        if errors.is_empty() {
            errors.push("The CSV holds no invitations.".to_owned());
        }
        let parts = PageParts { csv, csv_errors: errors, ..PageParts::default() };
        return render(StatusCode::UNPROCESSABLE_ENTITY, &members_page(&state, &user, parts).await?);
    }
    let base = public_base(&state, &req);
    let mut links = Vec::with_capacity(valid.len());
    for (email, role) in &valid {
        links.push(create_invitation(&mut tx, &user, &base, email, *role, now).await?);
    }
    tx.commit().await?;
    let page =
        InvitedPage { layout: Layout::signed_in("Invitations created", "/members", &user, &state), links };
    render(StatusCode::OK, &page)
}

/// The pasted CSV's non-empty records, each with its line number and its trimmed fields; a line
/// that is not CSV (an unclosed quote) is an error for that line.
fn csv_lines(text: &str, errors: &mut Vec<String>) -> Vec<(u64, Vec<String>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut lines = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) if record.iter().all(str::is_empty) => {}
            Ok(record) => {
                let number = record.position().map_or(0, |p| line_at(text, p.byte()));
                lines.push((number, record.iter().map(str::to_owned).collect()));
            }
            Err(e) => {
                let number = e.position().map_or(0, |p| line_at(text, p.byte()));
                errors.push(format!("Line {number}: not a CSV line"));
            }
        }
    }
    lines
}

/// The line a record starting at `byte` is on; blank lines before it (which the reader skips
/// as part of the record) do not count as its own.
fn line_at(text: &str, byte: u64) -> u64 {
    let from = text.get(byte as usize..).unwrap_or_default();
    let start = text.len() - from.trim_start_matches(['\r', '\n']).len();
    1 + text[..start].matches('\n').count() as u64
}

pub async fn confirm_revoke(
    user: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let email = db::invitations::pending_email(state.db.acquire().await?.conn(), user.organization_id, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let confirm = Confirm {
        question: format!("Revoke the invitation for {email}?"),
        consequence: "Its link stops working at once; you can invite them again later.".to_owned(),
        verb: "Revoke",
        action: format!("/members/invitations/{id}/revoke"),
        fields: Vec::new(),
        back: "/members",
    };
    confirm::page(&user, &state, confirm)
}

pub async fn revoke(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: WebSession,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let email =
        db::invitations::revoke(tx.conn(), user.organization_id, id, now).await?.ok_or(AppError::NotFound)?;
    audited(
        tx.conn(),
        &user,
        Action::InvitationRevoked,
        id,
        Some(json!({ "email": email, "status": "pending" })),
        Some(json!({ "status": "revoked" })),
        now,
    )
    .await?;
    tx.commit().await?;
    session.put_notice(format!("The invitation for {email} was revoked."))?;
    Ok(see_other("/members"))
}
