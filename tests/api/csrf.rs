use mcp_platform::domain::Role;

use crate::helpers::{Backend, client, csrf_token, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    state_changes_need_a_valid_token_from_this_site,
    forwarded_headers_decide_neither_links_nor_origins_without_a_trusted_proxy,
);

const NEW: &str = "a brand new passphrase";

async fn state_changes_need_a_valid_token_from_this_site(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let user = app.create_user(org, Role::Developer).await;
    let victim = app.signed_in(&user).await;
    let other = app.signed_in(&app.create_user(org, Role::Developer).await).await;
    let own_token = csrf_token(&app.get(&victim, "/account").await.text().await.unwrap());
    let foreign_token = csrf_token(&app.get(&other, "/account").await.text().await.unwrap());

    let fields =
        [("current_password", user.password.as_str()), ("new_password", NEW), ("new_password_confirm", NEW)];
    let post = |token: Option<&str>| {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if let Some(token) = token {
            form.push(("csrf_token", token));
        }
        victim.post(app.url("/account/password")).form(&form)
    };

    // A forged form (the attack CSRF is): no token, a wrong one, or another session's.
    for (what, request) in [
        ("no token", post(None)),
        ("a made-up token", post(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))),
        ("another session's token", post(Some(&foreign_token))),
        ("a cross-site origin", post(Some(&own_token)).header("Origin", "http://evil.example")),
        ("a cross-site fetch", post(Some(&own_token)).header("Sec-Fetch-Site", "cross-site")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{what} must be refused");
        assert!(response.text().await.unwrap().contains("did not come from this site"));
    }
    // Nothing changed: the old password still works, the new one does not.
    assert_eq!(app.login(&client(), &user.email, NEW).await.status(), 422);
    assert_eq!(app.login(&client(), &user.email, &user.password).await.status(), 303);

    // The same request with this session's token and a same-origin Origin goes through,
    // whether the token comes in the form or in the htmx header.
    let origin = app.address.clone();
    let ok = post(Some(&own_token))
        .header("Origin", origin)
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let header_only = victim
        .post(app.url("/account/password"))
        .header("X-CSRF-Token", &own_token)
        .form(&[
            ("current_password", NEW),
            ("new_password", "yet another passphrase"),
            ("new_password_confirm", "yet another passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(header_only.status(), 200);

    // Sign-out is a state change too.
    assert_eq!(victim.post(app.url("/logout")).send().await.unwrap().status(), 403);
    assert_eq!(app.get(&victim, "/").await.status(), 200, "a forged sign-out does not sign out");

    // Public forms are covered as well: a sign-in without a token is refused before any check.
    let stranger = client();
    let response = stranger
        .post(app.url("/login"))
        .form(&[("email", user.email.as_str()), ("password", "yet another passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

/// Without `--trust-proxy`, a client's `X-Forwarded-Host` cannot make the platform hand out
/// links to another site (a poisoned invitation), nor pass the origin check; the origin is
/// compared whole, scheme included.
async fn forwarded_headers_decide_neither_links_nor_origins_without_a_trusted_proxy(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
    let token = csrf_token(&app.get(&admin, "/members").await.text().await.unwrap());
    let forged = |request: reqwest::RequestBuilder| {
        request
            .header("X-Forwarded-Host", "evil.test")
            .header("X-Forwarded-Proto", "https")
            .header("Forwarded", "host=evil.test;proto=https")
    };
    let form = [("email", "new@example.com"), ("role", "developer"), ("csrf_token", token.as_str())];
    let invited = forged(admin.post(app.url("/members/invitations")).form(&form)).send().await.unwrap();
    assert_eq!(invited.status(), 200);
    let page = invited.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "class=\"full-link\" aria-label=\"Invitation link for new@example.com\">{}/invitations/",
            app.address
        )),
        "{page}"
    );
    assert!(!page.contains("evil.test"));
    let catalog = forged(admin.get(app.url("/services"))).send().await.unwrap().text().await.unwrap();
    assert!(!catalog.contains("evil.test"));

    let same = [("email", "other@example.com"), ("role", "viewer"), ("csrf_token", token.as_str())];
    let wrong_scheme = app.address.replace("http://", "https://");
    for (what, origin) in
        [("another scheme", wrong_scheme.as_str()), ("the forwarded host", "https://evil.test")]
    {
        let request =
            forged(admin.post(app.url("/members/invitations")).form(&same)).header("Origin", origin);
        assert_eq!(request.send().await.unwrap().status(), 403, "{what}");
    }
    let own = admin.post(app.url("/members/invitations")).form(&same).header("Origin", app.address.as_str());
    assert_eq!(own.send().await.unwrap().status(), 200, "the platform's own origin");
}
