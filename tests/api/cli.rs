//! The binary itself: configuration errors and `admin create`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::helpers::{Backend, client, spawn_app};
use crate::on_both_backends;

on_both_backends!(admin_create_makes_an_admin_and_refuses_a_duplicate, migrate_runs_on_a_fresh_database);

pub fn binary(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-platform"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MCP_PLATFORM_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    let mut child = command
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    // Its log; standard output is the command's answer (a reset link is a secret by design).
    crate::helpers::logged_elsewhere(&String::from_utf8_lossy(&output.stderr));
    output
}

/// Runs the binary with these variables and arguments and no input.
pub fn run_binary(env: &[(&str, &str)], args: &[&str]) -> Output {
    binary(env, args, "")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unknown_database_scheme_is_a_clear_error() {
    let output = binary(&[("DATABASE_URL", "mysql://root:hunter2@db.example/app")], &["migrate"], "");
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("DATABASE_URL") && message.contains("unsupported scheme \"mysql\""),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "the password in the URL is not printed");
}

#[test]
fn other_bad_settings_are_named() {
    let output = binary(&[("MCP_PLATFORM_BIND", "everywhere")], &["serve"], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("MCP_PLATFORM_BIND"), "{}", stderr(&output));
    let output = binary(&[("MCP_PLATFORM_SECRET_KEY", "too-short")], &["serve"], "");
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("MCP_PLATFORM_SECRET_KEY") && !message.contains("too-short"), "{message}");
}

async fn admin_create_makes_an_admin_and_refuses_a_duplicate(backend: Backend) {
    let app = spawn_app(backend).await;
    let env = [("DATABASE_URL", app.database_url.as_str())];
    let args = ["admin", "create", "--org", "Globex", "--email", "Hank@Globex.example"];

    let output = binary(&env, &args, "a long enough password\n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("created admin hank@globex.example"));

    // The new admin can sign in and has the admin's pages.
    let browser = client();
    assert_eq!(app.login(&browser, "hank@globex.example", "a long enough password").await.status(), 303);
    assert_eq!(app.get(&browser, "/members").await.status(), 200);
    // And first-run setup is over.
    assert_eq!(app.get(&client(), "/setup").await.status(), 404);

    let again = binary(&env, &args, "another long password\n");
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    assert_eq!(app.count("users").await, 1);

    let weak =
        binary(&env, &["admin", "create", "--org", "Globex", "--email", "new@globex.example"], "short\n");
    assert!(!weak.status.success());
    assert!(stderr(&weak).contains("at least 12 characters"));
    assert_eq!(app.count("users").await, 1);
}

async fn migrate_runs_on_a_fresh_database(backend: Backend) {
    let app = spawn_app(backend).await;
    // Already migrated by the server: running again is a no-op that succeeds.
    let output = binary(&[("DATABASE_URL", app.database_url.as_str())], &["migrate"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let fresh = app.data_dir.join("fresh.db");
    let url = format!("sqlite://{}", fresh.display());
    let output = binary(&[("DATABASE_URL", url.as_str())], &["migrate"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(fresh.exists());
}
