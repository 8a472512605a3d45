//! Every route of the table, as every kind of user. The expectations are written here, apart
//! from the table, so a route added without a row below fails this test.

use mcp_platform::config::Settings;
use mcp_platform::domain::Role;
use mcp_platform::routes::{ROUTES, Verb};

use crate::helpers::{Backend, TestApp, TestUser, client, csrf_token, location, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    every_route_answers_each_role_as_the_table_says,
    anonymous_htmx_requests_are_told_to_sign_in
);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// This status from the handler.
    Status(u16),
    /// 303 to the sign-in page.
    ToLogin,
    /// 403 with the page that names the role needed.
    Forbidden(Role),
}
use Outcome::*;

const NOT_ADMIN: Outcome = Forbidden(Role::Admin);
const NOT_DEVELOPER: Outcome = Forbidden(Role::Developer);

const ACTORS: [&str; 4] = ["anonymous", "viewer", "developer", "admin"];

/// Expected outcome for anonymous, viewer, developer and admin. Forms are sent empty.
fn expected(verb: Verb, path: &str) -> Option<[Outcome; 4]> {
    let all = |o| Some([o; 4]);
    let signed_in = |o| Some([ToLogin, o, o, o]);
    match (verb, path) {
        (
            Verb::Get,
            "/healthz"
            | "/readyz"
            | "/static/htmx.min.js"
            | "/static/style.css"
            | "/static/favicon.svg"
            | "/static/app.js",
        ) => all(Status(200)),
        (Verb::Get | Verb::Post, "/setup") => all(Status(404)),
        (Verb::Get, "/login") => Some([Status(200), Status(303), Status(303), Status(303)]),
        (Verb::Post, "/login") => all(Status(422)),
        (Verb::Post, "/logout") => all(ToLogin),
        (Verb::Get, "/" | "/account") => signed_in(Status(200)),
        (Verb::Get, "/members" | "/organization/keys" | "/organization" | "/audit") => {
            Some([ToLogin, NOT_ADMIN, NOT_ADMIN, Status(200)])
        }
        (Verb::Post, "/organization") => Some([ToLogin, NOT_ADMIN, NOT_ADMIN, Status(422)]),
        (Verb::Post, "/organization/keys/{id}/revoke") => Some([ToLogin, NOT_ADMIN, NOT_ADMIN, Status(404)]),
        (Verb::Get | Verb::Post, "/invitations/{token}") => all(Status(404)),
        (
            Verb::Post,
            "/members/invitations/{id}/revoke"
            | "/members/{id}/role"
            | "/members/{id}/deactivate"
            | "/members/{id}/reactivate",
        ) => Some([ToLogin, NOT_ADMIN, NOT_ADMIN, Status(404)]),
        (Verb::Post, "/members/invitations" | "/members/invitations/bulk") => {
            Some([ToLogin, NOT_ADMIN, NOT_ADMIN, Status(422)])
        }
        (Verb::Get, "/tokens") => Some([ToLogin, NOT_DEVELOPER, Status(200), Status(200)]),
        (Verb::Post, "/tokens") => Some([ToLogin, NOT_DEVELOPER, Status(422), Status(422)]),
        (Verb::Post, "/tokens/{service}/delete") => Some([ToLogin, NOT_DEVELOPER, Status(404), Status(404)]),
        (Verb::Get, "/keys") => Some([ToLogin, NOT_DEVELOPER, Status(200), Status(200)]),
        (Verb::Post, "/keys") => Some([ToLogin, NOT_DEVELOPER, Status(422), Status(422)]),
        (Verb::Post, "/keys/{id}/revoke" | "/keys/{id}/roll") => {
            Some([ToLogin, NOT_DEVELOPER, Status(404), Status(404)])
        }
        (Verb::Post, "/account/password") => signed_in(Status(422)),
        (Verb::Post, "/account/sessions/{id}/end") => signed_in(Status(404)),
        _ => None,
    }
}

async fn call(app: &TestApp, actor: Option<&TestUser>, verb: Verb, path: &str) -> reqwest::Response {
    let browser = match actor {
        Some(user) => app.signed_in(user).await,
        None => client(),
    };
    let concrete = path
        .replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{service}", "github")
        .replace("{token}", "no-such-invitation");
    match verb {
        Verb::Get => app.get(&browser, &concrete).await,
        Verb::Post => {
            let page = if actor.is_some() { "/account" } else { "/login" };
            let token = csrf_token(&app.get(&browser, page).await.text().await.unwrap());
            browser.post(app.url(&concrete)).form(&[("csrf_token", token)]).send().await.unwrap()
        }
    }
}

async fn every_route_answers_each_role_as_the_table_says(backend: Backend) {
    // Each check signs in afresh: allow that many sign-ins from one address.
    let app =
        spawn_app_with(backend, Settings { login_ip_limit: Some("1000".into()), ..Settings::default() })
            .await;
    let org = app.create_organization("Acme").await;
    let viewer = app.create_user(org, Role::Viewer).await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let actors = [None, Some(&viewer), Some(&developer), Some(&admin)];

    let mut checked = 0;
    for spec in ROUTES {
        let outcomes = expected(spec.verb, spec.path)
            .unwrap_or_else(|| panic!("{:?} {} has no row in this test: add one", spec.verb, spec.path));
        for (actor, (name, want)) in actors.iter().zip(ACTORS.iter().zip(outcomes)) {
            let response = call(&app, *actor, spec.verb, spec.path).await;
            let what = format!("{:?} {} as {name}", spec.verb, spec.path);
            match want {
                Status(status) => assert_eq!(response.status(), status, "{what}"),
                ToLogin => {
                    assert_eq!(response.status(), 303, "{what}");
                    assert_eq!(location(&response).as_deref(), Some("/login"), "{what}");
                }
                Forbidden(needed) => {
                    assert_eq!(response.status(), 403, "{what}");
                    let page = response.text().await.unwrap();
                    let says = format!("needs the {needed} role");
                    assert!(
                        page.contains(&says) && page.contains(&format!("signed in as a {name}")),
                        "{what}: {page}"
                    );
                }
            }
            checked += 1;
        }
    }
    eprintln!("route matrix: {} routes x {} actors = {checked} checks", ROUTES.len(), ACTORS.len());
    assert_eq!(checked, ROUTES.len() * ACTORS.len());
}

async fn anonymous_htmx_requests_are_told_to_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_organization("Acme").await;
    let response = client().get(app.url("/account")).header("HX-Request", "true").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers().get("hx-redirect").unwrap(), "/login");
}
