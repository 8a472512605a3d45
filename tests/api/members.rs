use chrono::Duration;
use mcp_platform::config::Settings;
use mcp_platform::domain::Role;

use crate::helpers::gateway::key_verdict;
use crate::helpers::{Backend, TestApp, TestUser, client, location, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    inviting_another_organizations_member_reveals_nothing,
    two_links_for_one_email_accepted_at_once_make_one_account,
    an_invitation_link_works_once,
    expired_and_revoked_invitations_create_nothing,
    bad_invitations_are_refused_at_the_field,
    a_csv_with_a_bad_line_invites_no_one,
    the_last_active_admin_stays,
    deactivation_ends_sessions_and_keys,
    the_directory_searches_filters_and_pages,
    another_organization_gets_404,
    deactivating_asks_first_naming_the_keys_and_says_what_happened,
    changing_a_role_asks_first_saying_what_it_takes,
);

/// Invites `email` as `role` and returns the link from the page that shows it once.
async fn invite(app: &TestApp, admin: &reqwest::Client, email: &str, role: &str) -> String {
    let response =
        app.post_form(admin, "/members", "/members/invitations", &[("email", email), ("role", role)]).await;
    assert_eq!(response.status(), 200, "inviting {email}");
    links(&response.text().await.unwrap()).remove(0)
}

/// The links a page shows whole.
pub(crate) fn links(html: &str) -> Vec<String> {
    html.split("class=\"full-link\"")
        .skip(1)
        .map(|rest| {
            let start = rest.find('>').unwrap() + 1;
            rest[start..start + rest[start..].find('<').unwrap()].to_owned()
        })
        .collect()
}

/// Opens an invitation link in a fresh browser and chooses a password.
async fn accept(app: &TestApp, link: &str, password: &str) -> (reqwest::Client, reqwest::Response) {
    let path = &link[link.find("/invitations/").unwrap()..];
    let browser = client();
    // The token comes from the sign-in page, so used or expired links can be posted to as well.
    let fields = [("password", password), ("password_confirm", password)];
    let response = app.post_form(&browser, "/login", path, &fields).await;
    (browser, response)
}

pub(crate) async fn admin_of(
    app: &TestApp,
    name: &str,
) -> (mcp_platform::ids::OrgId, TestUser, reqwest::Client) {
    let org = app.create_organization(name).await;
    let admin = app.create_user(org, Role::Admin).await;
    let browser = app.signed_in(&admin).await;
    (org, admin, browser)
}

async fn an_invitation_link_works_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, admin) = admin_of(&app, "Acme").await;
    let link = invite(&app, &admin, "New.Person@Example.com", "developer").await;
    assert!(link.starts_with(&app.address) && link.contains("/invitations/"), "{link}");
    let token = link.rsplit('/').next().unwrap().to_owned();

    let members = app.get(&admin, "/members").await.text().await.unwrap();
    assert!(members.contains("new.person@example.com"), "listed as pending");
    assert!(!members.contains(&token), "the link is shown only once");

    let page = app.get(&client(), &link[app.address.len()..]).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Join Acme"));
    let (browser, response) = accept(&app, &link, "my own good password").await;
    assert_eq!(response.status(), 303);
    let home = app.get(&browser, "/").await.text().await.unwrap();
    assert!(home.contains("new.person@example.com") && home.contains("developer"));
    assert_eq!(app.login(&client(), "new.person@example.com", "my own good password").await.status(), 303);

    // Single use.
    let (_, again) = accept(&app, &link, "another good password").await;
    assert_eq!(again.status(), 422);
    assert!(again.text().await.unwrap().contains("This invitation can no longer be used"));
    assert_eq!(app.get(&client(), &link[app.address.len()..]).await.status(), 410);
    assert_eq!(app.count("users").await, 2);

    let rows = app.audit_rows().await;
    for action in ["invitation.created", "invitation.accepted"] {
        assert_eq!(rows.iter().filter(|(a, _, _)| a == action).count(), 1, "{action}");
    }
    assert!(rows.iter().all(|(_, _, text)| !text.contains(&token)), "no token in the audit trail");
    let logs = crate::helpers::captured_logs();
    assert!(logs.contains("/invitations/[token]"), "the access log names the route");
    assert!(!logs.contains(&token), "an invitation token reached a log line");
}

async fn expired_and_revoked_invitations_create_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, admin) = admin_of(&app, "Acme").await;
    let expiring = invite(&app, &admin, "late@example.com", "viewer").await;
    let revoked = invite(&app, &admin, "revoked@example.com", "viewer").await;

    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let start = html.find("/members/invitations/").unwrap() + "/members/invitations/".len();
    let id = &html[start..start + 36];
    let response = app.post_form(&admin, "/members", &format!("/members/invitations/{id}/revoke"), &[]).await;
    assert_eq!(response.status(), 303);
    let remaining = app.get(&admin, "/members").await.text().await.unwrap();
    let (gone, kept) = if remaining.contains("late@example.com") {
        (&revoked, "late@example.com")
    } else {
        (&expiring, "revoked@example.com")
    };
    assert!(remaining.contains(kept));
    let (_, response) = accept(&app, gone, "a good long password").await;
    assert_eq!(response.status(), 422, "a revoked invitation");

    app.clock.advance(Duration::days(8));
    for link in [&expiring, &revoked] {
        assert_eq!(app.get(&client(), &link[app.address.len()..]).await.status(), 410);
        let (_, response) = accept(&app, link, "a good long password").await;
        assert_eq!(response.status(), 422);
        assert!(response.text().await.unwrap().contains("This invitation can no longer be used"));
    }
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.get(&client(), "/invitations/not-a-real-token").await.status(), 404);
}

async fn bad_invitations_are_refused_at_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, admin_user, admin) = admin_of(&app, "Acme").await;
    let member = app.create_user(org, Role::Viewer).await;
    invite(&app, &admin, "pending@example.com", "viewer").await;
    for (email, role, message) in [
        ("not-an-email", "viewer", "Enter a valid email address"),
        (member.email.as_str(), "viewer", "is already a member of your organization"),
        (admin_user.email.as_str(), "admin", "is already a member of your organization"),
        ("pending@example.com", "viewer", "already has a pending invitation"),
        ("someone@example.com", "owner", "Choose admin, developer or viewer."),
    ] {
        let response = app
            .post_form(&admin, "/members", "/members/invitations", &[("email", email), ("role", role)])
            .await;
        assert_eq!(response.status(), 422, "{message}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message}");
        assert!(
            html.contains(&format!("id=\"invite-email\" name=\"email\" type=\"email\" value=\"{email}\"")),
            "kept"
        );
    }
    assert_eq!(app.count("invitations").await, 1);

    // A password that is too short is refused on the accept form, and nothing is created.
    let link = invite(&app, &admin, "fresh@example.com", "viewer").await;
    let (_, response) = accept(&app, &link, "short").await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("Use at least 12 characters"));
    assert_eq!(app.count("users").await, 2);
}

async fn a_csv_with_a_bad_line_invites_no_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    let member = app.create_user(org, Role::Viewer).await;
    let csv = format!(
        "email,role\na@example.com,developer\nnot-an-email,viewer\nb@example.com,root\n\n{},viewer\na@example.com,viewer\nc@example.com",
        member.email
    );
    let response = app.post_form(&admin, "/members", "/members/invitations/bulk", &[("csv", &csv)]).await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    for expected in [
        "Line 3: Enter a valid email address",
        "Line 4: unknown role &#34;root&#34;",
        "Line 6: ",
        "is already a member of your organization",
        "Line 7: a@example.com appears twice",
        "Line 8: expected email,role",
        "Nothing was created",
    ] {
        assert!(
            html.contains(expected) || html.contains(&expected.replace("&#34;", "&quot;")),
            "{expected}: {html}"
        );
    }
    assert!(html.contains("a@example.com,developer"), "the pasted text is kept");
    assert_eq!(app.count("invitations").await, 0);

    let response = app
        .post_form(
            &admin,
            "/members",
            "/members/invitations/bulk",
            &[("csv", "a@example.com,developer\n\"b@example.com\", viewer\n")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(links(&response.text().await.unwrap()).len(), 2);
    assert_eq!(app.count("invitations").await, 2);

    // The free plan allows 10 members, invitations included: 2 members and 2 invitations leave
    // room for 6.
    let seven: String = (0..7).map(|i| format!("seven-{i}@example.com,viewer\n")).collect();
    let response = app.post_form(&admin, "/members", "/members/invitations/bulk", &[("csv", &seven)]).await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(
        html.contains(
            "7 more would be too many: The free plan allows 10 members, and the organization has 4."
        ),
        "{html}"
    );
    assert_eq!(app.count("invitations").await, 2);
    let response = app
        .post_form(
            &admin,
            "/members",
            "/members/invitations",
            &[("email", "one@example.com"), ("role", "viewer")],
        )
        .await;
    assert_eq!(response.status(), 200, "one more fits");

    // A long paste (400 lines, over 20 KiB) is one form like any other, on a plan that has room.
    mcp_platform::db::organizations::set_plan(
        app.db.acquire().await.unwrap().conn(),
        org,
        "enterprise",
        app.clock_now(),
    )
    .await
    .unwrap();
    let many: String = (0..400)
        .map(|i| format!("person-number-{i:03}@a-rather-long-bulk-domain.example,viewer\n"))
        .collect();
    assert!(many.len() > 20 * 1024);
    let response = app.post_form(&admin, "/members", "/members/invitations/bulk", &[("csv", &many)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(links(&response.text().await.unwrap()).len(), 400);
    assert_eq!(app.count("invitations").await, 403);
}

pub(crate) fn member_id(html: &str, email: &str) -> String {
    let row = &html[..html.find(&format!("<td>{email}</td>")).unwrap()];
    let after_row = &html[row.len()..];
    let start = after_row.find("/members/").unwrap() + "/members/".len();
    after_row[start..start + 36].to_owned()
}

async fn the_last_active_admin_stays(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, admin_user, admin) = admin_of(&app, "Acme").await;
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let me = member_id(&html, &admin_user.email);

    let demote =
        app.post_form(&admin, "/members", &format!("/members/{me}/role"), &[("role", "viewer")]).await;
    assert_eq!(demote.status(), 422);
    assert!(demote.text().await.unwrap().contains("This is the last active admin"));
    let deactivate = app.post_form(&admin, "/members", &format!("/members/{me}/deactivate"), &[]).await;
    assert_eq!(deactivate.status(), 422);

    // With a second admin, the first can be demoted; then the second is the last one.
    let other = app.create_user(org, Role::Developer).await;
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let other_id = member_id(&html, &other.email);
    let promote =
        app.post_form(&admin, "/members", &format!("/members/{other_id}/role"), &[("role", "admin")]).await;
    assert_eq!(promote.status(), 303);
    let demote =
        app.post_form(&admin, "/members", &format!("/members/{me}/role"), &[("role", "developer")]).await;
    assert_eq!(demote.status(), 303);
    // The demoted user lost the admin pages at once.
    assert_eq!(app.get(&admin, "/members").await.status(), 403);
    let second = app.signed_in(&other).await;
    let response =
        app.post_form(&second, "/members", &format!("/members/{other_id}/role"), &[("role", "viewer")]).await;
    assert_eq!(response.status(), 422);
    let actions: Vec<String> = app.audit_rows().await.into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(actions.iter().filter(|a| *a == "member.role_changed").count(), 2);
}

async fn deactivation_ends_sessions_and_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let dev_browser = app.signed_in(&developer).await;
    let response = app
        .post_form(&dev_browser, "/keys", "/keys", &[("name", "ci"), ("scope", "mcp:read"), ("expiry", "30")])
        .await;
    let key = app.shown_key(&dev_browser, response).await;
    let second = app
        .post_form(
            &dev_browser,
            "/keys",
            "/keys",
            &[("name", "old"), ("scope", "mcp:read"), ("expiry", "30")],
        )
        .await;
    let revoked_key = app.shown_key(&dev_browser, second).await;
    let list = app.get(&dev_browser, "/keys").await.text().await.unwrap();
    let start = list.find("action=\"/keys/").unwrap() + "action=\"/keys/".len();
    let newest_id = &list[start..start + 36];
    app.post_form(&dev_browser, "/keys", &format!("/keys/{newest_id}/revoke"), &[]).await;

    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let id = member_id(&html, &developer.email);
    let response = app.post_form(&admin, "/members", &format!("/members/{id}/deactivate"), &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&app.get(&dev_browser, "/").await).as_deref(), Some("/login"), "signed out at once");
    assert_eq!(
        app.count(
            "sessions WHERE user_id IS NOT NULL AND user_id IN (SELECT id FROM users WHERE is_active = FALSE)"
        )
        .await,
        0
    );
    assert_eq!(key_verdict(&app, &key).await, Err("the API key has been revoked".to_owned()));
    assert_eq!(app.login(&client(), &developer.email, &developer.password).await.status(), 422);

    // Reactivated, the member signs in again, but keys that were out while they were
    // deactivated do not come back.
    let response = app.post_form(&admin, "/members", &format!("/members/{id}/reactivate"), &[]).await;
    assert_eq!(response.status(), 303);
    let dev_browser = app.signed_in(&developer).await;
    for old in [&key, &revoked_key] {
        assert_eq!(key_verdict(&app, old).await, Err("the API key has been revoked".to_owned()));
    }
    // The same for a member made viewer (who holds no keys) and then developer again.
    let html = app
        .post_form(
            &dev_browser,
            "/keys",
            "/keys",
            &[("name", "new"), ("scope", "mcp:read"), ("expiry", "30")],
        )
        .await;
    let newer = app.shown_key(&dev_browser, html).await;
    assert_eq!(key_verdict(&app, &newer).await, Ok(()));
    for role in ["viewer", "developer"] {
        let changed =
            app.post_form(&admin, "/members", &format!("/members/{id}/role"), &[("role", role)]).await;
        assert_eq!(changed.status(), 303);
    }
    assert_eq!(key_verdict(&app, &newer).await, Err("the API key has been revoked".to_owned()));
    let audit = app.audit_rows().await;
    assert!(
        audit
            .iter()
            .any(|(a, _, text)| a == "member.deactivated"
                && text.replace(" ", "").contains("\"keys_revoked\":1")),
        "{audit:?}"
    );
    assert!(audit.iter().any(
        |(a, _, text)| a == "member.role_changed" && text.replace(" ", "").contains("\"keys_revoked\":1")
    ));
    let actions: Vec<String> = app.audit_rows().await.into_iter().map(|(a, _, _)| a).collect();
    assert!(
        actions.contains(&"member.deactivated".to_owned())
            && actions.contains(&"member.reactivated".to_owned())
    );
}

async fn the_directory_searches_filters_and_pages(backend: Backend) {
    let app =
        spawn_app_with(backend, Settings { login_ip_limit: Some("1000".into()), ..Settings::default() })
            .await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    for i in 0..55 {
        let user = app.create_user(org, if i % 5 == 0 { Role::Viewer } else { Role::Developer }).await;
        let _ = user;
    }
    let page1 = app.get(&admin, "/members").await.text().await.unwrap();
    assert_eq!(page1.matches("@example.com</td>").count(), 50);
    let start = page1.find("href=\"/members?").expect("a next page link") + "href=\"".len();
    let next = page1[start..start + page1[start..].find('"').unwrap()].replace("&amp;", "&");
    let page2 = app.get(&admin, &next).await.text().await.unwrap();
    assert_eq!(page2.matches("@example.com</td>").count(), 6, "55 members and the admin");
    assert!(!page2.contains("Next page"));

    let viewers = app.get(&admin, "/members?role=viewer").await.text().await.unwrap();
    assert_eq!(viewers.matches("@example.com</td>").count(), 11);
    let admins = app.get(&admin, "/members?q=admin-").await.text().await.unwrap();
    assert_eq!(admins.matches("@example.com</td>").count(), 1);
    let none = app.get(&admin, "/members?q=%25").await.text().await.unwrap();
    assert!(none.contains("No member matches."), "% is searched literally");
    let deactivated = app.get(&admin, "/members?status=deactivated").await.text().await.unwrap();
    assert!(deactivated.contains("No member matches."));
}

async fn another_organization_gets_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    let member = app.create_user(org, Role::Developer).await;
    invite(&app, &admin, "pending@example.com", "viewer").await;
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let member_id = member_id(&html, &member.email);
    let start = html.find("/members/invitations/").unwrap() + "/members/invitations/".len();
    let invitation_id = html[start..start + 36].to_owned();

    let (_, _, foreign) = admin_of(&app, "Globex").await;
    let directory = app.get(&foreign, "/members").await.text().await.unwrap();
    assert!(!directory.contains(&member.email) && !directory.contains("pending@example.com"));
    for (path, fields) in [
        (format!("/members/{member_id}/role"), vec![("role", "viewer")]),
        (format!("/members/{member_id}/deactivate"), vec![]),
        (format!("/members/{member_id}/reactivate"), vec![]),
        (format!("/members/invitations/{invitation_id}/revoke"), vec![]),
    ] {
        let response = app.post_form(&foreign, "/members", &path, &fields).await;
        assert_eq!(response.status(), 404, "{path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(&member.email) && !body.contains(&member_id), "{path} leaks");
    }
    assert_eq!(
        app.signed_in(&member).await.get(app.url("/")).send().await.unwrap().status(),
        200,
        "still active"
    );
}

/// An admin probing for other organizations' members by inviting their emails learns nothing
/// from the answer: the invitation is made as for anyone; the link then cannot make a second
/// account for that email, and says what a used link says.
async fn inviting_another_organizations_member_reveals_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let globex = app.create_organization("Globex").await;
    let theirs = app.create_user(globex, Role::Developer).await;
    let (_, _, admin) = admin_of(&app, "Acme").await;

    let fresh = app
        .post_form(
            &admin,
            "/members",
            "/members/invitations",
            &[("email", "nobody@example.com"), ("role", "viewer")],
        )
        .await;
    let probe = app
        .post_form(
            &admin,
            "/members",
            "/members/invitations",
            &[("email", &theirs.email), ("role", "viewer")],
        )
        .await;
    assert_eq!((fresh.status().as_u16(), probe.status().as_u16()), (200, 200), "the same answer");
    let (fresh, probe) = (fresh.text().await.unwrap(), probe.text().await.unwrap());
    let strip = |html: &str, email: &str| {
        let links = links(html);
        html.replace(&links[0], "LINK").replace(email, "EMAIL")
    };
    assert_eq!(strip(&fresh, "nobody@example.com"), strip(&probe, &theirs.email), "the same page");
    let csv = format!("{},developer", theirs.email.to_uppercase());
    let bulk = app.post_form(&admin, "/members", "/members/invitations/bulk", &[("csv", &csv)]).await;
    assert_eq!(bulk.status(), 422, "a pending invitation already exists, as for anyone");

    // The link cannot take over the other organization's account.
    let link = links(&probe).remove(0);
    let (_, response) = accept(&app, &link, "a good long password").await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("This invitation can no longer be used"));
    assert_eq!(app.count("users").await, 2, "no second account for that email");
}

/// Two organizations invite the same email and both links are accepted at the same moment: one
/// account is made, and the other link ends like a used one, not with a 500.
async fn two_links_for_one_email_accepted_at_once_make_one_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, acme) = admin_of(&app, "Acme").await;
    let (_, _, globex) = admin_of(&app, "Globex").await;
    let links = [
        invite(&app, &acme, "twice@example.com", "viewer").await,
        invite(&app, &globex, "twice@example.com", "viewer").await,
    ];
    let accepts: Vec<_> = links
        .into_iter()
        .map(|link| {
            let app_url = app.address.clone();
            tokio::spawn(async move {
                let path = &link[link.find("/invitations/").unwrap()..];
                let browser = client();
                let page =
                    browser.get(format!("{app_url}{path}")).send().await.unwrap().text().await.unwrap();
                let token = crate::helpers::csrf_token(&page);
                let fields = [
                    ("password", "a good long password"),
                    ("password_confirm", "a good long password"),
                    ("csrf_token", &token),
                ];
                browser.post(format!("{app_url}{path}")).form(&fields).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for accept in accepts {
        statuses.push(accept.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [303, 422], "one account, one link refused like a used one");
    assert_eq!(app.count("users WHERE email = 'twice@example.com'").await, 1);
    // The loser of such a race meets the unique index, which the platform recognises by name on
    // either backend (a race is too quick to stage reliably here).
    let org = app.create_organization("Initech").await;
    let email = mcp_platform::domain::Email::parse("twice@example.com").unwrap();
    let user = mcp_platform::db::users::NewUser {
        id: mcp_platform::ids::UserId::new(),
        organization_id: org,
        email: &email,
        password_hash: "x",
        role: Role::Viewer,
    };
    let refused =
        mcp_platform::db::users::insert(app.db.acquire().await.unwrap().conn(), user, app.clock_now()).await;
    assert!(mcp_platform::db::users::email_taken(&refused.unwrap_err()));
}

/// Deactivating asks first, counting the keys that stop working (asking changes nothing); the
/// members page then says what was done, once. So do erasing logs and revoking an invitation.
async fn deactivating_asks_first_naming_the_keys_and_says_what_happened(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let dev_browser = app.signed_in(&developer).await;
    for name in ["laptop", "ci"] {
        let fields = [("name", name), ("scope", "mcp:read"), ("expiry", "30")];
        let made = app.post_form(&dev_browser, "/keys", "/keys", &fields).await;
        app.shown_key(&dev_browser, made).await;
    }
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let id = member_id(&html, &developer.email);
    assert!(html.contains(&format!("action=\"/members/{id}/deactivate\" data-confirm")));

    let question = app.get(&admin, &format!("/members/{id}/deactivate")).await.text().await.unwrap();
    assert!(question.contains(&format!("Deactivate {}?", developer.email)), "{question}");
    assert!(question.contains("Their 2 API keys are revoked and stop working at once"), "{question}");
    assert_eq!(app.get(&dev_browser, "/").await.status(), 200, "asking changes nothing");

    let done = app.post_form(&admin, "/members", &format!("/members/{id}/deactivate"), &[]).await;
    assert_eq!(done.status(), 303);
    let said = format!("{} was deactivated: 1 session ended, 2 API keys revoked.", developer.email);
    assert!(app.get(&admin, "/members").await.text().await.unwrap().contains(&said));
    assert!(!app.get(&admin, "/members").await.text().await.unwrap().contains(&said), "said once");

    let question = app.get(&admin, &format!("/members/{id}/erase-logs")).await.text().await.unwrap();
    assert!(question.contains("This cannot be undone."), "{question}");
    app.post_form(&admin, "/members", &format!("/members/{id}/erase-logs"), &[]).await;
    let page = app.get(&admin, "/members").await.text().await.unwrap();
    assert!(page.contains(&format!("0 request-log rows of {} erased.", developer.email)), "{page}");
    assert!(question_of_one_key_reads_well(&app, &admin, org).await);

    invite(&app, &admin, "later@example.com", "viewer").await;
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let start = html.find("/members/invitations/").unwrap() + "/members/invitations/".len();
    let invitation = &html[start..start + 36];
    let question =
        app.get(&admin, &format!("/members/invitations/{invitation}/revoke")).await.text().await.unwrap();
    assert!(question.contains("Revoke the invitation for later@example.com?"), "{question}");
    app.post_form(&admin, "/members", &format!("/members/invitations/{invitation}/revoke"), &[]).await;
    let page = app.get(&admin, "/members").await.text().await.unwrap();
    assert!(page.contains("The invitation for later@example.com was revoked."), "{page}");
}

/// A member with one key: "Their 1 API key is revoked and stops working".
async fn question_of_one_key_reads_well(
    app: &TestApp,
    admin: &reqwest::Client,
    org: mcp_platform::ids::OrgId,
) -> bool {
    let member = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&member).await;
    let made = app
        .post_form(&browser, "/keys", "/keys", &[("name", "one"), ("scope", "mcp:read"), ("expiry", "30")])
        .await;
    app.shown_key(&browser, made).await;
    let id = member_id(&app.get(admin, "/members").await.text().await.unwrap(), &member.email);
    let question = app.get(admin, &format!("/members/{id}/deactivate")).await.text().await.unwrap();
    question.contains("Their 1 API key is revoked and stops working at once")
}

async fn changing_a_role_asks_first_saying_what_it_takes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, _, admin) = admin_of(&app, "Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;
    let made = app
        .post_form(&browser, "/keys", "/keys", &[("name", "one"), ("scope", "mcp:read"), ("expiry", "30")])
        .await;
    let key = app.shown_key(&browser, made).await;
    let html = app.get(&admin, "/members").await.text().await.unwrap();
    let id = member_id(&html, &developer.email);
    assert!(html.contains(&format!("action=\"/members/{id}/role\" class=\"inline\" data-confirm")));

    let question = app.get(&admin, &format!("/members/{id}/role?role=viewer")).await.text().await.unwrap();
    assert!(question.contains(&format!("Make {} a viewer?", developer.email)), "{question}");
    assert!(question.contains("their 1 API key is revoked at once"), "{question}");
    assert!(question.contains(r#"<input type="hidden" name="role" value="viewer">"#), "{question}");
    assert_eq!(key_verdict(&app, &key).await, Ok(()), "asking changes nothing");
    let question = app.get(&admin, &format!("/members/{id}/role?role=admin")).await.text().await.unwrap();
    assert!(question.contains(&format!("Make {} an admin?", developer.email)), "{question}");
    let bad = app.get(&admin, &format!("/members/{id}/role?role=owner")).await;
    assert_eq!(bad.status(), 422);

    app.post_form(&admin, "/members", &format!("/members/{id}/role"), &[("role", "viewer")]).await;
    let page = app.get(&admin, "/members").await.text().await.unwrap();
    assert!(page.contains(&format!("{} is now a viewer; 1 API key revoked.", developer.email)), "{page}");
    assert_eq!(key_verdict(&app, &key).await, Err("the API key has been revoked".to_owned()));
}
