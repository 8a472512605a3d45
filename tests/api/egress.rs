//! SSRF: an organization admin cannot point a service at the platform's own network. Tenant
//! upstreams reach public addresses only, checked when the service is saved and on the address
//! of every connection; the operator can open private networks, and trusts system services.

use mcp_platform::config::Settings;
use mcp_platform::domain::Role;

use crate::helpers::gateway::{add_service, api_key, error_of, post};
use crate::helpers::upstream::HttpUpstream;
use crate::helpers::{Backend, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(tenant_upstreams_reach_public_addresses_only_and_system_services_are_trusted);

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

async fn tenant_upstreams_reach_public_addresses_only_and_system_services_are_trusted(backend: Backend) {
    let upstream = HttpUpstream::start();
    let services_file = std::env::temp_dir().join(format!("egress-{}.toml", uuid::Uuid::now_v7().simple()));
    let system = format!("[[service]]\nname = \"operators\"\nkind = \"http\"\nurl = \"{}\"\n", upstream.url);
    std::fs::write(&services_file, system).unwrap();
    let settings = Settings {
        allow_private_upstreams: Some(String::new()),
        services_file: Some(services_file.clone()),
        ..Settings::default()
    };
    let app = spawn_app_with(backend, settings).await;
    std::fs::remove_file(services_file).unwrap();
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let browser = app.signed_in(&admin).await;

    // Saving: every internal address is refused at the field, and nothing is stored.
    for url in [
        "http://127.0.0.1:9/mcp",
        "http://localhost:9/mcp",
        "http://[::1]:9/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/mcp",
        "http://[::ffff:127.0.0.1]:9/mcp",
    ] {
        let form = [("name", "internal"), ("upstream_url", url), ("timeout_seconds", "10")];
        let response = app.post_form(&browser, "/services/new", "/services", &form).await;
        assert_eq!(response.status(), 422, "{url}");
        let page = response.text().await.unwrap();
        assert!(page.contains("is not a public address"), "{url}: {page}");
        assert!(page.contains(&format!("value=\"{url}\"")), "the input is kept");
    }
    assert_eq!(app.count("mcp_services WHERE organization_id IS NOT NULL").await, 0);

    // Connecting: a service whose address turned internal after it was saved (stored here
    // directly, as a DNS change would) is refused on the address the connection would reach,
    // by name and by literal address, and the upstream is never called.
    let key = api_key(&app, org, &admin, "mcp:read mcp:write").await;
    let by_name = upstream.url.replace("127.0.0.1", "localhost");
    add_service(&app, org, "literal", &upstream.url, None, 10_000).await;
    add_service(&app, org, "by-name", &by_name, None, 10_000).await;
    for path in ["/mcp/literal", "/mcp/by-name"] {
        let (status, code, message) = error_of(post(&app, path, Some(&key), LIST).await).await;
        assert_eq!((status, code), (502, -32010), "{path}");
        assert!(message.contains("is not a public address"), "{path}: {message}");
    }
    // "Test connection" goes the same way.
    let tested = app.post_form(&browser, "/services/by-name", "/services/by-name/test", &[]).await;
    assert!(tested.text().await.unwrap().contains("is not a public address"));

    // The operator's own services are trusted.
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    assert_eq!(post(&app, "/mcp/operators", Some(&key), init).await.status(), 200);
}
