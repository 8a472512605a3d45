use chrono::Duration;
use mcp_platform::db;
use mcp_platform::domain::Role;

use crate::helpers::gateway::{add_service, key_verdict, may_call_tools};
use crate::helpers::{Backend, TestApp, csrf_token, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_key_is_shown_once_and_stored_only_as_a_hash,
    authentication_says_why_a_key_is_refused,
    last_use_is_recorded_at_most_once_a_minute,
    bad_key_forms_are_refused_at_the_field,
    keys_belong_to_their_owner_and_organization,
    simultaneous_rolls_replace_a_key_once_and_never_answer_500,
    revoking_asks_first_and_says_what_happened,
);

/// Creates a key through the dashboard and returns the full key from the page that shows it once.
async fn create_key(app: &TestApp, browser: &reqwest::Client, fields: &[(&str, &str)]) -> String {
    let response = app.post_form(browser, "/keys", "/keys", fields).await;
    app.shown_key(browser, response).await
}

fn default_key() -> Vec<(&'static str, &'static str)> {
    vec![("name", "laptop"), ("scope", "mcp:read"), ("scope", "mcp:write"), ("expiry", "90")]
}

async fn every_text_in_the_database(app: &TestApp) -> String {
    let sql = "SELECT name || ' ' || display_key || ' ' || scopes || ' ' || hex(key_hash) FROM api_keys";
    let sql_pg =
        "SELECT name || ' ' || display_key || ' ' || scopes || ' ' || encode(key_hash, 'hex') FROM api_keys";
    let keys: Vec<String> = match &app.db {
        db::Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        db::Db::Postgres(pool) => sqlx::query_scalar(sql_pg).fetch_all(pool).await.unwrap(),
    };
    let audit: Vec<String> =
        app.audit_rows().await.into_iter().map(|(a, _, text)| format!("{a} {text}")).collect();
    format!("{}\n{}", keys.join("\n"), audit.join("\n"))
}

async fn a_key_is_shown_once_and_stored_only_as_a_hash(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;

    let key = create_key(&app, &browser, &default_key()).await;
    assert!(key.starts_with("mcp_sk_") && key.len() == 56, "{key}");
    // Reloading the page that showed it shows nothing and makes no other key.
    let reloaded = app.get(&browser, "/keys/new").await;
    assert_eq!(crate::helpers::location(&reloaded).as_deref(), Some("/keys"));
    assert_eq!(app.count("api_keys").await, 1);
    // Nor does the session's stored state hold it in plain text on its way to that page.
    let response = app.post_form(&browser, "/keys", "/keys", &default_key()).await;
    let sessions: Vec<String> = match &app.db {
        db::Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT state FROM sessions").fetch_all(pool).await.unwrap()
        }
        db::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT CAST(state AS TEXT) FROM sessions").fetch_all(pool).await.unwrap()
        }
    };
    let second = app.shown_key(&browser, response).await;
    assert!(sessions.iter().all(|state| !state.contains(&second[7..50])), "{sessions:?}");

    // Listed by its display form only.
    let list = app.get(&browser, "/keys").await.text().await.unwrap();
    assert!(list.contains(&format!("mcp_sk_{}...{}", &key[7..11], &key[52..])), "{list}");
    assert!(list.contains("mcp:read mcp:write"));
    for page in ["/keys", "/", "/account"] {
        let html = app.get(&browser, page).await.text().await.unwrap();
        assert!(!html.contains(&key), "{page} shows the full key again");
    }
    // Stored as SHA-256 only; the audit row names the key without its secret.
    let stored = every_text_in_the_database(&app).await;
    assert!(!stored.contains(&key) && !stored.contains(&key[7..50]), "{stored}");
    use sha2::Digest;
    let expected_hash = hex_upper(&sha2::Sha256::digest(key.as_bytes()));
    assert!(stored.to_uppercase().contains(&expected_hash));
    let actions: Vec<String> = app.audit_rows().await.into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(actions.iter().filter(|a| *a == "api_key.created").count(), 2);

    // The gateway lets it in, with the scopes it was given.
    add_service(&app, org, "nowhere", "http://127.0.0.1:9/mcp", None, 1_000).await;
    assert_eq!(key_verdict(&app, &key).await, Ok(()));
    assert!(may_call_tools(&app, &key, "nowhere").await, "mcp:write was given");
    let logs = crate::helpers::captured_logs();
    assert!(logs.contains(r#"method="POST" path="/keys""#), "the access log was captured");
    assert!(!logs.contains(&key[7..50]), "the key reached a log line");
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn key_id_from_list(html: &str) -> String {
    let marker = "action=\"/keys/";
    let start = html.find(marker).unwrap() + marker.len();
    html[start..start + 36].to_owned()
}

async fn authentication_says_why_a_key_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;

    // Malformed: a one-character change breaks the checksum, and no lookup is needed to say so.
    let key = create_key(&app, &browser, &default_key()).await;
    let mut typo = key.clone().into_bytes();
    typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let malformed = Err("the API key is malformed".to_owned());
    assert_eq!(key_verdict(&app, &typo).await, malformed);
    assert_eq!(key_verdict(&app, "Bearer nonsense").await, malformed);
    // Unknown: well-formed but never issued.
    let stranger = mcp_platform::crypto::api_key::ApiKey::generate();
    assert_eq!(key_verdict(&app, stranger.expose()).await, Err("the API key is not known".to_owned()));

    // Revoked.
    let id = key_id_from_list(&app.get(&browser, "/keys").await.text().await.unwrap());
    let response = app.post_form(&browser, "/keys", &format!("/keys/{id}/revoke"), &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(key_verdict(&app, &key).await, Err("the API key has been revoked".to_owned()));

    // Expired: a 30-day key, 31 days later.
    let short =
        create_key(&app, &browser, &[("name", "short"), ("scope", "mcp:read"), ("expiry", "30")]).await;
    assert_eq!(key_verdict(&app, &short).await, Ok(()));
    app.clock.advance(Duration::days(31));
    assert_eq!(key_verdict(&app, &short).await, Err("the API key has expired".to_owned()));

    // Rolled: the old key works during the grace time, not after; the new one works.
    let browser = app.signed_in(&developer).await;
    let old = create_key(&app, &browser, &default_key()).await;
    let list = app.get(&browser, "/keys").await.text().await.unwrap();
    let old_id = key_id_from_list(&list);
    let response =
        app.post_form(&browser, "/keys", &format!("/keys/{old_id}/roll"), &[("grace_hours", "2")]).await;
    let new = app.shown_key(&browser, response).await;
    assert_ne!(new, old);
    assert_eq!(key_verdict(&app, &old).await, Ok(()), "the old key works during the grace time");
    app.clock.advance(Duration::hours(3));
    let rolled = Err("the API key was replaced and its grace period is over".to_owned());
    assert_eq!(key_verdict(&app, &old).await, rolled);
    add_service(&app, org, "nowhere", "http://127.0.0.1:9/mcp", None, 1_000).await;
    assert!(may_call_tools(&app, &new, "nowhere").await, "the new key keeps the scopes");

    // Owner deactivated through another instance (straight in the database): every key stops
    // once this instance's copy has expired.
    let mut conn = app.db.acquire().await.unwrap();
    assert!(db::users::set_active(conn.conn(), org, developer.id, false, app.clock_now()).await.unwrap());
    drop(conn);
    app.clock.advance(Duration::seconds(10));
    assert_eq!(key_verdict(&app, &new).await, Err("the API key's owner is deactivated".to_owned()));

    // The checksum is checked before any database lookup: with the database gone, a typo is
    // still "malformed", while a well-formed key cannot be judged.
    app.server_db.close().await;
    assert_eq!(key_verdict(&app, &typo).await, malformed);
    let unavailable = key_verdict(&app, mcp_platform::crypto::api_key::ApiKey::generate().expose()).await;
    assert_eq!(unavailable, Err("The platform cannot check keys right now".to_owned()));
}

async fn last_use_is_recorded_at_most_once_a_minute(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;
    let key = create_key(&app, &browser, &default_key()).await;
    let last_used = || async {
        let rows = db::api_keys::list_for_user(app.db.acquire().await.unwrap().conn(), org, developer.id)
            .await
            .unwrap();
        rows[0].last_used_at
    };
    assert_eq!(last_used().await, None);
    assert_eq!(key_verdict(&app, &key).await, Ok(()));
    let first = last_used().await.expect("recorded");
    app.clock.advance(Duration::seconds(30));
    assert_eq!(key_verdict(&app, &key).await, Ok(()));
    assert_eq!(last_used().await, Some(first), "not rewritten within a minute");
    app.clock.advance(Duration::seconds(61));
    assert_eq!(key_verdict(&app, &key).await, Ok(()));
    let later = last_used().await.unwrap();
    assert!(later > first);
    // A call on a clock that is behind (another instance's) never moves it back.
    app.clock.advance(Duration::minutes(-5));
    assert_eq!(key_verdict(&app, &key).await, Ok(()));
    assert_eq!(last_used().await, Some(later));
}

async fn bad_key_forms_are_refused_at_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("name", ""), ("scope", "mcp:read"), ("expiry", "30")], "Give the key a name"),
        (&[("name", "ci"), ("expiry", "30")], "Choose at least one scope."),
        (
            &[("name", "ci"), ("scope", "admin:users"), ("expiry", "30")],
            "Your role (developer) cannot grant admin:users.",
        ),
        (
            &[("name", "ci"), ("scope", "mcp:read"), ("expiry", "custom"), ("custom_date", "2001-01-01")],
            "The expiry date is in the past.",
        ),
        (
            &[("name", "ci"), ("scope", "mcp:read"), ("expiry", "custom"), ("custom_date", "soon")],
            "Enter the date as YYYY-MM-DD.",
        ),
    ];
    for (fields, message) in cases {
        let response = app.post_form(&browser, "/keys", "/keys", fields).await;
        assert_eq!(response.status(), 422, "{message}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message}: {html}");
        if let Some((_, name)) = fields.iter().find(|(k, _)| *k == "name") {
            assert!(html.contains(&format!("name=\"name\" value=\"{name}\"")), "the name is kept");
        }
    }
    assert_eq!(app.count("api_keys").await, 0, "nothing was created");
    let far = (app.clock_now() + Duration::days(6 * 366)).format("%Y-%m-%d").to_string();
    let fields = [("name", "ci"), ("scope", "mcp:read"), ("expiry", "custom"), ("custom_date", far.as_str())];
    let response = app.post_form(&browser, "/keys", "/keys", &fields).await;
    assert!(response.text().await.unwrap().contains("Choose a date within five years."));
    let date = (app.clock_now() + Duration::days(100)).format("%Y-%m-%d").to_string();
    let fields =
        [("name", "dated"), ("scope", "logs:read"), ("expiry", "custom"), ("custom_date", date.as_str())];
    let ok = create_key(&app, &browser, &fields).await;
    assert_eq!(key_verdict(&app, &ok).await, Ok(()));
    let list = app.get(&browser, "/keys").await.text().await.unwrap();
    assert!(list.contains("<td>logs:read</td>"), "{list}");
    // A rolled grace time out of range is refused at that key's row.
    let id = key_id_from_list(&app.get(&browser, "/keys").await.text().await.unwrap());
    let response =
        app.post_form(&browser, "/keys", &format!("/keys/{id}/roll"), &[("grace_hours", "-1")]).await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("Enter the grace time in hours"));
    assert_eq!(app.count("api_keys").await, 1);
}

async fn keys_belong_to_their_owner_and_organization(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let other_org = app.create_organization("Globex").await;
    let owner = app.create_user(org, Role::Developer).await;
    let colleague = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let foreign_admin = app.create_user(other_org, Role::Admin).await;

    let owner_browser = app.signed_in(&owner).await;
    let key = create_key(&app, &owner_browser, &default_key()).await;
    let id = key_id_from_list(&app.get(&owner_browser, "/keys").await.text().await.unwrap());

    // A colleague cannot revoke or roll it, and does not see it.
    let colleague_browser = app.signed_in(&colleague).await;
    assert!(!app.get(&colleague_browser, "/keys").await.text().await.unwrap().contains(&id));
    for action in ["revoke", "roll"] {
        let response = app.post_form(&colleague_browser, "/keys", &format!("/keys/{id}/{action}"), &[]).await;
        assert_eq!(response.status(), 404, "{action}");
    }
    // An admin of another organization sees nothing of it and cannot revoke it.
    let foreign = app.signed_in(&foreign_admin).await;
    let list = app.get(&foreign, "/organization/keys").await.text().await.unwrap();
    assert!(!list.contains(&id) && !list.contains(&owner.email), "{list}");
    let response = app.post_form(&foreign, "/keys", &format!("/organization/keys/{id}/revoke"), &[]).await;
    assert_eq!(response.status(), 404);
    assert_eq!(key_verdict(&app, &key).await, Ok(()));

    // The organization's admin sees it with its owner and can revoke it.
    let admin_browser = app.signed_in(&admin).await;
    let list = app.get(&admin_browser, "/organization/keys").await.text().await.unwrap();
    assert!(list.contains(&id) && list.contains(&owner.email));
    let token = csrf_token(&list);
    let response = admin_browser
        .post(app.url(&format!("/organization/keys/{id}/revoke")))
        .form(&[("csrf_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(key_verdict(&app, &key).await, Err("the API key has been revoked".to_owned()));
}

/// Four rolls of the same key at the same moment (SQLite used to answer "database is locked"
/// with a 500): one replaces the key, the others are told it was rolled meanwhile.
async fn simultaneous_rolls_replace_a_key_once_and_never_answer_500(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let browser = app.signed_in(&developer).await;
    create_key(&app, &browser, &default_key()).await;
    let html = app.get(&browser, "/keys").await.text().await.unwrap();
    let (id, token) = (key_id_from_list(&html), csrf_token(&html));
    let rolls: Vec<_> = (0..4)
        .map(|_| {
            let (browser, url, token) =
                (browser.clone(), app.url(&format!("/keys/{id}/roll")), token.clone());
            tokio::spawn(async move {
                let form = [("grace_hours", "1"), ("csrf_token", token.as_str())];
                let response = browser.post(url).form(&form).send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            })
        })
        .collect();
    let mut won = 0;
    for roll in rolls {
        let (status, page) = roll.await.unwrap();
        match status {
            303 => won += 1,
            // Lost the race: told so, whether it saw the key already rolled or rolled it at once.
            409 => assert!(page.contains("rolled or revoked at the same moment"), "{page}"),
            422 => assert!(page.contains("Only an active key can be rolled"), "{page}"),
            other => panic!("a simultaneous roll answered {other}:\n{page}"),
        }
    }
    assert_eq!(won, 1, "one roll wins");
    assert_eq!(app.count("api_keys").await, 2, "the key was replaced exactly once");
}

/// Revoking asks first, naming the key and who loses it (the question changes nothing), and
/// the next page says what was done, once.
async fn revoking_asks_first_and_says_what_happened(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let owner = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let browser = app.signed_in(&owner).await;
    let key =
        create_key(&app, &browser, &[("name", "ci-bot"), ("scope", "mcp:read"), ("expiry", "30")]).await;
    let list = app.get(&browser, "/keys").await.text().await.unwrap();
    let id = key_id_from_list(&list);
    assert!(list.contains(&format!("action=\"/keys/{id}/revoke\" data-confirm")), "the button asks first");
    let display = format!("{}...{}", &key[..11], &key[key.len() - 4..]);

    let question = app.get(&browser, &format!("/keys/{id}/revoke")).await;
    assert_eq!(question.status(), 200);
    let question = question.text().await.unwrap();
    assert!(question.contains("Revoke API key ci-bot?"), "{question}");
    assert!(question.contains(&format!("Every MCP client that uses {display} stops reaching the gateway")));
    assert!(question.contains(&format!("method=\"post\" action=\"/keys/{id}/revoke\"")));
    assert_eq!(key_verdict(&app, &key).await, Ok(()), "asking changes nothing");

    let done = app.post_form(&browser, "/keys", &format!("/keys/{id}/revoke"), &[]).await;
    assert_eq!(done.status(), 303);
    let notice = format!("API key ci-bot ({display}) revoked.");
    let next = app.get(&browser, "/keys").await.text().await.unwrap();
    assert!(next.contains(&format!("role=\"status\">{notice}")), "{next}");
    assert!(!app.get(&browser, "/keys").await.text().await.unwrap().contains(&notice), "said once");
    assert_eq!(key_verdict(&app, &key).await, Err("the API key has been revoked".to_owned()));

    // An admin's question names the owner.
    let second =
        create_key(&app, &browser, &[("name", "laptop"), ("scope", "mcp:read"), ("expiry", "30")]).await;
    let id = key_id_from_list(&app.get(&browser, "/keys").await.text().await.unwrap());
    let admin_browser = app.signed_in(&admin).await;
    let question =
        app.get(&admin_browser, &format!("/organization/keys/{id}/revoke")).await.text().await.unwrap();
    assert!(question.contains(&format!("Every MCP client of {}", owner.email)), "{question}");
    assert_eq!(key_verdict(&app, &second).await, Ok(()));
}
