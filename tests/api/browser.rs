//! The dashboard in a real browser (headless Chromium through chromedriver), where the CSP is
//! enforced for real: first run, sign-out, sign-in, and an htmx action.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use mcp_platform::domain::Role;

use crate::helpers::webdriver::{ENTER, TAB, WebDriver};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    first_run_sign_in_and_htmx_in_a_real_browser,
    each_role_does_what_it_may_in_a_real_browser,
    each_role_reads_usage_and_logs_in_a_real_browser,
    an_admin_runs_the_team_and_a_developer_works_by_keyboard_in_real_browsers,
);

/// chromedriver and the browser session it drives; both end when this is dropped.
pub(crate) struct Browser {
    client: Option<WebDriver>,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts headless Chromium, or returns `None` (test skipped) outside CI when it is missing.
    pub(crate) async fn start() -> Option<Browser> {
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !std::path::Path::new(&driver_path).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but {driver_path} is missing: install chromium and chromium-driver");
            }
            crate::helpers::skipped(&format!("{driver_path} is not installed"));
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
                    "--no-first-run", "--window-size=1200,900", "--disable-crash-reporter", "--disable-breakpad",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { client: None, driver, profile };
        for _ in 0..100 {
            if let Ok(client) = WebDriver::connect(&url, capabilities.clone()).await {
                browser.client = Some(client);
                return Some(browser);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not accept a session on {url}");
    }

    pub(crate) fn client(&self) -> &WebDriver {
        self.client.as_ref().unwrap()
    }

    pub(crate) async fn close(mut self) {
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

pub(crate) async fn fill(page: &WebDriver, id: &str, text: &str) {
    let field = page.find(&format!("#{id}")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub(crate) async fn submit(page: &WebDriver, form: &str) {
    page.find(&format!("{form} button[type=submit]")).await.unwrap().click().await.unwrap();
}

async fn path(page: &WebDriver) -> String {
    page.path().await.unwrap()
}

/// The page's text once it contains `needle` (a form post may still be loading), or a panic.
pub(crate) async fn text_with(page: &WebDriver, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        // The element can go stale while the next page loads: read again.
        if let Ok(body) = page.find("body").await
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

async fn wait_for_path(page: &WebDriver, want: &str) {
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
    let kept = page.find("#organization").await.unwrap().prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some("Acme Robotics"));

    fill(page, "email", "ada@acme.example").await;
    fill(page, "password", "correct horse battery").await;
    fill(page, "password_confirm", "correct horse battery").await;
    submit(page, "main form").await;
    wait_for_path(page, "/").await;
    let home = text_with(page, "Acme Robotics").await;
    assert!(home.contains("ada@acme.example"), "{home}");
    let nav = page.find("nav").await.unwrap().text().await.unwrap();
    assert!(nav.contains("Dashboard") && nav.contains("Members") && nav.contains("Account"), "{nav}");

    // The first Tab reaches the skip link, which shows itself with a visible focus ring.
    page.find("body").await.unwrap().send_keys("\u{E004}").await.unwrap();
    let focused = page
        .execute("const a = document.activeElement; return [a.className, a.getAttribute('href'), a.getBoundingClientRect().top >= 0, getComputedStyle(a).outlineStyle]")
        .await
        .unwrap();
    assert_eq!(focused, json!(["skip", "#main", true, "solid"]));

    // htmx is loaded from our origin under the CSP.
    let htmx = page.execute("return typeof htmx").await.unwrap();
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
    // Times read relative to now, the exact local time (and the server's UTC) on hover.
    let shown = page
        .execute("const t = document.querySelector('#sessions time'); return [t.textContent, t.title, t.getAttribute('datetime')]")
        .await
        .unwrap();
    let [text, title, machine] = [0, 1, 2].map(|i| shown[i].as_str().unwrap().to_owned());
    assert!(!text.contains("UTC") && !text.is_empty(), "not made relative: {shown}");
    assert!(title.ends_with(" UTC)") && machine.ends_with('Z'), "{shown}");
    page.find("#sessions button").await.unwrap().click().await.unwrap();
    wait_for_path(page, "/login").await;
    page.goto(&app.url("/")).await.unwrap();
    assert_eq!(path(page).await, "/login", "the ended session no longer signs in");

    browser.close().await;
}

pub(crate) async fn sign_in(page: &WebDriver, app: &TestApp, email: &str, password: &str) {
    page.goto(&app.url("/login")).await.unwrap();
    fill(page, "email", email).await;
    fill(page, "password", password).await;
    submit(page, "main form").await;
    wait_for_path(page, "/").await;
}

pub(crate) async fn sign_out(page: &WebDriver) {
    submit(page, ".who form").await;
    wait_for_path(page, "/login").await;
}

async fn nav(page: &WebDriver) -> String {
    page.find("nav").await.unwrap().text().await.unwrap()
}

async fn each_role_does_what_it_may_in_a_real_browser(backend: Backend) {
    let Some(browser) = Browser::start().await else { return };
    let app: TestApp = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let viewer = app.create_user(org, Role::Viewer).await;
    let foreign_org = app.create_organization("Globex").await;
    let foreign_admin = app.create_user(foreign_org, Role::Admin).await;
    let page = browser.client();

    // The admin invites a developer and gets the link once.
    sign_in(page, &app, &admin.email, &admin.password).await;
    let menu = nav(page).await;
    for item in ["Members", "API keys", "Organization", "Audit trail", "Service tokens"] {
        assert!(menu.contains(item), "admin menu lacks {item}: {menu}");
    }
    page.goto(&app.url("/members")).await.unwrap();
    fill(page, "invite-email", "dev@acme.example").await;
    submit(page, "form[action='/members/invitations']").await;
    text_with(page, "Invitation created").await;
    let link = page.find("code.full-link").await.unwrap().text().await.unwrap();
    sign_out(page).await;

    // The developer joins through the link.
    page.goto(&link).await.unwrap();
    text_with(page, "Join Acme").await;
    fill(page, "password", "developer passphrase").await;
    fill(page, "password_confirm", "developer passphrase").await;
    submit(page, "main form").await;
    wait_for_path(page, "/").await;
    let menu = nav(page).await;
    assert!(
        menu.contains("API keys") && menu.contains("Service tokens") && !menu.contains("Members"),
        "{menu}"
    );
    page.goto(&app.url("/members")).await.unwrap();
    text_with(page, "This page needs the admin role").await;

    // A key is shown once, and the copy button works under the CSP (app.js is loaded).
    page.goto(&app.url("/keys")).await.unwrap();
    fill(page, "name", "laptop").await;
    submit(page, "form[action='/keys']").await;
    text_with(page, "Copy the key now").await;
    let copy = page.find("button[data-copy]").await.unwrap();
    copy.click().await.unwrap();
    for _ in 0..30 {
        if copy.text().await.unwrap() != "Copy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(copy.text().await.unwrap(), "Copy", "the copy button did nothing");
    page.goto(&app.url("/keys")).await.unwrap();
    let keys = text_with(page, "laptop").await;
    assert!(keys.contains("mcp:read mcp:write") && keys.contains("active"), "{keys}");

    // A service token is saved and never shown again.
    page.goto(&app.url("/tokens")).await.unwrap();
    fill(page, "service_name", "github").await;
    fill(page, "token", "ghp_browserTestTokenValue000000000000000").await;
    submit(page, "form[action='/tokens']").await;
    let tokens = text_with(page, "Your github token is saved.").await;
    assert!(!tokens.contains("ghp_browserTestTokenValue"));

    // "Test connection" reaches the service through the gateway with that token; htmx swaps
    // the result into the page in place.
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    crate::helpers::gateway::http_service(&app, org, "tools", &upstream.url).await;
    page.goto(&app.url("/services/tools")).await.unwrap();
    submit(page, "#probe form").await;
    let probed = text_with(page, "Connected: 8 tools").await;
    assert!(probed.contains("Returns the text it is given"), "{probed}");
    assert_eq!(path(page).await, "/services/tools", "the result was swapped in, not loaded as a page");

    // Revoking asks first, in a dialog: cancelled, nothing changes; confirmed, the next page
    // says what was done.
    page.goto(&app.url("/keys")).await.unwrap();
    for confirmed in [false, true] {
        page.find("form[data-confirm] button").await.unwrap().click().await.unwrap();
        let question = text_with(page, "Revoke API key laptop?").await;
        assert!(question.contains("stops reaching the gateway at once"), "{question}");
        assert_eq!(count(page, "dialog[open]").await, 1, "asked in a dialog, in place");
        assert_eq!(path(page).await, "/keys");
        let answer = if confirmed { "dialog[open] button.danger" } else { "dialog[open] .cancel" };
        page.find(answer).await.unwrap().click().await.unwrap();
        if !confirmed {
            for _ in 0..20 {
                if count(page, "dialog").await == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(count(page, "dialog").await, 0, "Cancel closes it");
            assert_eq!(count(page, "form[data-confirm]").await, 1, "the key is still active");
        }
    }
    let keys = text_with(page, "revoked.").await;
    assert!(keys.contains("API key laptop (mcp_sk_"), "{keys}");
    assert_eq!(count(page, "form[data-confirm]").await, 0, "no active key left");
    sign_out(page).await;

    // The viewer reads the dashboard but holds no keys.
    sign_in(page, &app, &viewer.email, &viewer.password).await;
    let menu = nav(page).await;
    assert!(!menu.contains("API keys") && !menu.contains("Members"), "{menu}");
    page.goto(&app.url("/keys")).await.unwrap();
    text_with(page, "This page needs the developer role").await;
    page.goto(&app.url("/")).await.unwrap();
    sign_out(page).await;

    // The other organization's admin sees none of it.
    sign_in(page, &app, &foreign_admin.email, &foreign_admin.password).await;
    page.goto(&app.url("/members")).await.unwrap();
    let members = text_with(page, "Members").await;
    assert!(!members.contains("dev@acme.example") && !members.contains(&admin.email), "{members}");
    page.goto(&app.url("/organization/keys")).await.unwrap();
    let keys = text_with(page, "All API keys").await;
    assert!(!keys.contains("laptop"), "{keys}");

    browser.close().await;
}

/// How many elements match a selector on the current page.
async fn count(page: &WebDriver, css: &str) -> u64 {
    let script = format!("return document.querySelectorAll({}).length", serde_json::to_string(css).unwrap());
    page.execute(&script).await.unwrap().as_u64().unwrap()
}

async fn each_role_reads_usage_and_logs_in_a_real_browser(backend: Backend) {
    let Some(browser) = Browser::start().await else { return };
    let app: TestApp = spawn_app(backend).await;
    // A small seeded organization: 2,000 calls over 7 days by four members.
    let plan = mcp_platform::seed::SeedPlan {
        organization: mcp_platform::domain::OrganizationName::parse("Seeded Browsers").unwrap(),
        requests: 2_000,
        days: 7,
        force: false,
    };
    mcp_platform::seed::seed(&app.db, &plan, app.clock_now()).await.unwrap();
    let org = {
        let mut conn = app.db.acquire().await.unwrap();
        mcp_platform::db::organizations::find_by_slug(conn.conn(), "seeded-browsers")
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let admin = app.create_user(org, Role::Admin).await;
    let developer = app.create_user(org, Role::Developer).await;
    let viewer = app.create_user(org, Role::Viewer).await;
    // Three calls of the developer's own, yesterday.
    crate::helpers::gateway::add_service(&app, org, "tools", "https://tools.example/mcp", None, 10_000).await;
    let own = crate::helpers::logs::caller(&app, org, &developer).await;
    let yesterday = app.clock_now() - chrono::Duration::days(1);
    let rows: Vec<_> = (0..3)
        .map(|n| {
            crate::helpers::logs::call_row(
                own,
                "echo",
                mcp_platform::db::request_logs::Outcome::Success,
                yesterday + chrono::Duration::seconds(n),
            )
        })
        .collect();
    mcp_platform::telemetry::writer::write_batch(&app.db, app.clock_now(), &rows).await.unwrap();
    let page = browser.client();

    // The admin: charts with a title on every bar, a range switched in place by htmx, every
    // breakdown, and the organization's calls with a call's page.
    sign_in(page, &app, &admin.email, &admin.password).await;
    let menu = nav(page).await;
    assert!(menu.contains("Usage") && menu.contains("Request log"), "{menu}");
    page.goto(&app.url("/usage?range=7d")).await.unwrap();
    let usage = text_with(page, "Requests over the last 7 days").await;
    assert!(usage.contains("By member") && usage.contains("By API key"), "{usage}");
    assert_eq!(count(page, "svg g.bar title").await, 7, "a titled bar per day");
    assert!(count(page, "svg circle title").await >= 7, "p50 and p95 points, titled");
    page.find("nav.ranges a[href='/usage?range=30d']").await.unwrap().click().await.unwrap();
    text_with(page, "Requests over the last 30 days").await;
    assert_eq!(
        page.execute("return location.search").await.unwrap(),
        "?range=30d",
        "the URL follows the swap"
    );
    assert_eq!(count(page, "svg g.bar title").await, 30);
    assert_eq!(count(page, "header").await, 1, "the body was swapped, not a page inside a page");
    page.goto(&app.url("/logs")).await.unwrap();
    text_with(page, "Request log").await;
    assert_eq!(count(page, "table.logs tbody tr").await, 50, "a page of 50 calls");
    page.find("table.logs tbody tr a").await.unwrap().click().await.unwrap();
    let call = text_with(page, "Correlation id").await;
    assert!(call.contains("Messages of the same session"), "{call}");
    sign_out(page).await;

    // The developer: their own keys in the breakdown, their own three calls in the log.
    sign_in(page, &app, &developer.email, &developer.password).await;
    page.goto(&app.url("/usage?range=7d")).await.unwrap();
    let usage = text_with(page, "By your API keys").await;
    assert!(!usage.contains("By member"), "{usage}");
    page.goto(&app.url("/logs")).await.unwrap();
    text_with(page, "Your calls").await;
    assert_eq!(count(page, "table.logs tbody tr a").await, 3);
    sign_out(page).await;

    // The viewer: charts, a range switched in place (the page is not loaded again: a mark
    // left on it stays), and no logs or keys.
    sign_in(page, &app, &viewer.email, &viewer.password).await;
    let menu = nav(page).await;
    assert!(menu.contains("Usage") && !menu.contains("Request log"), "{menu}");
    page.goto(&app.url("/usage?range=24h")).await.unwrap();
    text_with(page, "Requests over the last 24 hours").await;
    assert_eq!(count(page, "svg g.bar title").await, 24);
    page.execute("window.stillTheSamePage = true").await.unwrap();
    page.find("nav.ranges a[href='/usage?range=7d']").await.unwrap().click().await.unwrap();
    text_with(page, "Requests over the last 7 days").await;
    assert_eq!(page.execute("return window.stillTheSamePage === true").await.unwrap(), json!(true));
    assert_eq!(page.execute("return location.search").await.unwrap(), "?range=7d");
    for refused in ["/logs", "/keys", "/members"] {
        page.goto(&app.url(refused)).await.unwrap();
        let needs = if refused == "/members" { "admin" } else { "developer" };
        text_with(page, &format!("This page needs the {needs} role")).await;
    }

    browser.close().await;
}

/// The id of the element that has the keyboard focus.
async fn focused(page: &WebDriver) -> String {
    let script = "const e = document.activeElement; return e.id || (e.tagName + ':' + e.textContent.trim())";
    page.execute(script).await.unwrap().as_str().unwrap_or_default().to_owned()
}

/// Presses Tab until `want` has the focus (at most 80 times), as a keyboard user moves on.
async fn tab_to(page: &WebDriver, want: &str) {
    for _ in 0..80 {
        if focused(page).await == want {
            return;
        }
        page.press(TAB).await.unwrap();
    }
    panic!("Tab never reached {want}; the focus is on {}", focused(page).await);
}

/// The admin invites a viewer and a developer who join in their own browsers; the admin makes
/// the viewer a developer and, later, deactivates them: their open page's next click lands on
/// the sign-in page. In between, that developer creates a key with the keyboard alone, copies
/// the Claude Desktop configuration, calls a service through the gateway and finds the calls on
/// /logs and /usage.
async fn an_admin_runs_the_team_and_a_developer_works_by_keyboard_in_real_browsers(backend: Backend) {
    let Some(admin_browser) = Browser::start().await else { return };
    let Some(member_browser) = Browser::start().await else { return };
    let Some(third_browser) = Browser::start().await else { return };
    let app: TestApp = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    crate::helpers::gateway::add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let (page, member) = (admin_browser.client(), member_browser.client());

    // Invited as a viewer, the person joins in their own browser.
    sign_in(page, &app, &admin.email, &admin.password).await;
    page.goto(&app.url("/members")).await.unwrap();
    fill(page, "invite-email", "sam@acme.example").await;
    page.execute("document.getElementById('invite-role').value = 'viewer'").await.unwrap();
    submit(page, "form[action='/members/invitations']").await;
    text_with(page, "Invitation created").await;
    let link = page.find("code.full-link").await.unwrap().text().await.unwrap();
    member.goto(&link).await.unwrap();
    text_with(member, "Join Acme").await;
    fill(member, "password", "sam's own passphrase").await;
    fill(member, "password_confirm", "sam's own passphrase").await;
    submit(member, "main form").await;
    wait_for_path(member, "/").await;
    assert!(!nav(member).await.contains("API keys"), "a viewer has no keys");
    // And a developer, in a third browser.
    page.goto(&app.url("/members")).await.unwrap();
    fill(page, "invite-email", "dana@acme.example").await;
    page.execute("document.getElementById('invite-role').value = 'developer'").await.unwrap();
    submit(page, "form[action='/members/invitations']").await;
    text_with(page, "Invitation created").await;
    let link = page.find("code.full-link").await.unwrap().text().await.unwrap();
    let third = third_browser.client();
    third.goto(&link).await.unwrap();
    text_with(third, "Join Acme").await;
    fill(third, "password", "dana's own passphrase").await;
    fill(third, "password_confirm", "dana's own passphrase").await;
    submit(third, "main form").await;
    wait_for_path(third, "/").await;
    assert!(nav(third).await.contains("API keys"), "a developer has keys");
    third_browser.close().await;

    // The admin makes them a developer, confirming in the dialog; the next page says so.
    page.goto(&app.url("/members")).await.unwrap();
    let row = "form[action$='/role'][data-confirm]";
    let select = format!("{row} select");
    let script = format!(
        "const rows = [...document.querySelectorAll({select:?})].filter(s => s.closest('tr').textContent.includes('sam@acme.example')); rows[0].value = 'developer'; rows[0].closest('form').querySelector('button').click();"
    );
    page.execute(&script).await.unwrap();
    text_with(page, "Make sam@acme.example a developer?").await;
    page.find("dialog[open] button.danger").await.unwrap().click().await.unwrap();
    text_with(page, "sam@acme.example is now a developer.").await;

    // The developer creates a key with the keyboard alone: Tab to the name, type it, Tab to
    // the write scope and press Space (off, then on again), Tab to the button and press Enter.
    member.goto(&app.url("/keys")).await.unwrap();
    text_with(member, "Create a key").await;
    tab_to(member, "name").await;
    member.press("keyboard-key").await.unwrap();
    member.press(TAB).await.unwrap();
    for _ in 0..5 {
        let value = member.execute("return document.activeElement.value").await.unwrap();
        if value == "mcp:write" {
            break;
        }
        member.press(TAB).await.unwrap();
    }
    let checked = "return document.activeElement.checked";
    let before = member.execute(checked).await.unwrap();
    member.press(" ").await.unwrap();
    assert_ne!(member.execute(checked).await.unwrap(), before, "Space toggles the scope");
    member.press(" ").await.unwrap();
    assert_eq!(member.execute(checked).await.unwrap(), json!(true), "and back: calls need it");
    tab_to(member, "BUTTON:Create key").await;
    member.press(ENTER).await.unwrap();
    let shown = text_with(member, "Copy the key now").await;
    assert!(shown.contains("keyboard-key"), "{shown}");
    let key = member.find("input.secret").await.unwrap().prop("value").await.unwrap().unwrap();

    // The Claude Desktop configuration holds the key and the bridge; its copy button answers.
    let desktop = member.find("textarea[aria-label='Claude Desktop configuration']").await.unwrap();
    let text = desktop.prop("value").await.unwrap().unwrap();
    assert!(text.contains("mcp-remote") && text.contains(&key), "{text}");
    let id = desktop.prop("id").await.unwrap().unwrap();
    let copy = member.find(&format!("button[data-copy='{id}']")).await.unwrap();
    member.execute(&format!("document.getElementById({id:?}).closest('details').open = true")).await.unwrap();
    copy.click().await.unwrap();
    for _ in 0..30 {
        if copy.text().await.unwrap() != "Copy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(copy.text().await.unwrap(), "Copy", "the copy button did nothing");

    // Calls through the gateway with that key are on /logs (one opens) and on /usage.
    let gateway = app.url("/mcp/tools");
    for n in 0..3 {
        let body = json!({ "jsonrpc": "2.0", "id": n, "method": "tools/call", "params": { "name": "echo", "arguments": { "text": format!("call {n}") } } });
        let answer = crate::helpers::gateway::modern(&gateway, &key, n, "tools/call", body["params"].clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    crate::helpers::gateway::settled_rows(&app, 3).await;
    member.goto(&app.url("/logs")).await.unwrap();
    text_with(member, "Your calls").await;
    assert_eq!(count(member, "table.logs tbody tr a").await, 3);
    member.find("table.logs tbody tr a").await.unwrap().click().await.unwrap();
    let call = text_with(member, "Correlation id").await;
    assert!(call.contains("echo"), "{call}");
    member.goto(&app.url("/usage?range=24h")).await.unwrap();
    let usage = text_with(member, "Requests over the last 24 hours").await;
    assert!(usage.contains("tools"), "{usage}");

    // Deactivated by the admin, the developer's next click lands on the sign-in page.
    page.goto(&app.url("/members")).await.unwrap();
    let deactivate = "form[action$='/deactivate'][data-confirm] button";
    let script = format!(
        "[...document.querySelectorAll({deactivate:?})].find(b => b.closest('tr').textContent.includes('sam@acme.example')).click()"
    );
    page.execute(&script).await.unwrap();
    text_with(page, "Deactivate sam@acme.example?").await;
    let question = page.find("dialog[open]").await.unwrap().text().await.unwrap();
    assert!(question.contains("Their 1 API key is revoked"), "{question}");
    page.find("dialog[open] button.danger").await.unwrap().click().await.unwrap();
    text_with(page, "sam@acme.example was deactivated").await;
    member.find("nav a[href='/services']").await.unwrap().click().await.unwrap();
    wait_for_path(member, "/login").await;

    admin_browser.close().await;
    member_browser.close().await;
}
