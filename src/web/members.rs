//! The member directory (admins).

use actix_web::web;
use askama::Template;
use askama_web::WebTemplate;

use super::Layout;
use crate::app::AppState;
use crate::auth::gate::CurrentUser;
use crate::db;
use crate::error::AppError;

#[derive(Template, WebTemplate)]
#[template(path = "members/list.html")]
pub struct MembersPage {
    layout: Layout,
    members: Vec<db::users::User>,
}

pub async fn list(user: CurrentUser, state: web::Data<AppState>) -> Result<MembersPage, AppError> {
    let members = db::users::list_members(state.db.acquire().await?.conn(), user.organization_id).await?;
    Ok(MembersPage { layout: Layout::signed_in("Members", "/members", &user, &state), members })
}
