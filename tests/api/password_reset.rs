//! Account recovery: an admin's single-use password-reset link for a member, and the
//! operator's (`admin reset-password`) for anyone.

use chrono::Duration;
use mcp_platform::domain::Role;

use crate::cli::binary;
use crate::helpers::gateway::key_verdict;
use crate::helpers::{Backend, TestApp, client, location, spawn_app};
use crate::members::{admin_of, links, member_id};
use crate::on_both_backends;

on_both_backends!(
    a_reset_link_sets_a_new_password_once_and_ends_sessions_not_keys,
    reset_links_expire_are_replaced_and_stay_in_their_organization,
    the_operator_prints_a_reset_link_for_the_last_admin,
);

/// An admin issues a link for `email` and gets it from the page that shows it once.
async fn issue(app: &TestApp, admin: &reqwest::Client, email: &str) -> String {
    let html = app.get(admin, "/members").await.text().await.unwrap();
    let id = member_id(&html, email);
    let response = app.post_form(admin, "/members", &format!("/members/{id}/password-reset"), &[]).await;
    assert_eq!(response.status(), 200, "issuing a link for {email}");
    let page = response.text().await.unwrap();
    assert!(page.contains(&format!("Password-reset link for {email}")), "{page}");
    links(&page).remove(0)
}

/// Opens the link in a fresh browser and sends the two password fields.
async fn reset(
    app: &TestApp,
    link: &str,
    password: &str,
    confirm: &str,
) -> (reqwest::Client, reqwest::Response) {
    let path = &link[link.find("/password-reset/").unwrap()..];
    let browser = client();
    let fields = [("password", password), ("password_confirm", confirm)];
    let response = app.post_form(&browser, "/login", path, &fields).await;
    (browser, response)
}

async fn a_reset_link_sets_a_new_password_once_and_ends_sessions_not_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let dev_browser = app.signed_in(&developer).await;
    let response = app
        .post_form(&dev_browser, "/keys", "/keys", &[("name", "ci"), ("scope", "mcp:read"), ("expiry", "30")])
        .await;
    let key = app.shown_key(&dev_browser, response).await;

    let link = issue(&app, &admin, &developer.email).await;
    assert!(link.starts_with(&format!("{}/password-reset/", app.address)), "{link}");
    let token = link.rsplit('/').next().unwrap().to_owned();
    let members = app.get(&admin, "/members").await.text().await.unwrap();
    assert!(!members.contains(&token), "the link is shown only once");

    let page = app.get(&client(), &link[app.address.len()..]).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Choose a new password") && page.contains(&developer.email));

    // Bad input is refused at the field, and the link still works after.
    let (_, short) = reset(&app, &link, "short", "short").await;
    assert_eq!(short.status(), 422);
    assert!(short.text().await.unwrap().contains("at least 12 characters"));
    let (_, mismatch) = reset(&app, &link, "a brand new password", "a different password").await;
    assert_eq!(mismatch.status(), 422);
    assert!(mismatch.text().await.unwrap().contains("The passwords do not match."));

    let (browser, done) = reset(&app, &link, "a brand new password", "a brand new password").await;
    assert_eq!(done.status(), 303);
    let home = app.get(&browser, "/").await.text().await.unwrap();
    assert!(home.contains(&developer.email), "the link's holder is signed in");
    assert_eq!(
        location(&app.get(&dev_browser, "/").await).as_deref(),
        Some("/login"),
        "the old session ended"
    );
    assert_eq!(app.login(&client(), &developer.email, &developer.password).await.status(), 422);
    assert_eq!(app.login(&client(), &developer.email, "a brand new password").await.status(), 303);
    assert_eq!(key_verdict(&app, &key).await, Ok(()), "API keys stay");

    // Single use.
    let (_, again) = reset(&app, &link, "yet another password", "yet another password").await;
    assert_eq!(again.status(), 422);
    assert!(again.text().await.unwrap().contains("This link can no longer be used"));
    assert_eq!(app.get(&client(), &link[app.address.len()..]).await.status(), 410);
    assert_eq!(app.login(&client(), &developer.email, "a brand new password").await.status(), 303);

    let rows = app.audit_rows().await;
    for action in ["member.password_reset_issued", "account.password_reset"] {
        assert_eq!(rows.iter().filter(|(a, _, _)| a == action).count(), 1, "{action}: {rows:?}");
    }
    assert!(rows.iter().all(|(_, _, text)| !text.contains(&token)), "no token in the audit trail");
    let logs = crate::helpers::captured_logs();
    assert!(logs.contains("/password-reset/[token]"), "the access log names the route");
    assert!(!logs.contains(&token), "a reset token reached a log line");
}

async fn reset_links_expire_are_replaced_and_stay_in_their_organization(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, admin_user, admin) = admin_of(&app, "Acme").await;
    let member = app.create_user(org, Role::Viewer).await;
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let id = member_id(&html, &member.email);
    let first = issue(&app, &admin, &member.email).await;
    let second = issue(&app, &admin, &member.email).await;
    assert_eq!(app.get(&client(), &first[app.address.len()..]).await.status(), 410, "replaced");
    assert_eq!(app.get(&client(), &second[app.address.len()..]).await.status(), 200);
    app.clock.advance(Duration::hours(25));
    assert_eq!(app.get(&client(), &second[app.address.len()..]).await.status(), 410, "expired");
    let (_, late) = reset(&app, &second, "a brand new password", "a brand new password").await;
    assert_eq!(late.status(), 422);
    assert_eq!(app.login(&client(), &member.email, &member.password).await.status(), 303, "unchanged");
    assert_eq!(app.get(&client(), "/password-reset/not-a-real-token").await.status(), 404);

    // Another organization's admin cannot issue one.
    let admin = app.signed_in(&admin_user).await;
    let (_, _, foreign) = admin_of(&app, "Globex").await;
    let response = app.post_form(&foreign, "/members", &format!("/members/{id}/password-reset"), &[]).await;
    assert_eq!(response.status(), 404);
    assert!(!response.text().await.unwrap().contains(&member.email));

    // A deactivated member gets none: the admin is told why at the row.
    let deactivated = app.post_form(&admin, "/members", &format!("/members/{id}/deactivate"), &[]).await;
    assert_eq!(deactivated.status(), 303);
    let refused = app.post_form(&admin, "/members", &format!("/members/{id}/password-reset"), &[]).await;
    assert_eq!(refused.status(), 422);
    assert!(
        refused.text().await.unwrap().contains("Reactivate this member before resetting their password.")
    );
    let issued = app.audit_rows().await.into_iter().filter(|(a, _, _)| a == "member.password_reset_issued");
    assert_eq!(issued.count(), 2);
}

async fn the_operator_prints_a_reset_link_for_the_last_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, admin, _) = admin_of(&app, "Acme").await;
    let env =
        [("DATABASE_URL", app.database_url.as_str()), ("MCP_PLATFORM_PUBLIC_URL", "https://mcp.example.com")];

    let output = binary(&env, &["admin", "reset-password", "--email", &admin.email.to_uppercase()], "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let link = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(link.starts_with("https://mcp.example.com/password-reset/"), "printed on the public URL: {link}");
    let local = format!("{}{}", app.address, &link["https://mcp.example.com".len()..]);
    let (browser, done) = reset(&app, &local, "the admin's new password", "the admin's new password").await;
    assert_eq!(done.status(), 303);
    assert_eq!(app.get(&browser, "/members").await.status(), 200, "signed in as the admin");
    assert_eq!(app.login(&client(), &admin.email, "the admin's new password").await.status(), 303);
    let rows = app.audit_rows().await;
    assert!(
        rows.iter().any(|(a, _, text)| a == "member.password_reset_issued" && text.contains("operator")),
        "{rows:?}"
    );

    let unknown = binary(&env, &["admin", "reset-password", "--email", "nobody@example.com"], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--email: there is no account"));
    assert!(unknown.stdout.is_empty());
}
