//! The one route table: every dashboard route with its method, path, the least role it needs
//! (or that it is public) and, for pages in the navigation, their label. The gate enforces the
//! role before the handler runs; the navigation is drawn from this table too.

use actix_web::http::Method;
use actix_web::{Route, web};

use crate::auth::gate::Gate;
use crate::domain::Role;
use crate::web::{account, assets, health, home, login, members, setup};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
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

const fn page(
    path: &'static str,
    access: Access,
    nav: Option<&'static str>,
    handler: fn() -> Route,
) -> RouteSpec {
    RouteSpec {
        verb: Verb::Get,
        path,
        access,
        nav,
        handler,
    }
}

const fn action(path: &'static str, access: Access, handler: fn() -> Route) -> RouteSpec {
    RouteSpec {
        verb: Verb::Post,
        path,
        access,
        nav: None,
        handler,
    }
}

const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::Role(Role::Viewer);
const ADMIN: Access = Access::Role(Role::Admin);

pub const ROUTES: &[RouteSpec] = &[
    page("/healthz", PUBLIC, None, || {
        web::route().to(health::healthz)
    }),
    page("/readyz", PUBLIC, None, || web::route().to(health::readyz)),
    page("/static/htmx.min.js", PUBLIC, None, || {
        web::route().to(assets::htmx)
    }),
    page("/static/style.css", PUBLIC, None, || {
        web::route().to(assets::stylesheet)
    }),
    page("/setup", PUBLIC, None, || web::route().to(setup::form)),
    action("/setup", PUBLIC, || web::route().to(setup::submit)),
    page("/login", PUBLIC, None, || web::route().to(login::form)),
    action("/login", PUBLIC, || web::route().to(login::submit)),
    action("/logout", VIEWER, || web::route().to(login::logout)),
    page("/", VIEWER, Some("Dashboard"), || {
        web::route().to(home::show)
    }),
    page("/members", ADMIN, Some("Members"), || {
        web::route().to(members::list)
    }),
    page("/account", VIEWER, Some("Account"), || {
        web::route().to(account::show)
    }),
    action("/account/password", VIEWER, || {
        web::route().to(account::change_password)
    }),
    action("/account/sessions/{id}/end", VIEWER, || {
        web::route().to(account::end_session)
    }),
];

/// Registers every route of the table, each behind the gate with its access rule.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for spec in ROUTES {
        if !paths.contains(&spec.path) {
            paths.push(spec.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        for spec in ROUTES.iter().filter(|s| s.path == path) {
            resource = resource.route(
                (spec.handler)()
                    .method(spec.verb.method())
                    .wrap(Gate(spec.access)),
            );
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
                Access::Public => true,
                Access::Role(needed) => role.allows(needed),
            };
            allowed.then_some(NavLink {
                label,
                path: spec.path,
            })
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
                assert!(
                    !(a.path == b.path && a.verb == b.verb),
                    "{:?} {} twice",
                    a.verb,
                    a.path
                );
            }
        }
    }

    #[test]
    fn navigation_follows_the_roles() {
        let labels = |role| {
            nav_for(role)
                .into_iter()
                .map(|l| l.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(Role::Viewer), ["Dashboard", "Account"]);
        assert_eq!(labels(Role::Developer), ["Dashboard", "Account"]);
        assert_eq!(labels(Role::Admin), ["Dashboard", "Members", "Account"]);
    }
}
