//! Tool policy: an admin chooses which tools of a service are offered and to which roles, and a
//! key can be narrowed to some services and tools when it is made. Through the gateway, in both
//! eras, `tools/list` shows only what the caller may call, and calling anything else is refused
//! and recorded; the change is audited.

use mcp_platform::db::request_logs::Outcome;
use mcp_platform::domain::Role;
use serde_json::{Value, json};

use crate::helpers::gateway::*;
use crate::helpers::upstream::HttpUpstream;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    the_tool_policy_and_a_keys_reach_decide_what_each_caller_sees_and_calls_in_both_eras,
    a_bad_tool_policy_or_reach_is_refused_at_its_field_and_changes_nothing,
    the_operators_default_applies_to_a_system_service_until_an_organization_sets_its_own,
);

/// The tool names a 2025-11-25 session lists.
async fn listed_in_session(app: &TestApp, key: &str) -> Vec<String> {
    let session = open_session(app, "/mcp/tools", key).await;
    let answer =
        post_in(app, "/mcp/tools", key, &session, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).await;
    let text = answer.text().await.unwrap();
    let messages = mcp_platform::gateway::record::messages_in(&text);
    names(&messages.into_iter().find(|m| m["id"] == 2).expect("an answer")["result"])
}

/// The tool names a 2026-07-28 request lists.
async fn listed_stateless(app: &TestApp, key: &str) -> Vec<String> {
    let result =
        result_of(modern(&app.url("/mcp/tools"), key, 3, "tools/list", json!({})).send().await.unwrap())
            .await;
    assert_eq!(result["cacheScope"], "private");
    names(&result)
}

fn names(result: &Value) -> Vec<String> {
    let tools = result["tools"].as_array().unwrap_or_else(|| panic!("no tools in {result}"));
    let mut names: Vec<String> = tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// What calling `tool` answers in both eras: the text, or the refusal's status and code.
async fn called(app: &TestApp, key: &str, tool: &str, arguments: Value) -> [Result<String, (u16, i64)>; 2] {
    let params = json!({ "name": tool, "arguments": arguments });
    let session = open_session(app, "/mcp/tools", key).await;
    let body = json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params }).to_string();
    let legacy = post_in(app, "/mcp/tools", key, &session, &body).await;
    let stateless = modern(&app.url("/mcp/tools"), key, 6, "tools/call", params).send().await.unwrap();
    let mut outcomes = Vec::new();
    for response in [legacy, stateless] {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer =
            mcp_platform::gateway::record::messages_in(&text).into_iter().find(|m| m.get("id").is_some());
        let answer = answer.unwrap_or_else(|| panic!("no answer in {text}"));
        outcomes.push(match answer["error"]["code"].as_i64() {
            Some(code) => Err((status, code)),
            None => Ok(answer["result"]["content"][0]["text"].as_str().unwrap().to_owned()),
        });
    }
    [outcomes.remove(0), outcomes.remove(0)]
}

async fn the_tool_policy_and_a_keys_reach_decide_what_each_caller_sees_and_calls_in_both_eras(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let developer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    add_service(&app, org, "other", &upstream.url, None, 10_000).await;
    let admin_key = api_key(&app, org, &admin, "mcp:read mcp:write").await;
    let developer_key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let everything = ["add", "big", "echo", "fail", "notify_later", "roots", "slow", "whoami"];
    assert_eq!(listed_in_session(&app, &developer_key).await, everything);

    // Only three tools, and `add` for admins only.
    let admin_browser = app.signed_in(&admin).await;
    let saved = app
        .post_form(
            &admin_browser,
            "/services/tools",
            "/services/tools/tools",
            &[("offer", "listed"), ("offered", "echo\nadd\nwhoami"), ("roles", "add: admin")],
        )
        .await;
    assert_eq!(saved.status(), 303);
    let page = app.get(&admin_browser, "/services/tools").await.text().await.unwrap();
    assert!(
        page.contains(
            "Only these tools are offered: <code>add</code>, <code>echo</code>, <code>whoami</code>"
        ),
        "{page}"
    );
    let audit = app.audit_rows().await;
    assert!(
        audit.iter().any(|(action, success, _)| action == "service.tool_policy_changed" && *success),
        "{audit:?}"
    );

    // The change applies at once on this instance, in both eras.
    assert_eq!(listed_in_session(&app, &developer_key).await, ["echo", "whoami"]);
    assert_eq!(listed_stateless(&app, &developer_key).await, ["echo", "whoami"]);
    assert_eq!(listed_in_session(&app, &admin_key).await, ["add", "echo", "whoami"]);
    assert_eq!(listed_stateless(&app, &admin_key).await, ["add", "echo", "whoami"]);
    let echo = json!({ "text": "allowed" });
    assert_eq!(
        called(&app, &developer_key, "echo", echo).await,
        [Ok("allowed".into()), Ok("allowed".into())]
    );
    let refused = || [Err((403, -32003)), Err((403, -32003))];
    assert_eq!(called(&app, &developer_key, "add", json!({ "a": 1, "b": 2 })).await, refused());
    assert_eq!(called(&app, &developer_key, "big", json!({})).await, refused());
    assert_eq!(
        called(&app, &admin_key, "add", json!({ "a": 1, "b": 2 })).await,
        [Ok("3".into()), Ok("3".into())]
    );

    // A key narrowed to one tool of this service, made on the keys page, reaches nothing else.
    let developer_browser = app.signed_in(&developer).await;
    let created = app
        .post_form(
            &developer_browser,
            "/keys",
            "/keys",
            &[
                ("name", "echo only"),
                ("scope", "mcp:read"),
                ("scope", "mcp:write"),
                ("expiry", "30"),
                ("reach", "tools/echo"),
            ],
        )
        .await;
    let narrow_key = app.shown_key(&developer_browser, created).await;
    let keys_page = app.get(&developer_browser, "/keys").await.text().await.unwrap();
    assert!(keys_page.contains("tools (echo)"), "the keys page shows the reach");
    assert_eq!(listed_in_session(&app, &narrow_key).await, ["echo"]);
    assert_eq!(listed_stateless(&app, &narrow_key).await, ["echo"]);
    assert_eq!(called(&app, &narrow_key, "whoami", json!({})).await, refused());
    let other = request(
        &app.url("/mcp/other"),
        &narrow_key,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    let (status, code, message) = error_of(other.send().await.unwrap()).await;
    assert_eq!((status, code), (403, -32003), "{message}");
    assert!(message.contains("not for the service \"other\""), "{message}");

    // Every refused call is recorded as a failure with its code, naming the tool.
    let rows = settled_rows(&app, 30).await;
    let refused_calls: Vec<&str> = rows
        .iter()
        .filter(|r| r.method == "tools/call" && r.error_code == Some(-32003))
        .map(|r| r.tool.as_str())
        .collect();
    assert_eq!(refused_calls, ["add", "add", "big", "big", "whoami", "whoami"]);
    assert!(rows.iter().filter(|r| r.error_code == Some(-32003)).all(|r| r.outcome == Outcome::Failure));
}

async fn a_bad_tool_policy_or_reach_is_refused_at_its_field_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let browser = app.signed_in(&admin).await;
    let before = app.audit_rows().await.len();

    let bad_role = app
        .post_form(
            &browser,
            "/services/tools",
            "/services/tools/tools",
            &[("offer", "all"), ("offered", ""), ("roles", "add: owner")],
        )
        .await;
    assert_eq!(bad_role.status(), 422);
    let page = bad_role.text().await.unwrap();
    assert!(
        page.contains("id=\"roles-error\"") && page.contains("add: owner"),
        "the input is kept with the error"
    );
    let bad_name = app
        .post_form(
            &browser,
            "/services/tools",
            "/services/tools/tools",
            &[("offer", "listed"), ("offered", "two words"), ("roles", "")],
        )
        .await;
    assert_eq!(bad_name.status(), 422);
    assert!(bad_name.text().await.unwrap().contains("id=\"offered-error\""));
    assert_eq!(app.audit_rows().await.len(), before, "nothing was changed");
    let page = app.get(&browser, "/services/tools").await.text().await.unwrap();
    assert!(page.contains("Every tool of this service is offered."));

    // Another organization's service answers 404.
    let elsewhere = app.create_organization("Elsewhere").await;
    let stranger = app.create_user(elsewhere, Role::Admin).await;
    let stranger_browser = app.signed_in(&stranger).await;
    let foreign = app
        .post_form(
            &stranger_browser,
            "/services",
            "/services/tools/tools",
            &[("offer", "all"), ("offered", ""), ("roles", "")],
        )
        .await;
    assert_eq!(foreign.status(), 404);

    // A key for a service that does not exist is refused at its field, the form kept.
    let key = app
        .post_form(
            &browser,
            "/keys",
            "/keys",
            &[("name", "k"), ("scope", "mcp:read"), ("expiry", "30"), ("reach", "nowhere/echo")],
        )
        .await;
    assert_eq!(key.status(), 422);
    let page = key.text().await.unwrap();
    assert!(
        page.contains("There is no service named &quot;nowhere&quot;")
            || page.contains("There is no service named &#34;nowhere&#34;"),
        "{page}"
    );
    assert!(page.contains("value=\"nowhere/echo\""));
}

async fn the_operators_default_applies_to_a_system_service_until_an_organization_sets_its_own(
    backend: Backend,
) {
    let upstream = HttpUpstream::start();
    let file = std::env::temp_dir().join(format!("services-{}.toml", uuid::Uuid::now_v7().simple()));
    let text = format!(
        "[[service]]\nname = \"tools\"\nkind = \"http\"\nurl = \"{}\"\ntools = [\"echo\", \"add\"]\n",
        upstream.url
    );
    std::fs::write(&file, text).unwrap();
    let settings = mcp_platform::config::Settings { services_file: Some(file), ..Default::default() };
    let app = spawn_app_with(backend, settings).await;
    let acme = app.create_organization("Acme").await;
    let globex = app.create_organization("Globex").await;
    let acme_admin = app.create_user(acme, Role::Admin).await;
    let acme_key = api_key(&app, acme, &acme_admin, "mcp:read").await;
    let globex_member = app.create_user(globex, Role::Developer).await;
    let globex_key = api_key(&app, globex, &globex_member, "mcp:read").await;
    assert_eq!(listed_stateless(&app, &acme_key).await, ["add", "echo"]);

    // Acme's admin offers every tool to Acme; Globex keeps the operator's default.
    let browser = app.signed_in(&acme_admin).await;
    let saved = app
        .post_form(
            &browser,
            "/services/tools",
            "/services/tools/tools",
            &[("offer", "all"), ("offered", ""), ("roles", "")],
        )
        .await;
    assert_eq!(saved.status(), 303);
    assert_eq!(listed_in_session(&app, &acme_key).await.len(), 8);
    assert_eq!(listed_in_session(&app, &globex_key).await, ["add", "echo"]);
}
