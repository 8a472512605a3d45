//! The gate every route passes through before its handler: it resolves the signed-in user,
//! enforces the least role the route table names, and checks CSRF on every non-GET request.

use std::future::{Ready, ready};

use actix_htmx::Htmx;
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use uuid::Uuid;

use super::session::WebSession;
use super::{ClientInfo, csrf};
use crate::app::{AppState, FORM_LIMIT};
use crate::db;
use crate::domain::Role;
use crate::error::AppError;
use crate::ids::{OrgId, UserId};
use crate::routes::Access;

/// The signed-in user, put in the request by the gate. Handlers take it as an extractor.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    pub organization_id: OrgId,
    pub organization_name: String,
    pub email: String,
    pub role: Role,
    /// The id of this sign-in's session row.
    pub session_id: Uuid,
    /// Where this request comes from, for the audit rows of what the user does.
    pub client: ClientInfo,
    /// What the action before this page did ("API key ci-bot revoked."), shown once, on the
    /// next whole page.
    pub notice: Option<String>,
}

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Ready<Result<CurrentUser, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(req.extensions().get::<CurrentUser>().cloned().ok_or(AppError::Unauthenticated))
    }
}

/// The gate of one route of the table (`routes::configure`, with `middleware::from_fn`).
pub async fn gate(
    access: Access,
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match admit(access, &mut req).await {
        Ok(()) => next.call(req).await,
        Err(refusal) => Ok(req.into_response(refusal)),
    }
}

/// Decides whether the request may reach its handler; the error is the response to send instead.
async fn admit(access: Access, req: &mut ServiceRequest) -> Result<(), HttpResponse> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("application state missing")).error_response())?;
    let session = WebSession::of(req.request());
    let user = resolve_user(&state, &session, ClientInfo::of(req.request()))
        .await
        .map_err(|e| e.error_response())?;
    if let Some(mut user) = user.clone() {
        let whole_page =
            req.method() == actix_web::http::Method::GET && !req.headers().contains_key("hx-request");
        if whole_page {
            user.notice = session.take_notice();
        }
        req.extensions_mut().insert(user);
    }
    if let Access::Role(needed) = access {
        match &user {
            None => return Err(to_login(req)),
            Some(user) if !user.role.allows(needed) => {
                return Err(AppError::Forbidden { needed, have: user.role }.error_response());
            }
            Some(_) => {}
        }
    }
    if !is_safe(req.method()) {
        check_csrf(&state, &session, req).await.map_err(|e| e.error_response())?;
    }
    Ok(())
}

/// The user behind the session, if any. A session of a deactivated or deleted user is ended.
async fn resolve_user(
    state: &AppState,
    session: &WebSession,
    client: ClientInfo,
) -> Result<Option<CurrentUser>, AppError> {
    let Some(user_id) = session.user_id() else {
        return Ok(None);
    };
    let found = db::users::session_user(state.db.acquire().await?.conn(), user_id).await?;
    match (found, session.existing_id()) {
        (Some(user), Some(session_id)) if user.is_active => Ok(Some(CurrentUser {
            id: user.id,
            organization_id: user.organization_id,
            organization_name: user.organization_name,
            email: user.email,
            role: user.role,
            session_id,
            client,
            notice: None,
        })),
        _ => {
            session.sign_out();
            Ok(None)
        }
    }
}

fn to_login(req: &ServiceRequest) -> HttpResponse {
    if Htmx::new(req).is_htmx {
        HttpResponse::Unauthorized().insert_header(("HX-Redirect", "/login")).finish()
    } else {
        HttpResponse::SeeOther().insert_header((header::LOCATION, "/login")).finish()
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn check_csrf(
    state: &AppState,
    session: &WebSession,
    req: &mut ServiceRequest,
) -> Result<(), AppError> {
    if !same_origin(state, req.request()) {
        return Err(AppError::Csrf);
    }
    let Some(session_id) = session.existing_id() else {
        return Err(AppError::Csrf);
    };
    let token = match req.headers().get(csrf::HEADER).and_then(|v| v.to_str().ok()) {
        Some(token) => Some(token.to_owned()),
        None => form_token(req).await,
    };
    match token {
        Some(token) if state.csrf.verify(session_id, &token) => Ok(()),
        _ => Err(AppError::Csrf),
    }
}

/// Reads the token from a url-encoded form body and puts the body back for the handler.
async fn form_token(req: &mut ServiceRequest) -> Option<String> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    let mut payload = req.take_payload();
    let body = web::Bytes::from_request(req.request(), &mut payload).await;
    let body: Bytes = match body {
        Ok(body) if body.len() <= FORM_LIMIT => body,
        _ => return None,
    };
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()?
        .into_iter()
        .find(|(name, _)| name == csrf::FORM_FIELD)
        .map(|(_, value)| value);
    req.set_payload(actix_web::dev::Payload::from(body));
    token
}

/// Browsers say where a request comes from; anything cross-site is refused outright.
fn same_origin(state: &AppState, req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("Sec-Fetch-Site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    // The whole origin, scheme included, as the platform's own settings name it.
    origin.to_str().is_ok_and(|origin| origin == state.settings.public_base(req))
}
