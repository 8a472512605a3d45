use chrono::Duration;
use mcp_platform::db::audit;
use mcp_platform::domain::Role;

use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

on_both_backends!(settings_are_typed_fields_and_audited, the_audit_trail_filters_and_pages);

async fn settings_are_typed_fields_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.signed_in(&app.create_user(org, Role::Admin).await).await;

    let page = app.get(&admin, "/organization").await.text().await.unwrap();
    assert!(page.contains("Plan: free"), "{page}");
    let row = |label: &str| page.split("<tr>").find(|r| r.contains(label)).unwrap().to_owned();
    assert!(row("Members <small>").contains("<td>1</td><td>10</td>"), "{page}");
    assert!(row("Services <small>").contains("<td>0</td><td>3</td>"));
    assert!(row("Requests today").contains("<td>0</td><td>10000</td>"));

    let bad = [
        ("name", ""),
        ("contact_email", "nobody"),
        ("default_key_expiry_days", "45"),
        ("log_retention_days", "3"),
        ("rollup_retention_days", "10"),
        ("audit_retention_days", "forever"),
    ];
    let response = app.post_form(&admin, "/organization", "/organization", &bad).await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    for message in [
        "Enter the organization",
        "Enter a valid email address",
        "Choose 30, 90 or 365 days.",
        "from 7 to 730",
        "from 30 to 3650",
    ] {
        assert!(html.contains(message), "{message}");
    }
    assert!(html.contains("value=\"nobody\""), "input kept");
    assert!(app.get(&admin, "/").await.text().await.unwrap().contains("Acme"), "nothing changed");

    let good = [
        ("name", "Acme Robotics"),
        ("contact_email", "ops@acme.example"),
        ("default_key_expiry_days", "30"),
        ("log_retention_days", "120"),
        ("rollup_retention_days", "730"),
        ("audit_retention_days", "400"),
    ];
    let response = app.post_form(&admin, "/organization", "/organization", &good).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("Settings saved.") && html.contains("<span class=\"org\">Acme Robotics</span>"));
    assert!(html.contains("value=\"120\""));
    // New keys now default to the organization's expiry.
    let keys = app.get(&admin, "/keys").await.text().await.unwrap();
    assert!(keys.contains("<option value=\"30\" selected>"), "{keys}");

    let rows = app.audit_rows().await;
    let (_, _, text) = rows.iter().find(|(a, _, _)| a == "organization.updated").expect("audited");
    // PostgreSQL prints JSONB with spaces after separators; compare without them.
    let compact = text.replace(": ", ":").replace(", ", ",");
    assert!(
        compact.contains("\"name\":\"Acme\"") && compact.contains("\"name\":\"Acme Robotics\""),
        "{text}"
    );
    assert!(compact.contains("\"log_retention_days\":120"), "{text}");
    assert!(
        compact.contains("\"rollup_retention_days\":730") && compact.contains("\"audit_retention_days\":400")
    );
}

async fn the_audit_trail_filters_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let other_org = app.create_organization("Globex").await;
    let admin_user = app.create_user(org, Role::Admin).await;
    let admin = app.signed_in(&admin_user).await;
    let outsider = app.create_user(other_org, Role::Admin).await;
    app.signed_in(&outsider).await;

    // 60 invitations' worth of rows, plus the sign-ins.
    let now = app.clock_now();
    for i in 0..60 {
        let entry = audit::Entry {
            organization_id: Some(org),
            actor_email: Some(admin_user.email.as_str()),
            target_id: Some(format!("target-{i}")),
            ..audit::Entry::new(audit::Action::InvitationCreated)
        };
        audit::record(app.db.acquire().await.unwrap().conn(), entry, now + Duration::milliseconds(i))
            .await
            .unwrap();
    }

    let page1 = app.get(&admin, "/audit").await.text().await.unwrap();
    assert_eq!(page1.matches("<tr>").count() - 1, 50, "a page holds 50 rows");
    assert!(!page1.contains(&outsider.email), "another organization's rows never show");
    let start = page1.find("href=\"/audit?").expect("older entries link") + "href=\"".len();
    let next = page1[start..start + page1[start..].find('"').unwrap()].replace("&amp;", "&");
    let page2 = app.get(&admin, &next).await.text().await.unwrap();
    assert_eq!(page2.matches("<tr>").count() - 1, 11, "60 invitations and one sign-in");
    assert!(page2.contains("auth.sign_in"));

    let sign_ins = app.get(&admin, "/audit?action=auth.").await.text().await.unwrap();
    assert_eq!(sign_ins.matches("<code>auth.sign_in</code>").count(), 1);
    assert!(!sign_ins.contains("invitation.created"));
    let by_actor =
        app.get(&admin, &format!("/audit?actor={}", &admin_user.email[..12])).await.text().await.unwrap();
    assert!(by_actor.contains("invitation.created"));
    let nobody = app.get(&admin, "/audit?actor=nobody-at-all").await.text().await.unwrap();
    assert!(nobody.contains("Nothing recorded matches."));
    let tomorrow = (now + Duration::days(1)).format("%Y-%m-%d").to_string();
    let future = app.get(&admin, &format!("/audit?from={tomorrow}")).await.text().await.unwrap();
    assert!(future.contains("Nothing recorded matches."));
    let today = now.format("%Y-%m-%d").to_string();
    let range = app
        .get(&admin, &format!("/audit?from={today}&to={today}&action=auth.sign_in"))
        .await
        .text()
        .await
        .unwrap();
    assert!(range.contains("<code>auth.sign_in</code>"));

    let bad = app.get(&admin, "/audit?from=yesterday").await;
    assert_eq!(bad.status(), 422);
    let html = bad.text().await.unwrap();
    assert!(html.contains("From: Enter the date as YYYY-MM-DD.") && html.contains("value=\"yesterday\""));
}
