use mcp_platform::db;

use crate::helpers::{Backend, client, csrf_token, location, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    first_run_leads_to_setup_which_works_once,
    setup_form_keeps_input_and_creates_nothing_on_error
);

async fn first_run_leads_to_setup_which_works_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let browser = client();

    let home = app.get(&browser, "/").await;
    assert_eq!(location(&home).as_deref(), Some("/login"));
    let login = app.get(&browser, "/login").await;
    assert_eq!(login.status(), 303);
    assert_eq!(location(&login).as_deref(), Some("/setup"));

    let response = app
        .post_form(
            &browser,
            "/setup",
            "/setup",
            &[
                ("organization", "Acme Robotics"),
                ("email", "Ada@Example.com"),
                ("password", "correct horse battery"),
                ("password_confirm", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response).as_deref(), Some("/"));

    // The admin is signed in and sees the dashboard of the new organization.
    let home = app.get(&browser, "/").await;
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("Acme Robotics") && html.contains("ada@example.com"), "{html}");

    // Setup is gone, for the admin and for anyone else, for GET and for POST.
    assert_eq!(app.get(&browser, "/setup").await.status(), 404);
    let stranger = client();
    assert_eq!(app.get(&stranger, "/setup").await.status(), 404);
    let token = csrf_token(&app.get(&stranger, "/login").await.text().await.unwrap());
    let second = stranger
        .post(app.url("/setup"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("organization", "Mallory Inc"),
            ("email", "mallory@example.com"),
            ("password", "correct horse battery"),
            ("password_confirm", "correct horse battery"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 404);
    assert_eq!(app.count("organizations").await, 1);
    assert_eq!(app.count("users").await, 1);

    // And the admin can sign in again with the chosen password.
    let again = client();
    let response = app.login(&again, "ada@example.com", "correct horse battery").await;
    assert_eq!(response.status(), 303);
}

async fn setup_form_keeps_input_and_creates_nothing_on_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let browser = client();
    let response = app
        .post_form(
            &browser,
            "/setup",
            "/setup",
            &[
                ("organization", "Acme Robotics"),
                ("email", "not-an-email"),
                ("password", "short"),
                ("password_confirm", "short"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains("value=\"Acme Robotics\""), "organization kept");
    assert!(html.contains("value=\"not-an-email\""), "email kept");
    assert!(html.contains("Enter a valid email address"), "email error shown");
    assert!(html.contains("Use at least 12 characters"), "password error shown");
    assert!(!html.contains("short\""), "the password is never echoed back");
    assert!(!db::users::any_exists(app.db.acquire().await.unwrap().conn()).await.unwrap());
    assert_eq!(app.count("organizations").await, 0);

    let mismatch = app
        .post_form(
            &browser,
            "/setup",
            "/setup",
            &[
                ("organization", "Acme Robotics"),
                ("email", "ada@example.com"),
                ("password", "correct horse battery"),
                ("password_confirm", "correct horse battery!"),
            ],
        )
        .await;
    assert_eq!(mismatch.status(), 422);
    assert!(mismatch.text().await.unwrap().contains("The passwords do not match."));
    assert_eq!(app.count("users").await, 0);
}
