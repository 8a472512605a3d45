use mcp_platform::config::Settings;
use mcp_platform::domain::Role;

use crate::helpers::{Backend, client, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    security_headers_on_every_response,
    pages_have_no_inline_script_or_style,
    hsts_when_served_over_tls
);

const CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'";

fn assert_security_headers(response: &reqwest::Response, path: &str) {
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let csp = header("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
    assert!(csp.starts_with(CSP), "{path}: CSP is {csp}");
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
    assert_eq!(header("referrer-policy").as_deref(), Some("strict-origin-when-cross-origin"), "{path}");
    assert_eq!(header("strict-transport-security"), None, "{path}: no HSTS over plain HTTP");
}

async fn security_headers_on_every_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
    let anonymous = client();

    for path in ["/", "/account", "/members", "/no-such-page", "/healthz", "/static/style.css"] {
        let response = app.get(&admin, path).await;
        assert_security_headers(&response, path);
        let cache = response.headers().get("cache-control").unwrap().to_str().unwrap().to_owned();
        if path.starts_with("/static/") {
            assert!(cache.starts_with("public"), "{path}: {cache}");
        } else {
            assert_eq!(cache, "no-store", "{path}: authenticated pages are never cached");
        }
    }
    for path in ["/login", "/", "/setup"] {
        assert_security_headers(&app.get(&anonymous, path).await, path);
    }
    let refused = anonymous.post(app.url("/login")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_security_headers(&refused, "POST /login");
}

async fn pages_have_no_inline_script_or_style(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
    let mut pages = Vec::new();
    for path in ["/", "/account", "/members", "/no-such-page"] {
        pages.push((path, app.get(&admin, path).await.text().await.unwrap()));
    }
    pages.push(("/login", app.get(&client(), "/login").await.text().await.unwrap()));
    for (path, html) in pages {
        assert!(!html.contains("<style"), "{path}: inline <style>");
        assert!(!html.contains(" style="), "{path}: style attribute");
        assert!(!has_inline_handler(&html), "{path}: inline event handler attribute");
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src=\"/static/"), "{path}: inline script {tag}");
        }
    }
    // htmx is served from our own origin, never a CDN.
    let htmx = app.get(&client(), "/static/htmx.min.js").await;
    assert_eq!(htmx.status(), 200);
    assert!(htmx.text().await.unwrap().contains("htmx"));
}

/// Whether the page has an attribute like ` onclick=`, which the CSP would block.
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.chars().take_while(|c| c.is_ascii_lowercase()).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

async fn hsts_when_served_over_tls(backend: Backend) {
    let settings = Settings { public_url: Some("https://mcp.example.com".into()), ..Settings::default() };
    let app = spawn_app_with(backend, settings).await;
    let response = app.get(&client(), "/healthz").await;
    let hsts = response.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_owned());
    assert!(hsts.is_some_and(|v| v.starts_with("max-age=")));
    // And the session cookie is Secure with the __Host- prefix.
    let setup = app.get(&client(), "/setup").await;
    let cookie = setup.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-mcp_session=") && cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}
