//! Destructive actions ask first. Each one's button is a GET form to the same path as the
//! action: without script it opens this page, which says what will happen and holds the POST
//! form; with the page's script the same page's question opens in a `<dialog>` in place. The
//! action itself then ends with a notice on the next page (`WebSession::put_notice`).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;

use super::{Layout, render};
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::error::AppError;

/// What a destructive action will do, and where it is sent.
pub struct Confirm {
    /// "Revoke API key ci-bot?"
    pub question: String,
    /// What stops working, for whom: "MCP clients using mcp_sk_…a1b2 stop working at once."
    pub consequence: String,
    /// The button's word: "Revoke".
    pub verb: &'static str,
    /// The POST path, and the fields it sends besides the CSRF token.
    pub action: String,
    pub fields: Vec<(&'static str, String)>,
    /// Where "Cancel" goes: the page the question belongs to.
    pub back: &'static str,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    layout: Layout,
    confirm: Confirm,
}

/// "1 API key", "2 API keys": a count with its noun, for what notices and questions say.
pub fn counted(count: impl Into<i64>, noun: &str) -> String {
    let count = count.into();
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// "a" or "an", for the word that follows: "a viewer", "an admin".
pub fn a_or_an(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

pub fn page(user: &CurrentUser, state: &AppState, confirm: Confirm) -> Result<HttpResponse, AppError> {
    let layout = Layout::signed_in(confirm.question.clone(), confirm.back, user, state);
    render(StatusCode::OK, &ConfirmPage { layout, confirm })
}
