//! Each change and sign-in writes exactly one audit row, and no row holds a secret.

use std::collections::BTreeMap;

use mcp_platform::config::Settings;

use crate::helpers::{Backend, client, csrf_token, session_cookie, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    every_action_writes_exactly_one_row_without_secrets,
    the_audit_trail_reads_as_sentences_with_links_changes_and_a_csv,
);

fn value_after(html: &str, marker: &str) -> String {
    let start = html.find(marker).unwrap_or_else(|| panic!("{marker} not in page")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn every_action_writes_exactly_one_row_without_secrets(backend: Backend) {
    let app =
        spawn_app_with(backend, Settings { login_ip_limit: Some("1000".into()), ..Settings::default() })
            .await;
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut did = |action: &'static str| *expected.entry(action).or_default() += 1;

    // Setup, then the admin's own account actions.
    let admin = client();
    let admin_password = "admin passphrase one";
    let response = app
        .post_form(
            &admin,
            "/setup",
            "/setup",
            &[
                ("organization", "Acme"),
                ("email", "admin@acme.example"),
                ("password", admin_password),
                ("password_confirm", admin_password),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    secrets.push(session_cookie(response.headers()).unwrap());
    did("organization.created");
    secrets.push(admin_password.into());

    let wrong = app.login(&client(), "admin@acme.example", "a wrong password guess").await;
    assert_eq!(wrong.status(), 422);
    did("auth.sign_in_failed");
    secrets.push("a wrong password guess".into());
    let second = client();
    assert_eq!(app.login(&second, "admin@acme.example", admin_password).await.status(), 303);
    did("auth.sign_in");
    let account = app.get(&admin, "/account").await.text().await.unwrap();
    secrets.push(csrf_token(&account));
    let current =
        value_after(&account[account.find("this session").unwrap()..], "action=\"/account/sessions/");
    let other = account
        .split("action=\"/account/sessions/")
        .skip(1)
        .map(|rest| rest[..36].to_owned())
        .find(|id| *id != current[..36])
        .unwrap();
    let response = app.post_form(&admin, "/account", &format!("/account/sessions/{other}/end"), &[]).await;
    assert_eq!(response.status(), 303);
    did("account.session_ended");
    let new_password = "admin passphrase two";
    let fields = [
        ("current_password", admin_password),
        ("new_password", new_password),
        ("new_password_confirm", new_password),
    ];
    assert_eq!(app.post_form(&admin, "/account", "/account/password", &fields).await.status(), 200);
    did("account.password_changed");
    secrets.push(new_password.into());

    // Organization settings.
    let fields = [
        ("name", "Acme Robotics"),
        ("contact_email", "ops@acme.example"),
        ("default_key_expiry_days", "90"),
        ("log_retention_days", "30"),
        ("rollup_retention_days", "1095"),
        ("audit_retention_days", "365"),
    ];
    assert_eq!(app.post_form(&admin, "/organization", "/organization", &fields).await.status(), 200);
    did("organization.updated");

    // Invitations: one revoked, one accepted.
    for email in ["gone@acme.example", "dev@acme.example"] {
        let response = app
            .post_form(&admin, "/members", "/members/invitations", &[("email", email), ("role", "developer")])
            .await;
        let html = response.text().await.unwrap();
        let start = html.find("class=\"full-link\"").expect("the link is shown");
        let start = start + html[start..].find('>').unwrap() + 1;
        let link = html[start..start + html[start..].find('<').unwrap()].to_owned();
        secrets.push(link.rsplit('/').next().unwrap().to_owned());
        did("invitation.created");
        if email.starts_with("gone") {
            let members = app.get(&admin, "/members").await.text().await.unwrap();
            let id = value_after(&members, "action=\"/members/invitations/")[..36].to_owned();
            assert_eq!(
                app.post_form(&admin, "/members", &format!("/members/invitations/{id}/revoke"), &[])
                    .await
                    .status(),
                303
            );
            did("invitation.revoked");
        } else {
            let developer = client();
            let path = &link[link.find("/invitations/").unwrap()..];
            let fields = [("password", "developer passphrase"), ("password_confirm", "developer passphrase")];
            assert_eq!(app.post_form(&developer, path, path, &fields).await.status(), 303);
            did("invitation.accepted");
            secrets.push("developer passphrase".into());

            // The developer's keys and tokens.
            let response = app
                .post_form(
                    &developer,
                    "/keys",
                    "/keys",
                    &[("name", "ci"), ("scope", "mcp:read"), ("expiry", "30")],
                )
                .await;
            secrets.push(app.shown_key(&developer, response).await);
            did("api_key.created");
            let keys = app.get(&developer, "/keys").await.text().await.unwrap();
            let key_id = value_after(&keys, "action=\"/keys/")[..36].to_owned();
            let response = app
                .post_form(&developer, "/keys", &format!("/keys/{key_id}/roll"), &[("grace_hours", "1")])
                .await;
            secrets.push(app.shown_key(&developer, response).await);
            did("api_key.rolled");
            assert_eq!(
                app.post_form(&developer, "/keys", &format!("/keys/{key_id}/revoke"), &[]).await.status(),
                303
            );
            did("api_key.revoked");
            for (token, action) in [
                ("ghp_firstTokenValue0000000000000000001", "service_token.created"),
                ("ghp_secondTokenValue000000000000000002", "service_token.replaced"),
            ] {
                let fields = [("service_name", "github"), ("token", token)];
                assert_eq!(app.post_form(&developer, "/tokens", "/tokens", &fields).await.status(), 200);
                did(action);
                secrets.push(token.into());
            }
            assert_eq!(
                app.post_form(&developer, "/tokens", "/tokens/github/delete", &[]).await.status(),
                303
            );
            did("service_token.deleted");
            assert_eq!(app.post_form(&developer, "/account", "/logout", &[]).await.status(), 303);
            did("auth.sign_out");
        }
    }

    // Members: role change, deactivation, reactivation.
    let members = app.get(&admin, "/members").await.text().await.unwrap();
    let row = &members[members.find("<td>dev@acme.example</td>").unwrap()..];
    let developer_id = value_after(row, "action=\"/members/")[..36].to_owned();
    let response = app
        .post_form(&admin, "/members", &format!("/members/{developer_id}/role"), &[("role", "viewer")])
        .await;
    assert_eq!(response.status(), 303);
    did("member.role_changed");
    for action in ["deactivate", "reactivate"] {
        let response =
            app.post_form(&admin, "/members", &format!("/members/{developer_id}/{action}"), &[]).await;
        assert_eq!(response.status(), 303);
        did(if action == "deactivate" { "member.deactivated" } else { "member.reactivated" });
    }

    let rows = app.audit_rows().await;
    let mut actual: BTreeMap<&str, usize> = BTreeMap::new();
    for (action, _, _) in &rows {
        *actual.entry(action.as_str()).or_default() += 1;
    }
    assert_eq!(actual, expected, "one row per action");
    for (action, _, text) in &rows {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{action} holds a secret: {text}");
        }
    }
    eprintln!("audit: {} actions, {} rows, {} secrets checked", expected.len(), rows.len(), secrets.len());
}

/// Each entry is a sentence naming who did what to which thing, linked to that thing while it
/// exists, with the fields that changed; the CSV export keeps the filters and neutralises
/// cells a spreadsheet would run.
async fn the_audit_trail_reads_as_sentences_with_links_changes_and_a_csv(backend: Backend) {
    use mcp_platform::domain::Role;
    let app = crate::helpers::spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin_user = app.create_user(org, Role::Admin).await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.signed_in(&admin_user).await;
    let dev = app.signed_in(&developer).await;
    let fields = [("name", "=HYPERLINK(\"x\")"), ("scope", "mcp:read"), ("expiry", "30")];
    let made = app.post_form(&dev, "/keys", "/keys", &fields).await;
    let key = app.shown_key(&dev, made).await;
    let display = format!("{}...{}", &key[..11], &key[key.len() - 4..]);
    let members = app.get(&admin, "/members").await.text().await.unwrap();
    let id = crate::members::member_id(&members, &developer.email);
    app.post_form(&admin, "/members", &format!("/members/{id}/role"), &[("role", "viewer")]).await;

    let page = app.get(&admin, "/audit").await.text().await.unwrap();
    let role = format!("{} made {} a viewer (was developer)", admin_user.email, developer.email);
    assert!(page.contains(&role), "{page}");
    assert!(page.contains("role: <del>developer</del> → <ins>viewer</ins>"), "{page}");
    assert!(page.contains("keys revoked: <ins>1</ins>"), "{page}");
    let member_link =
        format!("<a href=\"/members?q={}\">see member</a>", developer.email.replace('@', "%40"));
    assert!(page.contains(&member_link), "a link to the member, who exists: {page}");
    let created = format!("{} created API key =HYPERLINK(&#34;x&#34;) ({display})", developer.email);
    assert!(page.contains(&created), "{page}");
    assert!(page.contains("<code>member.role_changed</code>"), "the action's code is still there");

    // The export keeps the filter, says the same sentences, and defuses formulas.
    let csv = app.get(&admin, "/audit/export.csv?action=member.").await;
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("time,actor,action,what_happened,object,"), "{csv}");
    assert!(csv.contains(&role), "{csv}");
    assert!(!csv.contains("api_key.created"), "filtered to members: {csv}");
    let all = app.get(&admin, "/audit/export.csv").await.text().await.unwrap();
    assert!(all.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "the key's name is neutralised: {all}");
    assert_eq!(app.get(&admin, "/audit/export.csv?from=yesterday").await.status(), 422);
}
