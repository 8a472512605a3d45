//! The authorization matrix: every route of the table, called by anonymous, an admin of another
//! organization, and a viewer, a developer and an admin of the organization that owns the
//! resources, with plain and htmx requests. The expectations are written here, apart from the
//! table, so a route added without a row below fails. Another organization's admin must get
//! 404 for every resource and never see an id, email or name of the first organization.

use base64::Engine;
use mcp_platform::config::Settings;
use mcp_platform::crypto::api_key::ApiKey;
use mcp_platform::crypto::keyring::Binding;
use mcp_platform::db;
use mcp_platform::domain::Role;
use mcp_platform::routes::{ROUTES, Verb};
use sha2::Digest;
use uuid::Uuid;

use crate::helpers::{Backend, TestApp, TestUser, client, csrf_token, location, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(every_route_answers_every_actor_as_designed, anonymous_htmx_requests_are_told_to_sign_in);

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

/// Called in this order, so the actor allowed to change a resource comes last.
const ACTORS: [&str; 5] = ["anonymous", "foreign admin", "viewer", "developer", "admin"];

/// Expected outcome per actor, in the order of `ACTORS`. Forms are sent empty.
fn expected(verb: Verb, path: &str) -> Option<[Outcome; 5]> {
    use Verb::{Get, Post};
    let all = |o| Some([o; 5]);
    let signed_in = |o| Some([ToLogin, o, o, o, o]);
    let admins = |o| Some([ToLogin, o, NOT_ADMIN, NOT_ADMIN, o]);
    let developers = |o| Some([ToLogin, o, NOT_DEVELOPER, o, o]);
    match (verb, path) {
        (
            Get,
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/static/htmx.min.js"
            | "/static/style.css"
            | "/static/favicon.svg"
            | "/static/app.js",
        ) => all(Status(200)),
        (Get | Post, "/setup") => all(Status(404)),
        (Get, "/login") => Some([Status(200), Status(303), Status(303), Status(303), Status(303)]),
        (Post, "/login") => all(Status(422)),
        (Post, "/logout") => all(ToLogin),
        // The link holder may open it, whoever they are; the empty password is refused.
        (Get, "/invitations/{token}") => all(Status(200)),
        (Post, "/invitations/{token}") => all(Status(422)),
        (Get, "/password-reset/{token}") => all(Status(200)),
        (Post, "/password-reset/{token}") => all(Status(422)),
        (Post, "/members/{id}/password-reset") => {
            Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(200)])
        }
        (Get, "/" | "/account") => signed_in(Status(200)),
        (Post, "/account/password") => signed_in(Status(422)),
        // The developer's own (other) session; nobody else's.
        (Post, "/account/sessions/{id}/end") => {
            Some([ToLogin, Status(404), Status(404), Status(303), Status(404)])
        }
        (Get, "/services" | "/usage") => signed_in(Status(200)),
        (Post, "/services") => admins(Status(422)),
        (Get, "/services/new") => admins(Status(200)),
        (Get, "/services/{name}") => Some([ToLogin, Status(404), Status(200), Status(200), Status(200)]),
        (Post, "/services/{name}") => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(422)]),
        (Get, "/services/{name}/edit") => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(200)]),
        (Post, "/services/{name}/delete") => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(303)]),
        (Get, "/services/{name}/delete") => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(200)]),
        // Nothing chosen: the form comes back with its error.
        (Post, "/services/{name}/tools") => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(422)]),
        // Runs through the gateway as the member; the result (here: the token is missing) is shown.
        (Post, "/services/{name}/test") => {
            Some([ToLogin, Status(404), NOT_DEVELOPER, Status(200), Status(200)])
        }
        (Get, "/keys" | "/tokens" | "/logs" | "/logs/export.csv" | "/logs/export.jsonl") => {
            developers(Status(200))
        }
        // The developer's own call: their admin reads it too, nobody outside.
        (Get, "/logs/{id}") => Some([ToLogin, Status(404), NOT_DEVELOPER, Status(200), Status(200)]),
        (Post, "/keys" | "/tokens") => developers(Status(422)),
        // The developer's own key and token: the admin of the same organization manages
        // other people's keys only from the organization page.
        (Post, "/keys/{id}/revoke") => Some([ToLogin, Status(404), NOT_DEVELOPER, Status(303), Status(404)]),
        // The question asked before: the same answers, the page instead of the change.
        (Get, "/keys/{id}/revoke") => Some([ToLogin, Status(404), NOT_DEVELOPER, Status(200), Status(404)]),
        (Get, "/organization/keys/{id}/revoke") => {
            Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(200)])
        }
        (Post, "/keys/{id}/roll") => Some([ToLogin, Status(404), NOT_DEVELOPER, Status(303), Status(404)]),
        // Shows a key just made, once; with none waiting, the list.
        (Get, "/keys/new") => developers(Status(303)),
        (Get, "/tokens/{service}/delete") => {
            Some([ToLogin, Status(404), NOT_DEVELOPER, Status(200), Status(404)])
        }
        (Post, "/tokens/{service}/delete") => {
            Some([ToLogin, Status(404), NOT_DEVELOPER, Status(303), Status(404)])
        }
        (Get, "/members" | "/organization" | "/organization/keys" | "/audit" | "/audit/export.csv") => {
            admins(Status(200))
        }
        (Post, "/organization" | "/members/invitations" | "/members/invitations/bulk") => admins(Status(422)),
        (Post, "/organization/keys/{id}/revoke" | "/members/invitations/{id}/revoke") => {
            Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(303)])
        }
        (Get | Post, "/members/{id}/role") => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(422)]),
        (
            Get,
            "/members/invitations/{id}/revoke" | "/members/{id}/deactivate" | "/members/{id}/erase-logs",
        ) => Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(200)]),
        (Post, "/members/{id}/deactivate" | "/members/{id}/reactivate" | "/members/{id}/erase-logs") => {
            Some([ToLogin, Status(404), NOT_ADMIN, NOT_ADMIN, Status(303)])
        }
        _ => None,
    }
}

/// The first organization's own MCP service.
const SERVICE: &str = "acme-zeppelin-service";

/// The first organization and the things in it that routes name.
struct Fixture {
    viewer: TestUser,
    developer: TestUser,
    admin: TestUser,
    foreign_admin: TestUser,
    key_id: mcp_platform::ids::KeyId,
    log_id: mcp_platform::ids::LogId,
    invitation_id: Uuid,
    invitation_token: String,
    reset_token: String,
    session_id: String,
    /// Every id, email and name of the first organization, none of which the foreign admin may see.
    secrets_of_first: Vec<String>,
}

async fn fixture(app: &TestApp) -> Fixture {
    let org = app.create_organization("Acme Zeppelins").await;
    let viewer = app.create_user(org, Role::Viewer).await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let foreign_org = app.create_organization("Globex").await;
    let foreign_admin = app.create_user(foreign_org, Role::Admin).await;
    let now = app.clock_now();
    let mut conn = app.db.acquire().await.unwrap();

    let key = ApiKey::generate();
    let key_id = mcp_platform::ids::KeyId::new();
    let new_key = db::api_keys::NewKey {
        id: key_id,
        organization_id: org,
        user_id: developer.id,
        name: "laptop",
        key_hash: &key.hash(),
        display_key: &key.display(),
        scopes: "mcp:read",
        expires_at: Some(now + chrono::Duration::days(30)),
        rolled_from_id: None,
        rate_limit_per_minute: None,
        reach: None,
    };
    db::api_keys::insert(conn.conn(), new_key, now).await.unwrap();

    let binding = Binding { organization_id: org, user_id: developer.id, service_name: "github" };
    let sealed = app
        .master
        .token_keyring()
        .seal(&app.db, now, "ghp_developerTokenValue0000000000", binding)
        .await
        .unwrap();
    let token = db::user_tokens::NewToken {
        organization_id: org,
        user_id: developer.id,
        service_name: "github",
        ciphertext: &sealed.bytes,
        key_id: &sealed.key_id,
        last4: "0000",
    };
    db::user_tokens::upsert(conn.conn(), token, now).await.unwrap();

    let invitation_token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::now_v7().as_bytes());
    let invitation_id = Uuid::now_v7();
    let invitation_email = format!("invitee-{}@example.com", invitation_id.simple());
    let hash: [u8; 32] = sha2::Sha256::digest(invitation_token.as_bytes()).into();
    let invitation = db::invitations::NewInvitation {
        id: invitation_id,
        organization_id: org,
        email: &invitation_email,
        role: Role::Viewer,
        token_hash: &hash,
        invited_by: admin.id,
        expires_at: now + chrono::Duration::days(7),
    };
    db::invitations::insert(conn.conn(), invitation, now).await.unwrap();
    let reset_token = mcp_platform::crypto::random_token();
    let reset = db::password_resets::NewPasswordReset {
        id: Uuid::now_v7(),
        organization_id: org,
        user_id: developer.id,
        token_hash: &mcp_platform::crypto::link_token_hash(&reset_token),
        issued_by: Some(admin.id),
        expires_at: now + chrono::Duration::hours(24),
    };
    db::password_resets::issue(conn.conn(), reset, now).await.unwrap();
    let service_id = mcp_platform::ids::ServiceId::new();
    let headers = app.seal_headers(service_id, &[("X-Team", "zeppelin-header-value")]).await;
    let service = db::services::ServiceFields {
        name: SERVICE,
        description: "Acme's own",
        version: "1",
        is_public: false,
        upstream_url: "http://127.0.0.1:9/mcp",
        headers: &headers,
        token_service_name: Some("github"),
        token_placement: Some("Authorization: Bearer {token}"),
        timeout_ms: 60_000,
    };
    db::services::insert(conn.conn(), org, service_id, &service, now).await.unwrap();
    drop(conn);
    let log_id = mcp_platform::ids::LogId::at(now);
    let call = mcp_platform::db::request_logs::NewRequestLog {
        id: log_id,
        organization_id: org,
        user_id: Some(developer.id),
        api_key_id: Some(key_id),
        mcp_service_id: Some(service_id),
        service_name: SERVICE.to_owned(),
        method: Some("tools/list".to_owned()),
        tool_name: None,
        session_tag: Some(1),
        request_body: Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_owned()),
        response_body: None,
        request_truncated: false,
        response_truncated: false,
        outcome: mcp_platform::db::request_logs::Outcome::Success,
        http_status: 200,
        error_code: None,
        error_message: None,
        duration_ms: 3,
        ip: None,
        user_agent: None,
        created_at: now,
        quota_counted: false,
        stateless: false,
    };
    mcp_platform::telemetry::writer::write_batch(&app.db, now, &[call]).await.unwrap();

    // A session of the developer's, as their account page names it.
    let browser = app.signed_in(&developer).await;
    let account = app.get(&browser, "/account").await.text().await.unwrap();
    let start = account.find("/account/sessions/").unwrap() + "/account/sessions/".len();
    let session_id = account[start..start + 36].to_owned();

    let secrets_of_first = vec![
        org.to_string(),
        viewer.id.to_string(),
        developer.id.to_string(),
        admin.id.to_string(),
        viewer.email.clone(),
        developer.email.clone(),
        admin.email.clone(),
        key_id.to_string(),
        log_id.to_string(),
        invitation_id.to_string(),
        invitation_email,
        session_id.clone(),
        "Acme Zeppelins".to_owned(),
        service_id.to_string(),
        SERVICE.to_owned(),
        "zeppelin-header-value".to_owned(),
    ];
    Fixture {
        viewer,
        developer,
        admin,
        foreign_admin,
        key_id,
        log_id,
        invitation_id,
        invitation_token,
        reset_token,
        session_id,
        secrets_of_first,
    }
}

/// The route's path with its parameters pointing at the first organization's resources.
fn concrete(path: &str, f: &Fixture) -> String {
    let id = if path.starts_with("/members/invitations/") {
        f.invitation_id.to_string()
    } else if path.starts_with("/members/") {
        f.developer.id.to_string()
    } else if path.starts_with("/account/sessions/") {
        f.session_id.clone()
    } else if path.starts_with("/logs/") {
        f.log_id.to_string()
    } else {
        f.key_id.to_string()
    };
    let token = if path.starts_with("/password-reset/") { &f.reset_token } else { &f.invitation_token };
    path.replace("{id}", &id)
        .replace("{service}", "github")
        .replace("{token}", token)
        .replace("{name}", SERVICE)
}

async fn call(
    app: &TestApp,
    actor: Option<&TestUser>,
    verb: Verb,
    path: &str,
    htmx: bool,
) -> reqwest::Response {
    let browser = match actor {
        Some(user) => app.signed_in(user).await,
        None => client(),
    };
    let page = if actor.is_some() { "/account" } else { "/login" };
    let token = csrf_token(&app.get(&browser, page).await.text().await.unwrap());
    let request = match verb {
        Verb::Get => browser.get(app.url(path)),
        Verb::Post => browser.post(app.url(path)).form(&[("csrf_token", token.as_str())]),
    };
    let request =
        if htmx { request.header("HX-Request", "true").header("X-CSRF-Token", token) } else { request };
    request.send().await.unwrap()
}

async fn every_route_answers_every_actor_as_designed(backend: Backend) {
    let settings = Settings { login_ip_limit: Some("100000".into()), ..Settings::default() };
    let app = spawn_app_with(backend, settings).await;

    let mut checked = 0;
    for spec in ROUTES {
        let outcomes = expected(spec.verb, spec.path).unwrap_or_else(|| {
            panic!("{:?} {} has no row in the authorization matrix: add one", spec.verb, spec.path)
        });
        // Fresh resources for every route, since allowed calls change them.
        let f = fixture(&app).await;
        let path = concrete(spec.path, &f);
        let actors = [None, Some(&f.foreign_admin), Some(&f.viewer), Some(&f.developer), Some(&f.admin)];
        for (actor, (name, want)) in actors.iter().zip(ACTORS.iter().zip(outcomes)) {
            let variants: &[bool] = if *name == "foreign admin" { &[true, false] } else { &[false] };
            for &htmx in variants {
                let response = call(&app, *actor, spec.verb, &path, htmx).await;
                let what =
                    format!("{:?} {} as {name}{}", spec.verb, spec.path, if htmx { " (htmx)" } else { "" });
                let status = response.status().as_u16();
                let redirect = location(&response);
                let body = response.text().await.unwrap();
                match want {
                    Status(want) => assert_eq!(status, want, "{what}: {body}"),
                    ToLogin => {
                        assert_eq!(status, 303, "{what}");
                        assert_eq!(redirect.as_deref(), Some("/login"), "{what}");
                    }
                    Forbidden(needed) => {
                        assert_eq!(status, 403, "{what}");
                        let says = format!("needs the {needed} role");
                        assert!(
                            body.contains(&says) && body.contains(&format!("signed in as a {name}")),
                            "{what}: {body}"
                        );
                    }
                }
                let public_by_token = spec.path.ends_with("/{token}");
                if *name == "foreign admin" && !public_by_token {
                    for secret in &f.secrets_of_first {
                        assert!(
                            !body.contains(secret.as_str()),
                            "{what} shows {secret} of another organization"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    eprintln!(
        "authorization matrix: {} routes x {} actors (+ htmx for the foreign admin) = {checked} checks",
        ROUTES.len(),
        ACTORS.len()
    );
    assert_eq!(checked, ROUTES.len() * (ACTORS.len() + 1));
}

async fn anonymous_htmx_requests_are_told_to_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_organization("Acme").await;
    let response = client().get(app.url("/account")).header("HX-Request", "true").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers().get("hx-redirect").unwrap(), "/login");
}
