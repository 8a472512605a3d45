use mcp_platform::clock::Clock;
use mcp_platform::crypto::keyring::{Binding, OpenError, key_id_of};
use mcp_platform::crypto::rotation::reseal_tokens;
use mcp_platform::db::{self, Db};
use mcp_platform::domain::Role;
use secrecy::ExposeSecret;

use crate::helpers::{Backend, TestApp, TestUser, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    tokens_are_write_only_and_sealed,
    bad_token_forms_save_nothing,
    a_sealed_token_only_opens_for_its_own_row,
    rotation_reseals_every_token_and_can_resume,
    the_token_form_offers_the_names_the_services_use,
    deleting_a_token_or_a_service_asks_first_and_says_what_happened,
);

const GITHUB_TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";

async fn save_token(
    app: &TestApp,
    browser: &reqwest::Client,
    service: &str,
    token: &str,
) -> reqwest::Response {
    app.post_form(browser, "/tokens", "/tokens", &[("service_name", service), ("token", token)]).await
}

async fn sealed(
    app: &TestApp,
    user: &TestUser,
    org: mcp_platform::ids::OrgId,
    service: &str,
) -> db::user_tokens::SealedRow {
    db::user_tokens::find_sealed(app.db.acquire().await.unwrap().conn(), org, user.id, service)
        .await
        .unwrap()
        .unwrap()
}

async fn open(app: &TestApp, row: &db::user_tokens::SealedRow) -> Result<String, OpenError> {
    let binding = Binding {
        organization_id: row.organization_id,
        user_id: row.user_id,
        service_name: &row.service_name,
    };
    app.master
        .token_keyring()
        .open(&app.db, &row.ciphertext, binding)
        .await
        .map(|s| s.expose_secret().to_owned())
}

async fn tokens_are_write_only_and_sealed(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&user).await;

    let response = save_token(&app, &browser, "github", GITHUB_TOKEN).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("Your github token is saved."));
    assert!(html.contains("••••8B4a"), "the last four characters identify it");
    for page in ["/tokens", "/", "/account", "/keys"] {
        let html = app.get(&browser, page).await.text().await.unwrap();
        assert!(
            !html.contains(GITHUB_TOKEN) && !html.contains(&GITHUB_TOKEN[..20]),
            "{page} shows the token"
        );
    }

    let row = sealed(&app, &user, org, "github").await;
    assert!(!String::from_utf8_lossy(&row.ciphertext).contains("ghp_"), "the token is not stored in clear");
    assert_eq!(key_id_of(&row.ciphertext).unwrap(), row.key_id, "the ciphertext names its key");
    assert_eq!(open(&app, &row).await.unwrap(), GITHUB_TOKEN);

    // Replacing it re-seals; the old value is gone.
    let replacement = "ghp_ReplacementTokenValue0000000000000000";
    assert_eq!(save_token(&app, &browser, "github", replacement).await.status(), 200);
    let replaced = sealed(&app, &user, org, "github").await;
    assert_ne!(replaced.ciphertext, row.ciphertext);
    assert_eq!(open(&app, &replaced).await.unwrap(), replacement);
    assert_eq!(app.count("user_tokens").await, 1);

    // Deleting it: once, then 404.
    let response = app.post_form(&browser, "/tokens", "/tokens/github/delete", &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(app.post_form(&browser, "/tokens", "/tokens/github/delete", &[]).await.status(), 404);
    assert_eq!(app.count("user_tokens").await, 0);

    let rows = app.audit_rows().await;
    let actions: Vec<&str> =
        rows.iter().map(|(a, _, _)| a.as_str()).filter(|a| a.starts_with("service_token.")).collect();
    assert_eq!(actions, ["service_token.created", "service_token.replaced", "service_token.deleted"]);
    for (action, _, text) in &rows {
        assert!(
            !text.contains(GITHUB_TOKEN) && !text.contains(replacement) && !text.contains("8B4a"),
            "{action}: {text}"
        );
    }
}

async fn bad_token_forms_save_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&user).await;
    for (service, token, message) in [
        ("github", "", "Paste the token."),
        ("github", "   ", "Paste the token."),
        ("GitHub!", GITHUB_TOKEN, "Use lower-case letters"),
        ("", GITHUB_TOKEN, "Enter the service name"),
        ("github", "line\nbreak", "cannot contain line breaks"),
    ] {
        let response = save_token(&app, &browser, service, token).await;
        assert_eq!(response.status(), 422, "{message}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message}: {html}");
        assert!(html.contains(&format!("name=\"service_name\" value=\"{service}\"")), "service kept");
        assert!(token.trim().is_empty() || !html.contains(token), "the token is never echoed back");
    }
    assert_eq!(app.count("user_tokens").await, 0);
}

async fn a_sealed_token_only_opens_for_its_own_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let alice = app.create_user(org, Role::Developer).await;
    let mallory = app.create_user(org, Role::Developer).await;
    save_token(&app, &app.signed_in(&alice).await, "github", GITHUB_TOKEN).await;
    save_token(&app, &app.signed_in(&mallory).await, "github", "ghp_MalloryOwnTokenValue00000000000000000")
        .await;

    // An attacker with write access to the database copies Alice's ciphertext into her own row.
    let stolen = sealed(&app, &alice, org, "github").await;
    let sql = "UPDATE user_tokens SET ciphertext = $1 WHERE user_id = $2";
    match &app.db {
        Db::Sqlite(pool) => {
            sqlx::query(sql).bind(&stolen.ciphertext).bind(mallory.id).execute(pool).await.unwrap();
        }
        Db::Postgres(pool) => {
            sqlx::query(sql).bind(&stolen.ciphertext).bind(mallory.id).execute(pool).await.unwrap();
        }
    }
    let moved = sealed(&app, &mallory, org, "github").await;
    assert!(matches!(open(&app, &moved).await, Err(OpenError::Rejected)));
    assert_eq!(open(&app, &stolen).await.unwrap(), GITHUB_TOKEN, "the original still opens");
}

async fn rotation_reseals_every_token_and_can_resume(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let mut users = Vec::new();
    for i in 0..5 {
        let user = app.create_user(org, Role::Developer).await;
        let token = format!("ghp_user{i}TokenValue000000000000000000000");
        assert_eq!(save_token(&app, &app.signed_in(&user).await, "github", &token).await.status(), 200);
        users.push((user, token));
    }
    let keyring = app.master.token_keyring();
    let old_key = sealed(&app, &users[0].0, org, "github").await.key_id;

    // Interrupted: a new key, then only one batch of two.
    let new_key = keyring.add_key(&app.db, app.clock.now()).await.unwrap();
    let progress = reseal_tokens(&app.db, &keyring, app.clock.as_ref(), 2, Some(1)).await.unwrap();
    assert_eq!((progress.resealed, progress.failed, progress.remaining), (2, 0, 3));
    for (user, token) in &users {
        let row = sealed(&app, user, org, "github").await;
        assert!(row.key_id == new_key || row.key_id == old_key);
        assert_eq!(&open(&app, &row).await.unwrap(), token, "every token opens mid-rotation");
    }

    // The running server seals new tokens with the new key at once.
    let late = app.create_user(org, Role::Developer).await;
    save_token(&app, &app.signed_in(&late).await, "github", "ghp_LateTokenValue0000000000000000000000").await;
    assert_eq!(sealed(&app, &late, org, "github").await.key_id, new_key);

    // Resumed to the end.
    let progress = reseal_tokens(&app.db, &keyring, app.clock.as_ref(), 2, None).await.unwrap();
    assert_eq!((progress.resealed, progress.remaining), (3, 0));
    for (user, token) in &users {
        let row = sealed(&app, user, org, "github").await;
        assert_eq!(row.key_id, new_key);
        assert_eq!(key_id_of(&row.ciphertext).unwrap(), new_key);
        assert_eq!(&open(&app, &row).await.unwrap(), token);
    }

    // The command does the same against the running server's database.
    let output = crate::cli::run_binary(
        &[
            ("DATABASE_URL", app.database_url.as_str()),
            ("MCP_PLATFORM_SECRET_KEY", app.master.encode().as_str()),
        ],
        &["rotate-key", "--batch-size", "2"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("re-sealed 6 tokens"));
    let newest = sealed(&app, &late, org, "github").await.key_id;
    assert_ne!(newest, new_key);
    for (user, token) in &users {
        let row = sealed(&app, user, org, "github").await;
        assert_eq!(row.key_id, newest);
        assert_eq!(&open(&app, &row).await.unwrap(), token);
    }
    // And the server opens tokens sealed under a key it has never seen: saving still works.
    assert_eq!(
        save_token(&app, &app.signed_in(&late).await, "gitlab", "glpat-AnotherTokenValue000000")
            .await
            .status(),
        200
    );
}

async fn the_token_form_offers_the_names_the_services_use(backend: Backend) {
    use crate::helpers::gateway::add_service;
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let other = app.create_organization("Other").await;
    add_service(&app, org, "repos", "https://mcp.example.com/repos", Some("github"), 10_000).await;
    add_service(&app, org, "projects", "https://mcp.example.com/projects", Some("github"), 10_000).await;
    add_service(&app, org, "issues", "https://mcp.example.com/issues", Some("linear"), 10_000).await;
    add_service(&app, org, "weather", "https://mcp.example.com/weather", None, 10_000).await;
    add_service(&app, other, "secret-project", "https://mcp.example.com/x", Some("jira"), 10_000).await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;
    assert_eq!(save_token(&app, &browser, "github", GITHUB_TOKEN).await.status(), 200);

    let page = app.get(&browser, "/tokens").await.text().await.unwrap();
    let github = r#"<code>github</code>, for <a href="/services/projects">projects</a>, <a href="/services/repos">repos</a>: set"#;
    assert!(page.contains(github), "{page}");
    let linear =
        r#"<code>linear</code>, for <a href="/services/issues">issues</a>: <strong>not set</strong>"#;
    assert!(page.contains(linear), "{page}");
    assert!(
        page.contains(
            r#"<datalist id="token-names"><option value="github"><option value="linear"></datalist>"#
        )
    );
    // Another organization's services are not named.
    assert!(!page.contains("jira") && !page.contains("secret-project"));
}

/// Deleting a token asks first, naming the services that stop working for the member; deleting
/// a service asks first, naming its gateway path; each ends with a notice.
async fn deleting_a_token_or_a_service_asks_first_and_says_what_happened(backend: Backend) {
    use crate::helpers::gateway::add_service;
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    add_service(&app, org, "repos", "https://mcp.example.com/repos", Some("github"), 10_000).await;
    add_service(&app, org, "projects", "https://mcp.example.com/projects", Some("github"), 10_000).await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let browser = app.signed_in(&developer).await;
    save_token(&app, &browser, "github", GITHUB_TOKEN).await;
    let page = app.get(&browser, "/tokens").await.text().await.unwrap();
    assert!(page.contains(r#"action="/tokens/github/delete" data-confirm"#), "{page}");

    let question = app.get(&browser, "/tokens/github/delete").await.text().await.unwrap();
    assert!(question.contains("Delete your github token?"), "{question}");
    assert!(question.contains("2 services (projects, repos) stop working for you"), "{question}");
    assert_eq!(app.get(&browser, "/tokens/linear/delete").await.status(), 404, "no such token");
    app.post_form(&browser, "/tokens", "/tokens/github/delete", &[]).await;
    let page = app.get(&browser, "/tokens").await.text().await.unwrap();
    assert!(page.contains("Your github token was deleted."), "{page}");
    assert_eq!(app.count("user_tokens").await, 0);

    let admin_browser = app.signed_in(&admin).await;
    let question = app.get(&admin_browser, "/services/repos/delete").await.text().await.unwrap();
    assert!(question.contains("Delete service repos?") && question.contains("/mcp/repos stops answering"));
    app.post_form(&admin_browser, "/services/repos", "/services/repos/delete", &[]).await;
    let page = app.get(&admin_browser, "/services").await.text().await.unwrap();
    assert!(page.contains("Service repos was deleted."), "{page}");
}
