//! The one route table: every dashboard route with its method, path, the least role it needs
//! (or that it is public) and, for pages in the navigation, their label. The gate enforces the
//! role before the handler runs; the navigation is drawn from this table too.

use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{Route, web};

use crate::auth::gate::gate;
use crate::domain::Role;
use crate::web::{
    account, assets, audit_trail, health, home, invitations, keys, login, logs, members, organization,
    password_reset, services, setup, tokens, usage,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with no session at all: served outside the session middleware and the gate, so
    /// an asset or a health check never loads a session from the database.
    Open,
    /// Anyone; the session is there (sign-in, setup, invitations).
    Public,
    Role(Role),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        }
    }
}

pub struct RouteSpec {
    pub verb: Verb,
    pub path: &'static str,
    pub access: Access,
    /// Label in the navigation, for pages that appear there.
    pub nav: Option<&'static str>,
    handler: fn() -> Route,
}

/// A table row: `route!(Verb "path", access, handler[, nav = "label"])`.
macro_rules! route {
    ($verb:ident $path:literal, $access:expr, $handler:path $(, nav = $nav:literal)?) => {
        RouteSpec {
            verb: Verb::$verb,
            path: $path,
            access: $access,
            nav: route!(@nav $($nav)?),
            handler: || web::route().to($handler),
        }
    };
    (@nav) => { None };
    (@nav $nav:literal) => { Some($nav) };
}

const OPEN: Access = Access::Open;
const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::Role(Role::Viewer);
const DEVELOPER: Access = Access::Role(Role::Developer);
const ADMIN: Access = Access::Role(Role::Admin);

pub const ROUTES: &[RouteSpec] = &[
    route!(Get "/healthz", OPEN, health::healthz),
    route!(Get "/readyz", OPEN, health::readyz),
    route!(Get "/metrics", OPEN, health::metrics),
    route!(Get "/static/htmx.min.js", OPEN, assets::htmx),
    route!(Get "/static/style.css", OPEN, assets::stylesheet),
    route!(Get "/static/favicon.svg", OPEN, assets::favicon),
    route!(Get "/static/app.js", OPEN, assets::script),
    route!(Get "/setup", PUBLIC, setup::form),
    route!(Post "/setup", PUBLIC, setup::submit),
    route!(Get "/login", PUBLIC, login::form),
    route!(Post "/login", PUBLIC, login::submit),
    route!(Post "/logout", VIEWER, login::logout),
    route!(Get "/", VIEWER, home::show, nav = "Dashboard"),
    route!(Get "/invitations/{token}", PUBLIC, invitations::form),
    route!(Post "/invitations/{token}", PUBLIC, invitations::accept),
    route!(Get "/members", ADMIN, members::list, nav = "Members"),
    route!(Post "/members/invitations", ADMIN, invitations::invite),
    route!(Post "/members/invitations/bulk", ADMIN, invitations::invite_bulk),
    route!(Get "/members/invitations/{id}/revoke", ADMIN, invitations::confirm_revoke),
    route!(Post "/members/invitations/{id}/revoke", ADMIN, invitations::revoke),
    route!(Get "/members/{id}/role", ADMIN, members::confirm_role),
    route!(Post "/members/{id}/role", ADMIN, members::change_role),
    route!(Get "/members/{id}/deactivate", ADMIN, members::confirm_deactivate),
    route!(Post "/members/{id}/deactivate", ADMIN, members::deactivate),
    route!(Post "/members/{id}/reactivate", ADMIN, members::reactivate),
    route!(Get "/members/{id}/erase-logs", ADMIN, members::confirm_erase_logs),
    route!(Post "/members/{id}/erase-logs", ADMIN, members::erase_logs),
    route!(Post "/members/{id}/password-reset", ADMIN, password_reset::issue),
    route!(Get "/password-reset/{token}", PUBLIC, password_reset::form),
    route!(Post "/password-reset/{token}", PUBLIC, password_reset::submit),
    route!(Get "/usage", VIEWER, usage::show, nav = "Usage"),
    route!(Get "/logs", DEVELOPER, logs::list, nav = "Request log"),
    route!(Get "/logs/export.csv", DEVELOPER, logs::export_csv),
    route!(Get "/logs/export.jsonl", DEVELOPER, logs::export_jsonl),
    route!(Get "/logs/{id}", DEVELOPER, logs::detail),
    route!(Get "/services", VIEWER, services::catalog, nav = "Services"),
    route!(Post "/services", ADMIN, services::create),
    route!(Get "/services/new", ADMIN, services::new_form),
    route!(Get "/services/{name}", VIEWER, services::detail),
    route!(Post "/services/{name}", ADMIN, services::update),
    route!(Get "/services/{name}/edit", ADMIN, services::edit_form),
    route!(Get "/services/{name}/delete", ADMIN, services::confirm_delete),
    route!(Post "/services/{name}/delete", ADMIN, services::delete),
    route!(Post "/services/{name}/test", DEVELOPER, services::test_connection),
    route!(Post "/services/{name}/tools", ADMIN, services::set_tool_policy),
    route!(Get "/keys", DEVELOPER, keys::list, nav = "API keys"),
    route!(Post "/keys", DEVELOPER, keys::create),
    route!(Get "/keys/new", DEVELOPER, keys::created),
    route!(Get "/keys/{id}/revoke", DEVELOPER, keys::confirm_revoke),
    route!(Post "/keys/{id}/revoke", DEVELOPER, keys::revoke),
    route!(Post "/keys/{id}/roll", DEVELOPER, keys::roll),
    route!(Get "/organization", ADMIN, organization::show, nav = "Organization"),
    route!(Post "/organization", ADMIN, organization::save),
    route!(Get "/audit", ADMIN, audit_trail::list, nav = "Audit trail"),
    route!(Get "/audit/export.csv", ADMIN, audit_trail::export_csv),
    route!(Get "/organization/keys", ADMIN, keys::organization_keys),
    route!(Get "/organization/keys/{id}/revoke", ADMIN, keys::confirm_organization_revoke),
    route!(Post "/organization/keys/{id}/revoke", ADMIN, keys::organization_revoke),
    route!(Get "/tokens", DEVELOPER, tokens::list, nav = "Service tokens"),
    route!(Post "/tokens", DEVELOPER, tokens::save),
    route!(Get "/tokens/{service}/delete", DEVELOPER, tokens::confirm_delete),
    route!(Post "/tokens/{service}/delete", DEVELOPER, tokens::delete),
    route!(Get "/account", VIEWER, account::show, nav = "Account"),
    route!(Post "/account/password", VIEWER, account::change_password),
    route!(Post "/account/sessions/{id}/end", VIEWER, account::end_session),
];

/// Registers the open routes of the table (assets, health, metrics): no session, no gate.
pub fn configure_open(cfg: &mut web::ServiceConfig) {
    register(cfg, |spec| spec.access == Access::Open, |route, _| route);
}

/// Registers every other route of the table, each behind the gate with its access rule; the
/// caller puts them inside the session middleware.
pub fn configure(cfg: &mut web::ServiceConfig) {
    register(
        cfg,
        |spec| spec.access != Access::Open,
        |route, spec| {
            let access = spec.access;
            route.wrap(from_fn(move |req, next| gate(access, req, next)))
        },
    );
}

fn register(
    cfg: &mut web::ServiceConfig,
    included: impl Fn(&RouteSpec) -> bool,
    guard: impl Fn(Route, &RouteSpec) -> Route,
) {
    let mut paths: Vec<&str> = Vec::new();
    for spec in ROUTES.iter().filter(|s| included(s)) {
        if !paths.contains(&spec.path) {
            paths.push(spec.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        for spec in ROUTES.iter().filter(|s| s.path == path && included(s)) {
            resource = resource.route(guard((spec.handler)().method(spec.verb.method()), spec));
        }
        cfg.service(resource);
    }
}

pub struct NavLink {
    pub label: &'static str,
    pub path: &'static str,
}

/// The navigation a user with `role` sees: exactly the pages the table lets them open.
pub fn nav_for(role: Role) -> Vec<NavLink> {
    ROUTES
        .iter()
        .filter_map(|spec| {
            let label = spec.nav?;
            let allowed = match spec.access {
                Access::Open | Access::Public => true,
                Access::Role(needed) => role.allows(needed),
            };
            allowed.then_some(NavLink { label, path: spec.path })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_and_path_appears_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.path == b.path && a.verb == b.verb), "{:?} {} twice", a.verb, a.path);
            }
        }
    }

    #[test]
    fn navigation_follows_the_roles() {
        let labels = |role| nav_for(role).into_iter().map(|l| l.label).collect::<Vec<_>>();
        assert_eq!(labels(Role::Viewer), ["Dashboard", "Usage", "Services", "Account"]);
        assert_eq!(
            labels(Role::Developer),
            ["Dashboard", "Usage", "Request log", "Services", "API keys", "Service tokens", "Account"]
        );
        assert_eq!(
            labels(Role::Admin),
            [
                "Dashboard",
                "Members",
                "Usage",
                "Request log",
                "Services",
                "API keys",
                "Organization",
                "Audit trail",
                "Service tokens",
                "Account"
            ]
        );
    }
}
