//! stdio upstreams: one child process per client session, started with the caller's credential
//! in its arguments or environment. The child runs in its own process group, so ending it ends
//! everything it started; it ends on DELETE, after an idle time, when the platform stops, or by
//! itself (which ends the session). Its stdout carries JSON-RPC, one message per line: answers
//! go to the request waiting for them, the server's own messages to the stream that relays them;
//! any other line is skipped and logged, redacted, like everything on its stderr.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, mpsc, watch};

use crate::catalog::definition::TOKEN_PLACEHOLDER;
use crate::ids::UserId;
use crate::telemetry::redact::{redact_text, truncate};

/// How many stdio sessions may run, and how long an unused one lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdioLimits {
    pub per_user: usize,
    pub total: usize,
    pub idle: Duration,
}

impl Default for StdioLimits {
    fn default() -> Self {
        StdioLimits { per_user: 3, total: 50, idle: Duration::from_secs(600) }
    }
}

/// Longest stdout line read from a child; a longer one is skipped.
const MAX_LINE: u64 = 32 * 1024 * 1024;
/// Longest part of a skipped or stderr line that reaches the platform log.
const MAX_LOGGED: usize = 2048;
/// Server messages kept for a session while no stream is open to relay them.
const BACKLOG: usize = 100;
/// How long a child has to end after SIGTERM before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Environment variables of the platform that a child never inherits.
fn is_platform_setting(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| name.starts_with("MCP_PLATFORM_") || name == "DATABASE_URL")
}

/// A child's whole environment: the platform's own minus its settings, then the service's
/// variables with the caller's token in place of `{token}`.
fn child_environment(
    inherited: impl Iterator<Item = (OsString, OsString)>,
    service: &BTreeMap<String, String>,
    token: &str,
) -> Vec<(OsString, OsString)> {
    let mut environment: Vec<(OsString, OsString)> =
        inherited.filter(|(name, _)| !is_platform_setting(name)).collect();
    for (name, value) in service {
        environment.retain(|(existing, _)| existing != name.as_str());
        environment.push((name.into(), value.replace(TOKEN_PLACEHOLDER, token).into()));
    }
    environment
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("you already have {0} stdio sessions open, the most allowed per user, and each is busy")]
    UserCap(usize),
    #[error("the platform already runs its maximum of {0} stdio sessions")]
    TotalCap(usize),
    #[error("the platform is stopping")]
    Stopping,
    #[error("the service's command could not be started: {0}")]
    Spawn(std::io::Error),
}

/// What a child is started from: the service's command with the caller's token in place.
pub struct Launch<'a> {
    pub service: &'a str,
    pub user_id: UserId,
    pub command: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub token: Option<SecretString>,
}

/// The live children of this instance, with the caps on how many may run.
pub struct StdioPool {
    limits: StdioLimits,
    live: Arc<Mutex<Live>>,
    serial: AtomicU64,
    /// The application's runtime: the children's pipes and the tasks watching them live there,
    /// not on an HTTP worker's runtime, which ends before the children are ended at a stop.
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Live {
    per_user: HashMap<UserId, usize>,
    children: HashMap<u64, (Arc<Process>, tokio::task::JoinHandle<()>)>,
    stopping: bool,
}

impl Live {
    fn release(&mut self, serial: u64, user_id: UserId) {
        self.children.remove(&serial);
        if let Some(count) = self.per_user.get_mut(&user_id) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(&user_id);
            }
        }
    }
}

impl StdioPool {
    /// Must be called on the application's runtime.
    pub fn new(limits: StdioLimits) -> StdioPool {
        let runtime = tokio::runtime::Handle::current();
        StdioPool { limits, live: Arc::default(), serial: AtomicU64::new(0), runtime }
    }

    pub fn limits(&self) -> StdioLimits {
        self.limits
    }

    /// Starts a child for a new session, if the caps allow it. A user at their cap gets room
    /// by ending their least recently used idle session (clients that never send DELETE would
    /// otherwise lock their user out until the idle time ends); busy ones are never ended.
    pub async fn spawn(&self, launch: Launch<'_>) -> Result<Arc<Process>, SpawnError> {
        loop {
            let idle = {
                let live = self.live.lock().expect("stdio table lock");
                let mine = live.per_user.get(&launch.user_id).copied().unwrap_or(0);
                if live.stopping || mine < self.limits.per_user {
                    return self.start_child(live, &launch);
                }
                let theirs = live.children.values().map(|(process, _)| process);
                let idle = theirs
                    .filter(|p| p.user_id == launch.user_id && !p.is_busy())
                    .min_by_key(|p| p.last_used());
                idle.cloned().ok_or(SpawnError::UserCap(self.limits.per_user))?
            };
            tracing::info!(service = %idle.service, pid = ?idle.pid, "ending the user's least recently used idle stdio session to make room");
            idle.end().await;
        }
    }

    fn start_child(
        &self,
        mut live: std::sync::MutexGuard<'_, Live>,
        launch: &Launch<'_>,
    ) -> Result<Arc<Process>, SpawnError> {
        if live.stopping {
            return Err(SpawnError::Stopping);
        }
        if live.children.len() >= self.limits.total {
            return Err(SpawnError::TotalCap(self.limits.total));
        }
        let (mut child, process) = {
            let _on_the_application_runtime = self.runtime.enter();
            start(launch).map_err(SpawnError::Spawn)?
        };
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        *live.per_user.entry(launch.user_id).or_default() += 1;
        let supervisor = {
            let (process, live, idle, user_id) =
                (process.clone(), self.live.clone(), self.limits.idle, launch.user_id);
            self.runtime.spawn(async move {
                let reason = watch_over(&mut child, &process, idle).await;
                terminate(&mut child).await;
                // Released first: whoever waits for the end may take its place at once.
                live.lock().expect("stdio table lock").release(serial, user_id);
                process.close();
                tracing::info!(service = %process.service, pid = ?process.pid, reason, "stdio process ended");
            })
        };
        live.children.insert(serial, (process.clone(), supervisor));
        Ok(process)
    }

    /// Ends every child and waits until each is gone; no new one starts afterwards.
    pub async fn shutdown(&self) {
        let children: Vec<_> = {
            let mut live = self.live.lock().expect("stdio table lock");
            live.stopping = true;
            live.children.drain().map(|(_, child)| child).collect()
        };
        for (process, _) in &children {
            process.stop.notify_one();
        }
        for (_, supervisor) in children {
            let _ = supervisor.await;
        }
    }

    /// How many children run now.
    pub fn running(&self) -> usize {
        self.live.lock().expect("stdio table lock").children.len()
    }
}

/// One running child, shared by the requests of its session.
pub struct Process {
    pub service: String,
    pub pid: Option<u32>,
    user_id: UserId,
    token: Option<SecretString>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    routes: Mutex<Routes>,
    last_used: Mutex<Instant>,
    stop: Notify,
    ended: watch::Sender<bool>,
}

/// Where the child's messages go.
#[derive(Default)]
struct Routes {
    /// Requests waiting for their answer, oldest first.
    pending: Vec<Pending>,
    /// The session's server-to-client stream (GET), when one is open.
    stream: Option<mpsc::Sender<Value>>,
    backlog: VecDeque<Value>,
    ended: bool,
}

struct Pending {
    id: String,
    progress_token: Option<Value>,
    tx: mpsc::Sender<Value>,
}

/// The key a JSON-RPC id is matched by: its JSON text, so 1 and "1" differ.
fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A request's place in the routing table, removed when the request is done.
pub struct Waiting {
    process: Arc<Process>,
    id: String,
    pub messages: mpsc::Receiver<Value>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut routes = self.process.routes.lock().expect("stdio routes lock");
        routes.pending.retain(|p| p.id != self.id);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("a request with this id is already waiting for its answer")]
    DuplicateId,
    #[error("the service's process has ended")]
    Ended,
}

impl Process {
    /// The credential this child was started with, for redacting what it says.
    pub fn secret(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    pub fn has_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Writes one client message (a request, notification or response) to the child's stdin.
    /// A request is registered first, so its answer cannot arrive before anyone waits for it.
    pub async fn send(
        self: &Arc<Self>,
        message: &[u8],
        request: Option<(&Value, Option<Value>)>,
    ) -> Result<Option<Waiting>, SendError> {
        self.touch();
        let waiting = match request {
            Some((id, progress_token)) => {
                let id = id_key(id);
                let (tx, messages) = mpsc::channel(64);
                let mut routes = self.routes.lock().expect("stdio routes lock");
                if routes.ended {
                    return Err(SendError::Ended);
                }
                if routes.pending.iter().any(|p| p.id == id) {
                    return Err(SendError::DuplicateId);
                }
                routes.pending.push(Pending { id: id.clone(), progress_token, tx });
                Some(Waiting { process: self.clone(), id, messages })
            }
            None => None,
        };
        // JSON text holds raw line breaks only as whitespace between tokens, so turning them
        // into spaces keeps the message and makes it one line.
        let mut line: Vec<u8> =
            message.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }).collect();
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let written = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
        .await;
        if written.is_err() {
            // The child reads no more (it has exited, or closed its stdin): it is ended, and
            // its session with it.
            self.stop.notify_one();
            return Err(SendError::Ended);
        }
        Ok(waiting)
    }

    /// Opens the session's server-to-client stream; an older one is closed. Messages that
    /// arrived while none was open come first.
    pub fn open_stream(&self) -> Option<mpsc::Receiver<Value>> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let mut routes = self.routes.lock().expect("stdio routes lock");
        if routes.ended {
            return None;
        }
        while let Some(message) = routes.backlog.pop_front() {
            let _ = tx.try_send(message);
        }
        routes.stream = Some(tx);
        Some(rx)
    }

    /// Ends the child and waits until it is gone.
    pub async fn end(&self) {
        self.stop.notify_one();
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
    }

    fn touch(&self) {
        *self.last_used.lock().expect("stdio clock lock") = Instant::now();
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().expect("stdio clock lock")
    }

    /// A request waits for its answer, or a client listens on the session's stream.
    fn is_busy(&self) -> bool {
        let routes = self.routes.lock().expect("stdio routes lock");
        !routes.pending.is_empty() || routes.stream.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// How long the child has been unused; never idle while a request waits.
    fn idle_for(&self) -> Duration {
        if !self.routes.lock().expect("stdio routes lock").pending.is_empty() {
            return Duration::ZERO;
        }
        self.last_used.lock().expect("stdio clock lock").elapsed()
    }

    /// Drops every route, so waiting requests and the stream see the end.
    fn close(&self) {
        let mut routes = self.routes.lock().expect("stdio routes lock");
        routes.ended = true;
        routes.pending.clear();
        routes.stream = None;
        routes.backlog.clear();
        drop(routes);
        self.ended.send_replace(true);
    }

    /// Hands a message of the child to whoever relays it: an answer to its request; a server
    /// message to the request whose progress token it carries, else the oldest waiting
    /// request, else the open stream, else the backlog.
    async fn dispatch(&self, message: Value) {
        self.touch();
        let target = {
            let mut routes = self.routes.lock().expect("stdio routes lock");
            let is_answer = message.get("method").is_none()
                && (message.get("result").is_some() || message.get("error").is_some());
            if is_answer {
                let id = message.get("id").map(id_key).unwrap_or_default();
                match routes.pending.iter().position(|p| p.id == id) {
                    Some(at) => Some(routes.pending.remove(at).tx),
                    None => {
                        tracing::debug!(service = %self.service, id, "answer to no waiting request dropped");
                        return;
                    }
                }
            } else {
                let token = message.get("params").and_then(|p| p.get("progressToken"));
                let by_token =
                    token.and_then(|t| routes.pending.iter().find(|p| p.progress_token.as_ref() == Some(t)));
                match by_token.or(routes.pending.first()) {
                    Some(pending) => Some(pending.tx.clone()),
                    None => match &routes.stream {
                        Some(stream) if !stream.is_closed() => Some(stream.clone()),
                        _ => {
                            if routes.backlog.len() == BACKLOG {
                                routes.backlog.pop_front();
                                tracing::warn!(service = %self.service, "stdio backlog full: oldest server message dropped");
                            }
                            routes.backlog.push_back(message);
                            return;
                        }
                    },
                }
            }
        };
        if let Some(tx) = target {
            // The client went away: nobody is left to relay it to.
            let _ = tx.send(message).await;
        }
    }

    /// A line of the child's output as it may be logged.
    fn loggable(&self, line: &[u8]) -> String {
        let text = String::from_utf8_lossy(line);
        let known: Vec<&str> = self.secret().into_iter().collect();
        let redacted = redact_text(text.trim_end(), &known);
        truncate(&redacted, MAX_LOGGED).0.to_owned()
    }
}

/// Starts the child with the token in its arguments and environment, in its own process group.
fn start(launch: &Launch<'_>) -> std::io::Result<(Child, Arc<Process>)> {
    let token = launch.token.as_ref().map(|t| t.expose_secret()).unwrap_or("");
    let fill = |value: &String| value.replace(TOKEN_PLACEHOLDER, token);
    let mut command = Command::new(launch.command);
    command
        .args(launch.args.iter().map(fill))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env_clear()
        .envs(child_environment(std::env::vars_os(), launch.env, token));
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn()?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
        return Err(std::io::Error::other("the child's pipes are missing"));
    };
    let process = Arc::new(Process {
        service: launch.service.to_owned(),
        pid: child.id(),
        user_id: launch.user_id,
        token: launch.token.clone(),
        stdin: tokio::sync::Mutex::new(stdin),
        routes: Mutex::default(),
        last_used: Mutex::new(Instant::now()),
        stop: Notify::new(),
        ended: watch::Sender::new(false),
    });
    tokio::spawn(read_stdout(BufReader::new(stdout), process.clone()));
    tokio::spawn(read_stderr(BufReader::new(stderr), process.clone()));
    tracing::info!(service = %process.service, pid = ?process.pid, "stdio process started");
    Ok((child, process))
}

/// Waits until the child exits, is told to stop, or has been idle too long; says which.
async fn watch_over(child: &mut Child, process: &Process, idle: Duration) -> &'static str {
    loop {
        let left = idle.saturating_sub(process.idle_for());
        if left.is_zero() {
            return "idle";
        }
        tokio::select! {
            _ = child.wait() => return "exited",
            _ = process.stop.notified() => return "ended",
            _ = tokio::time::sleep(left) => {}
        }
    }
}

/// Ends the child's whole process group, politely first, and reaps the child.
async fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        use nix::sys::signal::{Signal, killpg};
        let group = nix::unistd::Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
            let _ = killpg(group, Signal::SIGKILL);
        }
        // Whatever the child started and left behind goes with it.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

/// Reads one line of at most `MAX_LINE` bytes; `None` at the end of the stream. A longer line
/// is read to its end and returned empty.
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin), line: &mut Vec<u8>) -> Option<()> {
    line.clear();
    let read = (&mut *reader).take(MAX_LINE).read_until(b'\n', line).await.ok()?;
    if read == 0 {
        return None;
    }
    if !line.ends_with(b"\n") && read as u64 == MAX_LINE {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let more = (&mut *reader).take(MAX_LINE).read_until(b'\n', &mut rest).await.ok()?;
            if more == 0 || rest.ends_with(b"\n") {
                break;
            }
        }
        line.clear();
        line.extend_from_slice(b"[a line over 32 MiB]");
    }
    Some(())
}

async fn read_stdout(mut stdout: BufReader<tokio::process::ChildStdout>, process: Arc<Process>) {
    let mut line = Vec::new();
    while next_line(&mut stdout, &mut line).await.is_some() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(message) if message.is_object() && message["jsonrpc"] == "2.0" => {
                process.dispatch(message).await
            }
            _ => tracing::warn!(
                service = %process.service,
                pid = ?process.pid,
                line = %process.loggable(&line),
                "stdio stdout line is not JSON-RPC: skipped"
            ),
        }
    }
}

async fn read_stderr(mut stderr: BufReader<tokio::process::ChildStderr>, process: Arc<Process>) {
    let mut line = Vec::new();
    while next_line(&mut stderr, &mut line).await.is_some() {
        tracing::info!(service = %process.service, pid = ?process.pid, line = %process.loggable(&line), "stdio stderr");
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_child_inherits_no_platform_setting_and_gets_the_token_where_the_service_says() {
        let inherited = [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("MCP_PLATFORM_SECRET_KEY", "the-master-key"),
            ("MCP_PLATFORM_BIND", "0.0.0.0:80"),
            ("DATABASE_URL", "postgres://u:pw@db/x"),
            ("GITHUB_TOKEN", "the operator's own"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let service = BTreeMap::from([("GITHUB_TOKEN".to_owned(), "{token}".to_owned())]);
        let environment = child_environment(inherited.into_iter(), &service, "ghp_users_own");
        let names: Vec<&str> = environment.iter().map(|(name, _)| name.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "HOME", "GITHUB_TOKEN"]);
        assert_eq!(environment[2].1, "ghp_users_own", "the service's variable wins, with the user's token");
    }

    #[tokio::test]
    async fn a_child_that_reads_no_more_is_told_to_end_when_a_message_finds_it_so() {
        let (args, env) = (["-c".to_owned(), "exec 0<&-; exec sleep 30".to_owned()], BTreeMap::new());
        let launch = Launch {
            service: "closer",
            user_id: UserId::new(),
            command: "sh",
            args: &args,
            env: &env,
            token: None,
        };
        let (_child, process) = start(&launch).unwrap();
        let stdin = format!("/proc/{}/fd/0", process.pid.unwrap());
        for _ in 0..5000 {
            if !std::path::Path::new(&stdin).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!std::path::Path::new(&stdin).exists(), "the shell closed its stdin");
        let request = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let sent = process.send(request.as_bytes(), Some((&Value::from(1), None))).await;
        assert!(matches!(sent, Err(SendError::Ended)), "the write found no reader");
        assert!(process.routes.lock().unwrap().pending.is_empty(), "nothing waits for an answer");
        assert!(process.stop.notified().now_or_never().is_some(), "the child's supervisor is told to end it");
    }
}
