use crate::helpers::{Backend, client, spawn_app};
use crate::on_both_backends;

on_both_backends!(health_and_readiness);

async fn health_and_readiness(backend: Backend) {
    let app = spawn_app(backend).await;
    let browser = client();
    let health = app.get(&browser, "/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let ready = app.get(&browser, "/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "ready");

    // A signed-in browser (it sends its session cookie with everything).
    let org = app.create_organization("Acme").await;
    let signed_in = app.signed_in(&app.create_user(org, mcp_platform::domain::Role::Viewer).await).await;

    // Take the database away from the server: not ready, but still alive.
    app.server_db.close().await;
    // Assets, health and metrics load no session, so they answer without a database.
    for path in ["/static/style.css", "/static/htmx.min.js", "/healthz", "/metrics"] {
        assert_eq!(app.get(&signed_in, path).await.status(), 200, "{path}");
    }
    let ready = app.get(&browser, "/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "unavailable");
    assert_eq!(app.get(&browser, "/healthz").await.status(), 200);
}
