//! Every page of every role in headless Chromium at a desktop (1280 px) and a phone (375 px)
//! width: axe-core (npm `axe-core`) finds no serious or critical WCAG 2.1 AA violation, the page
//! is never wider than the screen, and on the phone the menu is folded behind "Menu" until it is
//! opened (without script). Markup does not depend on the database, so this runs on SQLite.

use std::time::Duration;

use serde_json::json;

use mcp_platform::domain::Role;

use crate::browser::{Browser, fill, sign_in, sign_out, submit, text_with};
use crate::helpers::webdriver::WebDriver;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app};

const WIDTHS: [u32; 2] = [1280, 375];

/// The WCAG 2.1 A and AA rules, and the impacts that fail the test.
const AXE_RUN: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
  .then(result => done(result.violations.map(v => ({
    id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help,
    target: v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "),
  }))))
  .catch(error => done([{ id: "axe-error", impact: "critical", nodes: 0, help: String(error), target: "" }]));
"#;

fn axe_source() -> Option<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/npm/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(path) {
        Ok(source) => Some(source),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but {path} is missing: run npm ci --prefix tests/npm")
        }
        Err(_) => {
            crate::helpers::skipped(&format!("{path} is missing"));
            None
        }
    }
}

async fn emulate(page: &WebDriver, width: u32) {
    let metrics = json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600 });
    page.devtools("Emulation.setDeviceMetricsOverride", metrics).await.unwrap();
}

/// Waits for the page at `path` to have loaded (its `<main>` is there).
async fn open(page: &WebDriver, app: &TestApp, path: &str) {
    page.goto(&app.url(path)).await.unwrap();
    for _ in 0..50 {
        if page.execute("return document.readyState === 'complete' && !!document.querySelector('main')").await
            == Ok(json!(true))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not load");
}

/// What is wrong with the page shown, at this width: serious or critical axe violations, and
/// a page wider than the screen. Every violation found is printed, as a figure per page.
async fn check(page: &WebDriver, axe: &str, who: &str, path: &str, width: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let sizes =
        page.execute("return [document.documentElement.scrollWidth, window.innerWidth]").await.unwrap();
    let (page_width, screen) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    if page_width > screen {
        problems.push(format!("{who} {path} at {width} px: the page is {page_width} px wide"));
    }
    let violations = page.execute_async(&format!("{axe}\n{AXE_RUN}")).await.unwrap();
    let violations = violations.as_array().cloned().unwrap_or_default();
    let serious: Vec<_> =
        violations.iter().filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical"))).collect();
    eprintln!(
        "axe {width:>4} px {who:<9} {path:<28} violations: {} ({} serious or critical)",
        violations.len(),
        serious.len()
    );
    for v in serious {
        problems.push(format!(
            "{who} {path} at {width} px: {} ({}): {} on {} element(s): {}",
            v["id"], v["impact"], v["help"], v["nodes"], v["target"]
        ));
    }
    problems
}

/// A seeded organization with a member of each role, a service, a developer's key, and the
/// path of one logged call.
struct Seeded {
    org: mcp_platform::ids::OrgId,
    admin: TestUser,
    developer: TestUser,
    viewer: TestUser,
    log: String,
}

async fn seeded(app: &TestApp, requests: u64, days: u32) -> Seeded {
    let plan = mcp_platform::seed::SeedPlan {
        organization: mcp_platform::domain::OrganizationName::parse("Seeded Pages").unwrap(),
        requests,
        days,
        force: false,
    };
    mcp_platform::seed::seed(&app.db, &plan, app.clock_now()).await.unwrap();
    let org = {
        let mut conn = app.db.acquire().await.unwrap();
        mcp_platform::db::organizations::find_by_slug(conn.conn(), "seeded-pages").await.unwrap().unwrap().id
    };
    let admin = app.create_user(org, Role::Admin).await;
    let developer = app.create_user(org, Role::Developer).await;
    let viewer = app.create_user(org, Role::Viewer).await;
    crate::helpers::gateway::add_service(
        app,
        org,
        "tools",
        "https://tools.example/mcp",
        Some("github"),
        10_000,
    )
    .await;
    let log_id = {
        let html = app.get(&app.signed_in(&admin).await, "/logs").await.text().await.unwrap();
        let rows = html.find("<tbody").unwrap();
        let start = rows + html[rows..].find("href=\"/logs/").unwrap() + "href=\"/logs/".len();
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    };
    let developer_browser = app.signed_in(&developer).await;
    let made = app
        .post_form(
            &developer_browser,
            "/keys",
            "/keys",
            &[("name", "laptop"), ("scope", "mcp:read"), ("expiry", "30")],
        )
        .await;
    app.shown_key(&developer_browser, made).await;
    Seeded { org, admin, developer, viewer, log: format!("/logs/{log_id}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_every_role_passes_axe_and_fits_a_phone() {
    let Some(axe) = axe_source() else { return };
    let Some(browser) = Browser::start().await else { return };
    let app: TestApp = spawn_app(Backend::Sqlite).await;
    let Seeded { org, admin, developer, viewer, log } = seeded(&app, 500, 7).await;

    let admin_pages = [
        "/",
        "/usage?range=7d",
        "/logs",
        &log,
        "/services",
        "/services/tools",
        "/services/new",
        "/services/tools/edit",
        "/keys",
        "/tokens",
        "/members",
        "/organization",
        "/organization/keys",
        "/audit",
        "/account",
    ];
    let developer_pages =
        ["/", "/usage", "/logs", "/services", "/services/tools", "/keys", "/tokens", "/account"];
    // The viewer's last page is the one that says which role a page needs.
    let viewer_pages = ["/", "/usage", "/services", "/services/tools", "/account", "/keys"];
    // Links anyone may open: an invitation and a password reset.
    let invitation = issue_invitation(&app, &admin).await;
    let reset = issue_reset(&app, org, &viewer).await;
    let public_pages = ["/login", invitation.as_str(), reset.as_str()];

    let page = browser.client();
    // The check can fail: an image without a text alternative, and an element wider than the
    // screen, are found.
    open(page, &app, "/login").await;
    page.execute(
        "const wide = document.createElement('div'); wide.style.width = '2000px'; wide.style.height = '1em'; document.body.append(wide)",
    )
    .await
    .unwrap();
    page.execute(
        "document.querySelector('main').insertAdjacentHTML('beforeend', '<img src=\"/static/favicon.svg\">')",
    )
    .await
    .unwrap();
    let planted = check(page, &axe, "planted", "/login", 1280).await;
    assert!(planted.iter().any(|p| p.contains("image-alt")), "axe missed a planted violation: {planted:?}");
    assert!(planted.iter().any(|p| p.contains("px wide")), "a planted wide element was missed: {planted:?}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for width in WIDTHS {
        emulate(page, width).await;
        for path in public_pages {
            open(page, &app, path).await;
            let shown = if path.starts_with("/invitations/") || path.starts_with("/password-reset/") {
                path.rsplit_once('/').map_or(path, |(route, _)| route)
            } else {
                path
            };
            problems.extend(check(page, &axe, "anyone", shown, width).await);
            checked += 1;
        }
        for (user, who, pages) in [
            (&admin, "admin", &admin_pages[..]),
            (&developer, "developer", &developer_pages[..]),
            (&viewer, "viewer", &viewer_pages[..]),
        ] {
            sign_in(page, &app, &user.email, &user.password).await;
            for path in pages {
                open(page, &app, path).await;
                problems.extend(check(page, &axe, who, path, width).await);
                checked += 1;
            }
            // The pages that answer a form: a new key shown once, a reset link shown once.
            if who == "developer" {
                open(page, &app, "/keys").await;
                fill(page, "name", &format!("phone-{width}")).await;
                submit(page, "form[action='/keys']").await;
                text_with(page, "Copy the key now").await;
                problems.extend(check(page, &axe, who, "/keys/new", width).await);
                checked += 1;
            }
            if who == "admin" {
                open(page, &app, "/members").await;
                page.find("form[action$='/password-reset'] button").await.unwrap().click().await.unwrap();
                text_with(page, "Password-reset link for").await;
                problems.extend(check(page, &axe, who, "(reset link made)", width).await);
                checked += 1;
            }
            open(page, &app, "/").await;
            if width < 600 {
                // Folded: the links are not shown until "Menu" is pressed.
                let shown = "return getComputedStyle(document.getElementById('menu')).display !== 'none'";
                assert_eq!(page.execute(shown).await.unwrap(), json!(false), "the menu is folded on a phone");
                page.find("label.menu-button").await.unwrap().click().await.unwrap();
                assert_eq!(page.execute(shown).await.unwrap(), json!(true), "Menu unfolds it");
                let nav = page.find("nav[aria-label=Main]").await.unwrap().text().await.unwrap();
                assert!(nav.contains("Usage") && nav.contains("Services"), "{nav}");
            }
            sign_out(page).await;
        }
    }
    eprintln!("axe and width: {checked} page views checked");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    browser.close().await;
}

/// An invitation's path, made by the admin through the dashboard.
async fn issue_invitation(app: &TestApp, admin: &TestUser) -> String {
    let browser = app.signed_in(admin).await;
    let fields = [("email", "invitee@example.com"), ("role", "developer")];
    let page = app.post_form(&browser, "/members", "/members/invitations", &fields).await;
    let link = crate::members::links(&page.text().await.unwrap()).remove(0);
    link[app.address.len()..].to_owned()
}

/// A password-reset link's path for `member`.
async fn issue_reset(app: &TestApp, org: mcp_platform::ids::OrgId, member: &TestUser) -> String {
    let mut conn = app.db.acquire().await.unwrap();
    let issued =
        mcp_platform::web::password_reset::issue_link(conn.conn(), org, member.id, None, "", app.clock_now())
            .await
            .unwrap();
    issued.url
}

/// Makes `docs/screenshots/`: the home, usage, request-log, service and API-key pages of a
/// seeded organization (20,000 calls over 30 days) at 1280 and 375 px. A tool, not a test:
/// `cargo test --all-features --test api make_screenshots -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a tool: run it to make docs/screenshots"]
async fn make_screenshots() {
    let browser = Browser::start().await.expect("chromium and chromedriver are installed");
    let app: TestApp = spawn_app(Backend::Sqlite).await;
    let Seeded { admin, developer, .. } = seeded(&app, 20_000, 30).await;
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshots");
    std::fs::create_dir_all(directory).unwrap();
    let page = browser.client();
    let shots = [
        (&admin, "home", "/"),
        (&admin, "usage", "/usage?range=30d"),
        (&admin, "logs", "/logs"),
        (&admin, "service", "/services/tools"),
        (&developer, "api-keys", "/keys"),
    ];
    for width in WIDTHS {
        emulate(page, width).await;
        for (user, name, path) in shots {
            sign_in(page, &app, &user.email, &user.password).await;
            open(page, &app, path).await;
            let png = page.screenshot().await.unwrap();
            std::fs::write(format!("{directory}/{name}-{width}.png"), png).unwrap();
            open(page, &app, "/").await;
            if width < 600 {
                page.find("label.menu-button").await.unwrap().click().await.unwrap();
            }
            sign_out(page).await;
        }
    }
    browser.close().await;
}
