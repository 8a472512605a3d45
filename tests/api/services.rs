use mcp_platform::config::Settings;
use mcp_platform::db::{self, Db};
use mcp_platform::domain::Role;

use crate::helpers::{Backend, location, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    admins_define_http_services_that_members_see,
    bad_service_forms_are_refused_at_the_field,
    system_services_come_from_the_operators_file,
    header_values_are_sealed_write_only_sent_upstream_and_rotated,
);

fn service_form<'a>(name: &'a str, url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("description", "Issue tracker"),
        ("version", "2.1"),
        ("is_public", "on"),
        ("upstream_url", url),
        ("headers", "X-Team: platform-secret-header-value\nX-Region: eu"),
        ("token_service_name", "github"),
        ("credential_header", "Authorization: Bearer {token}"),
        ("timeout_seconds", "30"),
    ]
}

async fn admins_define_http_services_that_members_see(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
    let developer = app.signed_in(&app.create_user(org, Role::Developer).await).await;

    let response = app
        .post_form(
            &admin,
            "/services/new",
            "/services",
            &service_form("tracker", "https://mcp.example.com/mcp"),
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response).as_deref(), Some("/services/tracker"));

    let catalog = app.get(&developer, "/services").await.text().await.unwrap();
    assert!(catalog.contains("<code>tracker</code>") && catalog.contains("your organization"));
    let detail = app.get(&developer, "/services/tracker").await.text().await.unwrap();
    assert!(
        detail.contains("<title>tracker · Services · MCP Platform</title>"),
        "the title names the service"
    );
    assert!(detail.contains(&format!("value=\"{}/mcp/tracker\"", app.address)), "gateway URL shown");
    assert!(
        detail.contains("X-Team: ••••") && !detail.contains("platform-secret-header-value"),
        "header values masked"
    );
    assert!(detail.contains("Authorization: Bearer {token}"));
    assert!(detail.contains("You have not set it yet") && detail.contains("href=\"/tokens\""));
    assert!(!detail.contains("/services/tracker/edit"), "developers cannot edit");
    app.post_form(
        &developer,
        "/tokens",
        "/tokens",
        &[("service_name", "github"), ("token", "ghp_developersOwnTokenValue00000000000")],
    )
    .await;
    assert!(
        app.get(&developer, "/services/tracker").await.text().await.unwrap().contains("You have set it.")
    );

    // Edit, then delete.
    let edit = app.get(&admin, "/services/tracker/edit").await.text().await.unwrap();
    assert!(edit.contains("value=\"https://mcp.example.com/mcp\"") && edit.contains("<code>X-Region</code>"));
    assert!(!edit.contains("platform-secret-header-value"), "header values are write-only");
    let mut fields = service_form("tracker", "https://mcp2.example.com/mcp");
    fields[1] = ("description", "Issue tracker, moved");
    assert_eq!(
        app.post_form(&admin, "/services/tracker/edit", "/services/tracker", &fields).await.status(),
        303
    );
    let detail = app.get(&admin, "/services/tracker").await.text().await.unwrap();
    assert!(detail.contains("Issue tracker, moved") && detail.contains("mcp2.example.com"));
    let response = app.post_form(&admin, "/services/tracker", "/services/tracker/delete", &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(app.get(&admin, "/services/tracker").await.status(), 404);

    let rows = app.audit_rows().await;
    let actions: Vec<&str> =
        rows.iter().map(|(a, _, _)| a.as_str()).filter(|a| a.starts_with("service.")).collect();
    assert_eq!(actions, ["service.created", "service.updated", "service.deleted"]);
    assert!(
        rows.iter().all(|(_, _, text)| !text.contains("platform-secret-header-value")),
        "no header value in the audit trail"
    );
}

async fn bad_service_forms_are_refused_at_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
    assert_eq!(
        app.post_form(&admin, "/services/new", "/services", &service_form("taken", "http://127.0.0.1:9/mcp"))
            .await
            .status(),
        303
    );

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (service_form("Bad Name", "https://h/mcp"), "Use lower-case letters"),
        (service_form("new", "https://h/mcp"), "This name is reserved"),
        (service_form("taken", "https://h/mcp"), "A service with this name already exists."),
        (service_form("svc", "ftp://h/mcp"), "The upstream must be an http:// or https:// URL."),
        (service_form("svc", "https://ada:pw@h/mcp"), "not in the URL"),
        (
            service_form("svc", "https://h/mcp")
                .into_iter()
                .map(|(k, v)| if k == "headers" { (k, "no colon here") } else { (k, v) })
                .collect(),
            "is not a Name: value header",
        ),
        (
            service_form("svc", "https://h/mcp")
                .into_iter()
                .map(|(k, v)| if k == "credential_header" { (k, "") } else { (k, v) })
                .collect(),
            "Give both the token name and where it goes, or neither.",
        ),
        (
            service_form("svc", "https://h/mcp")
                .into_iter()
                .map(|(k, v)| if k == "timeout_seconds" { (k, "0") } else { (k, v) })
                .collect(),
            "Enter a timeout from 1 to 600 seconds.",
        ),
    ];
    for (fields, message) in cases {
        let response = app.post_form(&admin, "/services/new", "/services", &fields).await;
        assert_eq!(response.status(), 422, "{message}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message}: {html}");
        assert!(html.contains("value=\"Issue tracker\""), "input kept");
    }
    assert_eq!(app.count("mcp_services").await, 1);
}

async fn system_services_come_from_the_operators_file(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("mcp-services-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("services.toml");
    std::fs::write(
        &file,
        r#"
        [[service]]
        name = "github-projects"
        description = "GitHub project manager"
        kind = "stdio"
        command = "npx"
        args = ["-y", "@monsoft/mcp-github-project-manager", "--GITHUB_PERSONAL_TOKEN={token}"]
        token = "github"

        [[service]]
        name = "internal-only"
        kind = "http"
        url = "http://127.0.0.1:9/mcp"
        public = false
        "#,
    )
    .unwrap();
    let settings = Settings { services_file: Some(file.clone()), ..Settings::default() };
    let app = spawn_app_with(backend, settings).await;
    for org_name in ["Acme", "Globex"] {
        let org = app.create_organization(org_name).await;
        let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
        let catalog = app.get(&admin, "/services").await.text().await.unwrap();
        assert!(
            catalog.contains("<code>github-projects</code>") && catalog.contains("the platform"),
            "{org_name}"
        );
        assert!(!catalog.contains("internal-only"), "a system service that is not public is not offered");
        let detail = app.get(&admin, "/services/github-projects").await.text().await.unwrap();
        assert!(detail.contains("<code>npx</code>") && detail.contains("3 arguments"));
        assert!(!detail.contains("--GITHUB_PERSONAL_TOKEN"), "arguments are the operator's, not shown");
        assert!(!detail.contains("/services/github-projects/edit"), "system services are not edited here");
        assert_eq!(app.get(&admin, "/services/github-projects/edit").await.status(), 404);
        assert_eq!(
            app.post_form(&admin, "/services", "/services/github-projects/delete", &[]).await.status(),
            404
        );
        // An organization service cannot shadow a system one.
        let fields = service_form("github-projects", "https://h/mcp");
        let response = app.post_form(&admin, "/services/new", "/services", &fields).await;
        assert_eq!(response.status(), 422);
        assert!(response.text().await.unwrap().contains("github-projects is a system service"));
    }
    assert_eq!(app.count("mcp_services").await, 2);

    // A restart with a changed file updates in place; one without a service disables it.
    let mut services = mcp_platform::catalog::system::load(&file).unwrap().services;
    services[0].description = "Projects, version two".into();
    let keyring = app.master.token_keyring();
    mcp_platform::app::record_system_services(&app.db, &keyring, &services, app.clock_now()).await.unwrap();
    assert_eq!(app.count("mcp_services").await, 2);
    let org = app.create_organization("Initech").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;
    assert!(
        app.get(&admin, "/services/github-projects")
            .await
            .text()
            .await
            .unwrap()
            .contains("Projects, version two")
    );
    mcp_platform::app::record_system_services(&app.db, &keyring, &[], app.clock_now()).await.unwrap();
    assert_eq!(app.get(&admin, "/services/github-projects").await.status(), 404, "disabled, history kept");
    assert_eq!(app.count("mcp_services").await, 2);
    std::fs::remove_dir_all(dir).unwrap();

    // A broken file stops the start with one line naming the setting.
    let bad = app.data_dir.join("bad.toml");
    std::fs::write(&bad, "[[service]]\nname = \"x\"\nkind = \"shell\"\n").unwrap();
    let output = crate::cli::run_binary(
        &[("MCP_PLATFORM_SERVICES_FILE", bad.to_str().unwrap()), ("DATABASE_URL", app.database_url.as_str())],
        &["serve"],
    );
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("MCP_PLATFORM_SERVICES_FILE") && message.contains("service \"x\": kind"),
        "{message}"
    );
}

/// Every text stored for the services, their header columns included.
async fn stored_service_text(app: &crate::helpers::TestApp) -> String {
    let sql = "SELECT name || ' ' || CAST(headers AS TEXT) || ' ' || CAST(sealed_headers AS TEXT) FROM mcp_services";
    let rows: Vec<String> = match &app.db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    };
    rows.join("\n")
}

/// The service's header values, opened with the platform's key.
async fn opened_headers(
    app: &crate::helpers::TestApp,
    org: mcp_platform::ids::OrgId,
    name: &str,
) -> Vec<(String, String)> {
    let service =
        db::services::find_own(app.db.acquire().await.unwrap().conn(), org, name).await.unwrap().unwrap();
    let keyring = app.master.token_keyring();
    let opened =
        mcp_platform::crypto::headers::open(&keyring, &app.db, service.id, &service.sealed_headers).await;
    opened
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, secrecy::ExposeSecret::expose_secret(&v).to_owned()))
        .collect()
}

const HEADER_SECRET: &str = "header-secret-value-0001";

async fn header_values_are_sealed_write_only_sent_upstream_and_rotated(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let admin_user = app.create_user(org, Role::Admin).await;
    let admin = app.signed_in(&admin_user).await;
    let form = [
        ("name", "static"),
        ("upstream_url", upstream.url.as_str()),
        ("headers", "Authorization: Bearer header-secret-value-0001\nX-Region: eu"),
        ("timeout_seconds", "10"),
    ];
    assert_eq!(app.post_form(&admin, "/services/new", "/services", &form).await.status(), 303);

    // Sealed at rest, shown by name and last 4 characters only.
    assert!(!stored_service_text(&app).await.contains(HEADER_SECRET));
    let detail = app.get(&admin, "/services/static").await.text().await.unwrap();
    assert!(detail.contains("Authorization: ••••0001") && detail.contains("X-Region: ••••<"), "{detail}");
    let edit = app.get(&admin, "/services/static/edit").await.text().await.unwrap();
    assert!(edit.contains("<code>Authorization</code>") && edit.contains("••••0001"));
    assert!(!edit.contains(HEADER_SECRET), "write-only: {edit}");

    // Test connection answers htmx with its panel alone, a browser without JavaScript with the page.
    let html = app.get(&admin, "/services/static").await.text().await.unwrap();
    let token = crate::helpers::csrf_token(&html);
    let panel = admin
        .post(app.url("/services/static/test"))
        .header("HX-Request", "true")
        .header("X-CSRF-Token", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(panel.starts_with("<section id=\"probe\"") && panel.contains("Connected: 8 tools"), "{panel}");
    assert!(!panel.contains("<html"), "a fragment, not a page cut down");
    let page =
        app.post_form(&admin, "/services/static", "/services/static/test", &[]).await.text().await.unwrap();
    assert!(page.contains("<html") && page.contains("Connected: 8 tools"));

    // The gateway opens them for the upstream, and redacts them from what it records.
    let key = crate::helpers::gateway::api_key(&app, org, &admin_user, "mcp:read mcp:write").await;
    let session = crate::helpers::gateway::open_session(&app, "/mcp/static", &key).await;
    let whoami =
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let answer = crate::helpers::gateway::post_in(&app, "/mcp/static", &key, &session, whoami)
        .await
        .text()
        .await
        .unwrap();
    assert!(answer.contains(HEADER_SECRET), "the upstream received the header: {answer}");
    let rows = crate::helpers::gateway::settled_rows(&app, 3).await;
    assert!(rows.iter().all(|r| !r.response.contains(HEADER_SECRET)), "a header value was stored");

    // An empty field keeps a value, a new value replaces it, a box removes it, a line adds one.
    let keep_and_replace = [
        ("name", "static"),
        ("upstream_url", upstream.url.as_str()),
        ("stored_name", "Authorization"),
        ("stored_value", ""),
        ("stored_name", "X-Region"),
        ("stored_value", "us-east-replaced-region"),
        ("headers", "X-Added: added-header-value-7777"),
        ("timeout_seconds", "10"),
    ];
    let saved = app.post_form(&admin, "/services/static/edit", "/services/static", &keep_and_replace).await;
    assert_eq!(saved.status(), 303);
    let opened = opened_headers(&app, org, "static").await;
    let expected = [
        ("Authorization", "Bearer header-secret-value-0001"),
        ("X-Added", "added-header-value-7777"),
        ("X-Region", "us-east-replaced-region"),
    ];
    assert_eq!(opened, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
    let remove = [
        ("name", "static"),
        ("upstream_url", upstream.url.as_str()),
        ("stored_name", "X-Added"),
        ("stored_value", ""),
        ("stored_remove", "X-Added"),
        ("timeout_seconds", "10"),
    ];
    assert_eq!(
        app.post_form(&admin, "/services/static/edit", "/services/static", &remove).await.status(),
        303
    );
    let names: Vec<String> = opened_headers(&app, org, "static").await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Authorization", "X-Region"]);

    // A refused form keeps the user's input but never writes a typed value back into the page.
    let refused = [
        ("name", "static"),
        ("upstream_url", upstream.url.as_str()),
        ("stored_name", "Authorization"),
        ("stored_value", "typed-secret-value-5555"),
        ("headers", "X-Other: other-typed-secret-6666"),
        ("timeout_seconds", "0"),
    ];
    let response = app.post_form(&admin, "/services/static/edit", "/services/static", &refused).await;
    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(page.contains("enter them again") && page.contains("X-Other: "), "{page}");
    assert!(!page.contains("typed-secret-value-5555") && !page.contains("other-typed-secret-6666"));
    assert_eq!(
        opened_headers(&app, org, "static").await[0].1,
        "Bearer header-secret-value-0001",
        "unchanged"
    );

    // Values stored in plain text by an earlier version are sealed at the next start.
    let legacy = r#"{"X-Legacy":"legacy-plain-header-value"}"#;
    let sql =
        format!("UPDATE mcp_services SET headers = '{legacy}', sealed_headers = '[]' WHERE name = 'static'");
    match &app.db {
        Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()).unwrap(),
        Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()).unwrap(),
    }
    app.restart().await;
    assert!(!stored_service_text(&app).await.contains("legacy-plain-header-value"));
    let opened = opened_headers(&app, org, "static").await;
    assert_eq!(opened, [("X-Legacy".to_owned(), "legacy-plain-header-value".to_owned())]);

    // rotate-key re-seals them under the new key.
    let output = crate::cli::run_binary(
        &[
            ("DATABASE_URL", app.database_url.as_str()),
            ("MCP_PLATFORM_SECRET_KEY", app.master.encode().as_str()),
        ],
        &["rotate-key"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("re-sealed the header values of 1 services"));
    let service =
        db::services::find_own(app.db.acquire().await.unwrap().conn(), org, "static").await.unwrap().unwrap();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &service.sealed_headers[0].sealed);
    let current = db::token_keys::current(app.db.acquire().await.unwrap().conn()).await.unwrap().unwrap().0;
    assert_eq!(mcp_platform::crypto::keyring::key_id_of(&bytes.unwrap()).unwrap(), current);
    assert_eq!(opened_headers(&app, org, "static").await[0].1, "legacy-plain-header-value");
}
