//! The dashboard in a real browser (headless Chromium through chromedriver), where the CSP is
//! enforced for real: first run, sign-out, sign-in, and an htmx action.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(first_run_sign_in_and_htmx_in_a_real_browser);

/// chromedriver and the browser session it drives; both end when this is dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts headless Chromium, or returns `None` (test skipped) outside CI when it is missing.
    async fn start() -> Option<Browser> {
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !std::path::Path::new(&driver_path).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but {driver_path} is missing: install chromium and chromium-driver");
            }
            eprintln!("{driver_path} not found: skipping the browser test");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile =
            std::env::temp_dir().join(format!("mcp-platform-chromium-{}", uuid::Uuid::now_v7().simple()));
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { client: None, driver, profile };
        for _ in 0..100 {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            if let Ok(client) = connected {
                browser.client = Some(client);
                return Some(browser);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not accept a session on {url}");
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn fill(page: &Client, id: &str, text: &str) {
    let field = page.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn submit(page: &Client, form: &str) {
    page.find(Locator::Css(&format!("{form} button[type=submit]"))).await.unwrap().click().await.unwrap();
}

async fn path(page: &Client) -> String {
    page.current_url().await.unwrap().path().to_owned()
}

/// The page's text once it contains `needle` (a form post may still be loading), or a panic.
async fn text_with(page: &Client, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        // The element can go stale while the next page loads: read again.
        if let Ok(body) = page.find(Locator::Css("body")).await
            && let Ok(text) = body.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("page never showed {needle:?}; it shows:\n{last}");
}

async fn wait_for_path(page: &Client, want: &str) {
    for _ in 0..50 {
        if path(page).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected to reach {want}, still on {}", path(page).await);
}

async fn first_run_sign_in_and_htmx_in_a_real_browser(backend: Backend) {
    let Some(browser) = Browser::start().await else { return };
    let app: TestApp = spawn_app(backend).await;
    let page = browser.client();

    // Opening the printed URL on a fresh install leads to setup.
    page.goto(&app.url("/")).await.unwrap();
    assert_eq!(path(page).await, "/setup");

    // A mistake is shown at the field and the rest of the input is kept.
    fill(page, "organization", "Acme Robotics").await;
    fill(page, "email", "not-an-email").await;
    fill(page, "password", "correct horse battery").await;
    fill(page, "password_confirm", "correct horse battery").await;
    submit(page, "main form").await;
    text_with(page, "Enter a valid email address").await;
    let kept = page.find(Locator::Id("organization")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some("Acme Robotics"));

    fill(page, "email", "ada@acme.example").await;
    fill(page, "password", "correct horse battery").await;
    fill(page, "password_confirm", "correct horse battery").await;
    submit(page, "main form").await;
    wait_for_path(page, "/").await;
    let home = text_with(page, "Acme Robotics").await;
    assert!(home.contains("ada@acme.example"), "{home}");
    let nav = page.find(Locator::Css("nav")).await.unwrap().text().await.unwrap();
    assert!(nav.contains("Dashboard") && nav.contains("Members") && nav.contains("Account"), "{nav}");

    // htmx is loaded from our origin under the CSP.
    let htmx = page.execute("return typeof htmx", vec![]).await.unwrap();
    assert_eq!(htmx, json!("object"), "htmx did not load; is the CSP blocking it?");

    // Sign out, then sign in again.
    submit(page, ".who form").await;
    wait_for_path(page, "/login").await;
    fill(page, "email", "ada@acme.example").await;
    fill(page, "password", "correct horse battery").await;
    submit(page, "main form").await;
    wait_for_path(page, "/").await;

    // Ending the current session from the account page goes through htmx and its redirect.
    page.goto(&app.url("/account")).await.unwrap();
    text_with(page, "this session").await;
    page.find(Locator::Css("#sessions button")).await.unwrap().click().await.unwrap();
    wait_for_path(page, "/login").await;
    page.goto(&app.url("/")).await.unwrap();
    assert_eq!(path(page).await, "/login", "the ended session no longer signs in");

    browser.close().await;
}
