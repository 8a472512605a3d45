//! The one application error type: what the user sees is decided here, and what is logged
//! (the whole cause chain) is kept apart from it.

use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use crate::domain::Role;

#[derive(thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("sign-in required")]
    Unauthenticated,
    #[error("needs the {needed} role, user is {have}")]
    Forbidden { needed: Role, have: Role },
    #[error("missing or invalid CSRF token")]
    Csrf,
    /// Someone else changed the same thing at the same moment; the message says what to do.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too many requests, retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

const CONCURRENT_CHANGE: &str =
    "Someone else changed this at the same moment. Reload the page to see the change, then try again.";

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::lost_race(&e) {
            return AppError::Conflict(CONCURRENT_CHANGE.to_owned());
        }
        AppError::Unexpected(e.into())
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Unexpected(e) => write!(f, "{e:?}"),
            other => write!(f, "{other}"),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Unauthenticated => StatusCode::SEE_OTHER,
            AppError::Forbidden { .. } | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (title, message) = match self {
            AppError::Unauthenticated => {
                return HttpResponse::SeeOther().insert_header((header::LOCATION, "/login")).finish();
            }
            AppError::NotFound => ("Not found", "There is nothing here.".to_owned()),
            AppError::Forbidden { needed, have } => (
                "Not allowed",
                format!(
                    "This page needs the {needed} role. You are signed in as a {have}; \
                     ask an admin of your organization if you need access."
                ),
            ),
            AppError::Csrf => (
                "Request refused",
                "The form was out of date or did not come from this site. Go back, reload the page and try again."
                    .to_owned(),
            ),
            AppError::Conflict(message) => ("Changed meanwhile", message.clone()),
            AppError::TooManyRequests { retry_after_secs } => (
                "Too many requests",
                format!("Too many attempts. Try again in {retry_after_secs} seconds."),
            ),
            AppError::Unexpected(_) => {
                tracing::error!(error = ?self, "request failed");
                ("Something went wrong", "The error has been logged. Please try again.".to_owned())
            }
        };
        let page = ErrorPage { status: status.as_u16(), title, message };
        let mut response = HttpResponse::build(status);
        if let AppError::TooManyRequests { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        match page.render() {
            Ok(html) => response.content_type("text/html; charset=utf-8").body(html),
            Err(_) => response.content_type("text/plain; charset=utf-8").body(page.message),
        }
    }
}
