//! The platform as an operator runs it: the real binary's own log, as JSON lines.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{client, csrf_token, location};

/// The platform binary, serving, with its standard error read line by line.
pub struct Served {
    child: Child,
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
    data_dir: std::path::PathBuf,
}

impl Served {
    pub fn start(env: &[(&str, &str)]) -> Served {
        let data_dir = std::env::temp_dir().join(format!("mcp-served-{}", uuid::Uuid::now_v7().simple()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-platform"));
        for (name, _) in std::env::vars() {
            if name.starts_with("MCP_PLATFORM_") || name == "DATABASE_URL" || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("MCP_PLATFORM_DATA_DIR", &data_dir)
            .env("MCP_PLATFORM_BIND", "127.0.0.1:0")
            .envs(env.iter().copied())
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some((_, url)) = line.split_once("MCP Platform is running: open ") {
                    let url = url.split(['"', ' ']).next().unwrap_or_default().trim_end_matches('/');
                    let _ = url_tx.send(url.to_owned());
                }
                crate::helpers::logged_elsewhere(&line);
                kept.lock().unwrap().push(line);
            }
        });
        let url = url_rx.recv_timeout(Duration::from_secs(60)).expect("the platform says where it listens");
        Served { child, url, lines, data_dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it SIGTERM, as a service manager does to stop it.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// Waits until it has exited, with success, and returns everything it logged.
    pub fn exited(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "stopped with {status}");
        // The reader has the last lines once the pipe closes.
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().unwrap().clone()
    }

    /// Stops it (SIGTERM) and returns everything it logged.
    fn stop(self) -> Vec<String> {
        self.terminate();
        self.exited()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn correlation(response: &reqwest::Response) -> String {
    response.headers()["x-correlation-id"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_json_lines_with_the_instance_and_each_requests_correlation_id() {
    let served = Served::start(&[("MCP_PLATFORM_LOG_FORMAT", "json"), ("MCP_PLATFORM_INSTANCE", "eu-1")]);
    let browser = client();

    // The first run's setup: a dashboard request that logs a line of its own.
    let page = browser.get(format!("{}/setup", served.url)).send().await.unwrap();
    let page_correlation = correlation(&page);
    let token = csrf_token(&page.text().await.unwrap());
    let password = "a long and secret passphrase";
    crate::helpers::used_secret(password);
    let fields = [
        ("csrf_token", token.as_str()),
        ("organization", "Acme"),
        ("email", "ada@example.com"),
        ("password", password),
        ("password_confirm", password),
    ];
    let setup = browser.post(format!("{}/setup", served.url)).form(&fields).send().await.unwrap();
    assert_eq!(location(&setup).as_deref(), Some("/"));
    let setup_correlation = correlation(&setup);
    assert_ne!(setup_correlation, page_correlation, "each request has its own");

    // A gateway call with a key that is not one: refused, and its answer names its id.
    let refused = reqwest::Client::new()
        .post(format!("{}/mcp/github", served.url))
        .header("authorization", "Bearer mcp_sk_notakey")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let gateway_correlation = correlation(&refused);

    let lines = served.stop();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    for line in &parsed {
        assert_eq!(line["instance"], "eu-1", "{line}");
        assert!(line["timestamp"].is_string() && line["level"].is_string(), "{line}");
    }
    let of =
        |id: &str| -> Vec<&Value> { parsed.iter().filter(|l| l["span"]["correlation_id"] == id).collect() };

    let setup_lines = of(&setup_correlation);
    assert!(
        setup_lines.iter().any(|l| l["message"] == "first organization and admin created"),
        "the handler's own line carries the request's id: {setup_lines:?}"
    );
    let access = setup_lines.iter().find(|l| l["message"] == "answered").expect("the access line");
    assert_eq!((access["method"].as_str(), access["path"].as_str()), (Some("POST"), Some("/setup")));
    assert_eq!(access["status"], 303);
    assert!(access["ms"].is_u64() && access["client"] == "127.0.0.1", "{access}");

    let gateway_lines = of(&gateway_correlation);
    let access =
        gateway_lines.iter().find(|l| l["message"] == "answered").expect("the gateway's access line");
    assert_eq!((access["path"].as_str(), access["status"].as_u64()), (Some("/mcp/github"), Some(401)));
    assert!(of(&page_correlation).iter().any(|l| l["path"] == "/setup" && l["status"] == 200));

    // Start-up and stop are logged too (outside any request), and nothing secret is.
    assert!(
        parsed
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("MCP Platform is running")))
    );
    assert!(parsed.iter().any(|l| l["message"] == "request logs flushed"));
    let all = lines.join("\n");
    for secret in [password, "mcp_sk_notakey"] {
        assert!(!all.contains(secret), "{secret} is in the log");
    }
}
