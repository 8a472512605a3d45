use chrono::Duration;
use mcp_platform::domain::Role;

use crate::helpers::{Backend, client, location, session_cookie, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    sign_in_renews_the_session_id,
    idle_sessions_expire,
    sessions_end_after_twelve_hours_however_active,
    logout_ends_the_session_on_the_server,
    password_change_ends_other_sessions,
    account_page_lists_sessions_and_ends_them,
);

/// A client that presents exactly this session cookie and nothing else.
fn replay(cookie: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", format!("mcp_session={cookie}").parse().unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn sign_in_renews_the_session_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let browser = client();

    let login_page = app.get(&browser, "/login").await;
    let before = session_cookie(login_page.headers()).expect("the sign-in page starts a session");
    let token = crate::helpers::csrf_token(&login_page.text().await.unwrap());
    let response = browser
        .post(app.url("/login"))
        .form(&[("email", user.email.as_str()), ("password", &user.password), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let after = session_cookie(response.headers()).expect("sign-in sets a new session cookie");
    assert_ne!(before, after);

    // Session fixation: the id known before sign-in is worth nothing afterwards.
    assert_eq!(location(&app.get(&replay(&before), "/").await).as_deref(), Some("/login"));
    assert_eq!(app.get(&replay(&after), "/").await.status(), 200);
}

async fn idle_sessions_expire(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let browser = app.signed_in(&user).await;

    // Activity keeps the session alive...
    app.clock.advance(Duration::minutes(29));
    assert_eq!(app.get(&browser, "/").await.status(), 200);
    app.clock.advance(Duration::minutes(29));
    assert_eq!(app.get(&browser, "/").await.status(), 200);
    // ...and 31 idle minutes end it, on the server.
    app.clock.advance(Duration::minutes(31));
    assert_eq!(location(&app.get(&browser, "/").await).as_deref(), Some("/login"));
    assert_eq!(app.count("sessions WHERE user_id IS NOT NULL").await, 0);
}

async fn sessions_end_after_twelve_hours_however_active(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let browser = app.signed_in(&user).await;

    let mut elapsed = Duration::zero();
    while elapsed + Duration::minutes(25) < Duration::hours(12) {
        app.clock.advance(Duration::minutes(25));
        elapsed += Duration::minutes(25);
        assert_eq!(app.get(&browser, "/").await.status(), 200, "still valid after {elapsed}");
    }
    app.clock.advance(Duration::minutes(25));
    assert_eq!(location(&app.get(&browser, "/").await).as_deref(), Some("/login"));
}

async fn logout_ends_the_session_on_the_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let browser = client();
    let response = app.login(&browser, &user.email, &user.password).await;
    let cookie = session_cookie(response.headers()).unwrap();
    assert_eq!(app.get(&replay(&cookie), "/").await.status(), 200);

    let response = app.post_form(&browser, "/account", "/logout", &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response).as_deref(), Some("/login"));
    // Replaying the old cookie does not work: the session is gone from the database.
    assert_eq!(location(&app.get(&replay(&cookie), "/").await).as_deref(), Some("/login"));
    assert_eq!(app.count("sessions WHERE user_id IS NOT NULL").await, 0);
}

async fn password_change_ends_other_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Developer).await;
    let laptop = app.signed_in(&user).await;
    let phone = app.signed_in(&user).await;

    let wrong = app
        .post_form(
            &laptop,
            "/account",
            "/account/password",
            &[
                ("current_password", "not my password"),
                ("new_password", "a brand new passphrase"),
                ("new_password_confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 422);
    assert!(wrong.text().await.unwrap().contains("This is not your current password."));
    assert_eq!(app.get(&phone, "/").await.status(), 200, "a refused change ends nothing");

    let changed = app
        .post_form(
            &laptop,
            "/account",
            "/account/password",
            &[
                ("current_password", &user.password),
                ("new_password", "a brand new passphrase"),
                ("new_password_confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(changed.status(), 200);
    assert!(changed.text().await.unwrap().contains("Password changed"));
    assert_eq!(app.get(&laptop, "/").await.status(), 200, "the session that changed it stays");
    assert_eq!(location(&app.get(&phone, "/").await).as_deref(), Some("/login"));

    assert_eq!(app.login(&client(), &user.email, &user.password).await.status(), 422);
    assert_eq!(app.login(&client(), &user.email, "a brand new passphrase").await.status(), 303);
}

fn session_ids(html: &str) -> Vec<String> {
    html.split("action=\"/account/sessions/")
        .skip(1)
        .map(|rest| rest[..rest.find('/').unwrap()].to_owned())
        .collect()
}

async fn account_page_lists_sessions_and_ends_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let intruder = app.create_user(org, Role::Admin).await;
    let laptop = app.signed_in(&user).await;
    let firefox = "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0";
    let phone = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent(firefox)
        .build()
        .unwrap();
    assert_eq!(app.login(&phone, &user.email, &user.password).await.status(), 303);

    let html = app.get(&laptop, "/account").await.text().await.unwrap();
    let ids = session_ids(&html);
    assert_eq!(ids.len(), 2, "{html}");
    assert!(html.contains("this session"));
    assert!(html.contains("127.0.0.1"));
    // Times as the server writes them, in a <time> the page's script makes relative.
    assert!(html.contains(r#"<td><time datetime=""#) && html.contains(" UTC</time></td>"), "{html}");
    // Browsers by name, with their whole user agent on hover.
    assert!(html.contains(&format!(r#"<span title="{firefox}">Firefox on Android</span>"#)), "{html}");
    assert!(html.contains(r#"<span title="mcp-platform-tests/1.0">an unknown client</span>"#), "{html}");

    // Another user, even an admin, cannot end these sessions: 404.
    let admin = app.signed_in(&intruder).await;
    for id in &ids {
        let path = format!("/account/sessions/{id}/end");
        assert_eq!(app.post_form(&admin, "/account", &path, &[]).await.status(), 404);
    }
    assert_eq!(app.get(&phone, "/").await.status(), 200);

    // The owner ends the phone's session (the one not marked as current) through htmx.
    let current = &session_ids(&html[html.find("this session").unwrap()..])[0];
    let other = ids.iter().find(|id| *id != current).unwrap();
    let token = crate::helpers::csrf_token(&html);
    let response = laptop
        .post(app.url(&format!("/account/sessions/{other}/end")))
        .header("HX-Request", "true")
        .header("X-CSRF-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let fragment = response.text().await.unwrap();
    assert!(fragment.starts_with("<table id=\"sessions\">"), "htmx gets the table alone: {fragment}");
    assert_eq!(session_ids(&fragment).len(), 1);
    assert_eq!(location(&app.get(&phone, "/").await).as_deref(), Some("/login"));
    assert_eq!(app.get(&laptop, "/").await.status(), 200);

    // Without JavaScript: the End button's own form carries everything it needs.
    let tablet = app.signed_in(&user).await;
    let html = app.get(&laptop, "/account").await.text().await.unwrap();
    let ended = session_ids(&html).into_iter().find(|id| id != current).unwrap();
    let action = format!("action=\"/account/sessions/{ended}/end\"");
    let form = &html[html.find(&action).unwrap()..];
    let form = &form[..form.find("</form>").unwrap()];
    let fields = [("csrf_token", crate::helpers::csrf_token(form))];
    let response =
        laptop.post(app.url(&format!("/account/sessions/{ended}/end"))).form(&fields).send().await.unwrap();
    assert_eq!(response.status(), 303, "the plain form ends the session");
    assert_eq!(location(&app.get(&tablet, "/").await).as_deref(), Some("/login"));
}
