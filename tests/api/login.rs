use std::time::Instant;

use mcp_platform::config::Settings;
use mcp_platform::db;
use mcp_platform::domain::Role;

use crate::helpers::{Backend, client, location, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    sign_in_succeeds_and_fails,
    unknown_email_and_wrong_password_look_the_same,
    failed_attempts_for_an_account_are_throttled,
    attempts_from_one_ip_are_limited,
    deactivated_users_cannot_sign_in_and_lose_their_sessions,
    sign_ins_and_account_changes_are_audited_without_secrets,
    a_guesser_elsewhere_cannot_lock_the_owner_out,
);

const FAILED: &str = "Email or password is incorrect.";

async fn sign_in_succeeds_and_fails(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Developer).await;

    let browser = client();
    let wrong = app.login(&browser, &user.email, "not the password at all").await;
    assert_eq!(wrong.status(), 422);
    let html = wrong.text().await.unwrap();
    assert!(html.contains(FAILED));
    assert!(html.contains(&format!("value=\"{}\"", user.email)), "the email is kept in the form");
    assert_eq!(location(&app.get(&browser, "/").await).as_deref(), Some("/login"), "still signed out");

    let ok = app.login(&browser, &user.email.to_uppercase(), &user.password).await;
    assert_eq!(ok.status(), 303, "emails are case-insensitive");
    let home = app.get(&browser, "/").await;
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains(&user.email));

    // Signed-in users are sent from the sign-in page to the dashboard.
    assert_eq!(location(&app.get(&browser, "/login").await).as_deref(), Some("/"));

    let bad_email = app.login(&client(), "nobody", "whatever").await;
    assert_eq!(bad_email.status(), 422);
    assert!(bad_email.text().await.unwrap().contains("Enter a valid email address"));
}

async fn unknown_email_and_wrong_password_look_the_same(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let unknown = "nobody-here@example.com";

    // One browser, one session, so the pages differ only by what the server decided.
    let browser = client();
    app.login(&browser, unknown, "warm-up attempt x").await;
    let started = Instant::now();
    let a = app.login(&browser, unknown, "some password 1").await;
    let unknown_time = started.elapsed();
    let started = Instant::now();
    let b = app.login(&browser, &user.email, "some password 1").await;
    let wrong_time = started.elapsed();
    eprintln!("sign-in failure timing: unknown email {unknown_time:?}, wrong password {wrong_time:?}");

    assert_eq!(a.status(), b.status());
    let a = a.text().await.unwrap().replace(unknown, "EMAIL");
    let b = b.text().await.unwrap().replace(&user.email, "EMAIL");
    assert!(a.contains(FAILED));
    assert_eq!(a, b, "the two failures must render the same page");
}

async fn failed_attempts_for_an_account_are_throttled(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let browser = client();

    for attempt in 1..=5 {
        let response = app.login(&browser, &user.email, "guessing wrongly").await;
        assert_eq!(response.status(), 422, "attempt {attempt} is judged normally");
    }
    // The sixth attempt waits, even with the right password, and says so.
    let throttled = app.login(&browser, &user.email, &user.password).await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(throttled.text().await.unwrap().contains("Too many failed sign-ins for this account"));
    // The same holds for an address with no account, so throttling reveals nothing.
    for _ in 1..=5 {
        app.login(&browser, "ghost@example.com", "guessing wrongly").await;
    }
    assert_eq!(app.login(&browser, "ghost@example.com", "guessing wrongly").await.status(), 429);
    // Other accounts are not affected.
    let other = app.create_user(org, Role::Viewer).await;
    assert_eq!(app.login(&client(), &other.email, &other.password).await.status(), 303);

    // After the wait a sixth failure is counted, and the next wait is longer (2 s).
    app.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(app.login(&browser, &user.email, "guessing wrongly").await.status(), 422);
    app.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(app.login(&browser, &user.email, &user.password).await.status(), 429);
    app.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(app.login(&browser, &user.email, &user.password).await.status(), 303);

    // A success clears the count.
    let failures = db::login_failures::since(
        app.db.acquire().await.unwrap().conn(),
        &mcp_platform::domain::Email::parse(&user.email).unwrap(),
        app.clock_now() - chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert!(failures.is_empty());
}

async fn attempts_from_one_ip_are_limited(backend: Backend) {
    let settings = Settings { login_ip_limit: Some("3".into()), ..Settings::default() };
    let app = spawn_app_with(backend, settings).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Viewer).await;
    let browser = client();
    for i in 0..3 {
        let response = app.login(&browser, &format!("someone{i}@example.com"), "whatever password").await;
        assert_eq!(response.status(), 422);
    }
    // A fourth attempt from the same address is refused, whichever account it names.
    let refused = app.login(&browser, &user.email, &user.password).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(location(&app.get(&browser, "/").await).as_deref(), Some("/login"));
    // The bucket refills on the application's clock: a minute later the address may try again.
    app.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(app.login(&browser, &user.email, &user.password).await.status(), 303);
}

async fn deactivated_users_cannot_sign_in_and_lose_their_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Admin).await;
    let browser = app.signed_in(&user).await;
    assert_eq!(app.get(&browser, "/").await.status(), 200);

    let now = app.clock_now();
    assert!(
        db::users::set_active(app.db.acquire().await.unwrap().conn(), org, user.id, false, now)
            .await
            .unwrap()
    );

    // The open session ends at its next request.
    assert_eq!(location(&app.get(&browser, "/").await).as_deref(), Some("/login"));
    // And signing in again fails with the usual message: nothing says the account exists.
    let response = app.login(&client(), &user.email, &user.password).await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains(FAILED));
}

async fn sign_ins_and_account_changes_are_audited_without_secrets(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Developer).await;
    let browser = client();
    app.login(&browser, &user.email, "a wrong guess here").await;
    app.login(&browser, &user.email, &user.password).await;
    let new_password = "another fine passphrase";
    let fields = [
        ("current_password", user.password.as_str()),
        ("new_password", new_password),
        ("new_password_confirm", new_password),
    ];
    assert_eq!(app.post_form(&browser, "/account", "/account/password", &fields).await.status(), 200);
    assert_eq!(app.post_form(&browser, "/account", "/logout", &[]).await.status(), 303);

    let rows = app.audit_rows().await;
    let actions: Vec<(&str, bool)> = rows.iter().map(|(a, ok, _)| (a.as_str(), *ok)).collect();
    assert_eq!(
        actions,
        [
            ("auth.sign_in_failed", false),
            ("auth.sign_in", true),
            ("account.password_changed", true),
            ("auth.sign_out", true)
        ]
    );
    let logs = crate::helpers::captured_logs();
    for secret in ["a wrong guess here", user.password.as_str(), new_password] {
        assert!(!logs.contains(secret), "a password reached a log line");
    }
    for (action, _, text) in &rows {
        assert!(text.contains(&user.email), "{action} names its actor");
        for secret in ["a wrong guess here", user.password.as_str(), new_password] {
            assert!(!text.contains(secret), "{action} holds a password: {text}");
        }
    }
}

/// Signs in from `ip` (the platform trusts the proxy's X-Forwarded-For in this test).
async fn login_from(
    app: &crate::helpers::TestApp,
    browser: &reqwest::Client,
    ip: &str,
    email: &str,
    password: &str,
) -> u16 {
    let page = browser.get(app.url("/login")).header("x-forwarded-for", ip).send().await.unwrap();
    let token = crate::helpers::csrf_token(&page.text().await.unwrap());
    let form = [("email", email), ("password", password), ("csrf_token", token.as_str())];
    let response =
        browser.post(app.url("/login")).header("x-forwarded-for", ip).form(&form).send().await.unwrap();
    response.status().as_u16()
}

/// A browser with a jar of its own, holding `cookie` for the sign-in page.
fn browser_with(app: &crate::helpers::TestApp, cookie: &str) -> reqwest::Client {
    let jar = reqwest::cookie::Jar::default();
    jar.add_cookie_str(&format!("{cookie}; Path=/login"), &app.url("/login").parse().unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(std::sync::Arc::new(jar))
        .build()
        .unwrap()
}

/// Someone guessing the owner's password from elsewhere is throttled where they are, and the
/// owner still signs in: from another address, and from their usual browser (its device cookie)
/// even behind the guesser's address.
async fn a_guesser_elsewhere_cannot_lock_the_owner_out(backend: Backend) {
    let settings = Settings { trust_proxy: Some("true".into()), ..Settings::default() };
    let app = spawn_app_with(backend, settings).await;
    let org = app.create_organization("Acme").await;
    let owner = app.create_user(org, Role::Admin).await;
    let (home, guesser) = ("203.0.113.5", "198.51.100.7");

    // The owner's usual browser signed in before: it holds a device cookie for the account.
    let usual = client();
    let page = usual.get(app.url("/login")).header("x-forwarded-for", home).send().await.unwrap();
    let token = crate::helpers::csrf_token(&page.text().await.unwrap());
    let form = [
        ("email", owner.email.as_str()),
        ("password", owner.password.as_str()),
        ("csrf_token", token.as_str()),
    ];
    let signed_in =
        usual.post(app.url("/login")).header("x-forwarded-for", home).form(&form).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let device_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("mcp_device="))
        .expect("a device cookie is set at sign-in");
    assert!(device_cookie.contains("HttpOnly") && device_cookie.contains("Path=/login"), "{device_cookie}");
    let device_cookie = device_cookie.split(';').next().unwrap().to_owned();
    let token = crate::helpers::csrf_token(&app.get(&usual, "/account").await.text().await.unwrap());
    usual.post(app.url("/logout")).form(&[("csrf_token", token)]).send().await.unwrap();

    // The guesser is throttled after 5 failures, even with the right password.
    let attacker = client();
    for _ in 0..5 {
        assert_eq!(login_from(&app, &attacker, guesser, &owner.email, "guess guess guess").await, 422);
    }
    assert_eq!(login_from(&app, &attacker, guesser, &owner.email, &owner.password).await, 429);
    // Anyone new behind the guesser's address waits too...
    assert_eq!(login_from(&app, &client(), guesser, &owner.email, &owner.password).await, 429);
    // ...but the owner signs in from another address, and from the usual browser anywhere.
    assert_eq!(login_from(&app, &client(), "192.0.2.44", &owner.email, &owner.password).await, 303);
    assert_eq!(login_from(&app, &usual, guesser, &owner.email, &owner.password).await, 303);
    // A device cookie that was tampered with is no cookie at all.
    let forged = device_cookie.replace('.', "x.");
    assert_eq!(
        login_from(&app, &browser_with(&app, &forged), guesser, &owner.email, &owner.password).await,
        429
    );
    // A cookie still only helps the browser it belongs to: its own failures count against it.
    let known = browser_with(&app, &device_cookie);
    for _ in 0..5 {
        assert_eq!(login_from(&app, &known, home, &owner.email, "mistyped password").await, 422);
    }
    assert_eq!(login_from(&app, &known, home, &owner.email, &owner.password).await, 429);
    assert_eq!(
        login_from(&app, &client(), home, &owner.email, &owner.password).await,
        303,
        "others are not held up"
    );
    // And it expires.
    app.clock.advance(chrono::Duration::days(91));
    for _ in 0..5 {
        login_from(&app, &attacker, guesser, &owner.email, "guess guess guess").await;
    }
    assert_eq!(
        login_from(&app, &browser_with(&app, &device_cookie), guesser, &owner.email, &owner.password).await,
        429
    );
}
