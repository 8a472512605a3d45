//! `spawn_app()`: the real server on a random port against a fresh database, and a
//! cookie-aware client. Every test runs on SQLite, and on PostgreSQL when
//! `TEST_POSTGRES_URL` is set (required when `CI=true`).

pub mod gateway;
pub mod logs;
pub mod upstream;
pub mod webdriver;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use mcp_platform::app::Application;
use mcp_platform::clock::OffsetClock;
use mcp_platform::config::{Config, MasterKey, Settings};
use mcp_platform::db::{self, Db};
use mcp_platform::domain::{Email, OrganizationName, Role};
use mcp_platform::ids::{OrgId, ServiceId, UserId};
use reqwest::header::{HeaderMap, SET_COOKIE};
use secrecy::SecretString;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery staple";

/// Everything the platform logs during the test run (all tests share it), so tests can assert
/// that no secret ever reaches a log line; also written to the CI's log scan (`scan_file`).
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>, Option<Arc<std::sync::Mutex<std::fs::File>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        if let Some(file) = &self.1 {
            file.lock().unwrap().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// A file of this test process for the CI's scan of everything the platform logged
/// (`.ci/scan-logs`): `kind` is `platform` (log output) or `secrets` (one secret the tests used
/// a line). `None` unless `MCP_TEST_LOG_DIR` names a directory.
fn scan_file(kind: &str) -> Option<std::fs::File> {
    let dir = PathBuf::from(std::env::var_os("MCP_TEST_LOG_DIR")?);
    let path = dir.join(format!("{kind}-{}.txt", std::process::id()));
    std::fs::OpenOptions::new().create(true).append(true).open(path).ok()
}

/// Notes a secret the tests use: the CI fails when any platform log holds one.
pub fn used_secret(secret: &str) {
    if let Some(mut file) = scan_file("secrets") {
        let _ = writeln!(file, "{secret}");
    }
}

/// Adds what a platform process logged outside this test process to the CI's log scan.
pub fn logged_elsewhere(text: &str) {
    if let Some(mut file) = scan_file("platform") {
        let _ = writeln!(file, "{text}");
    }
}

fn log_buffer() -> &'static LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer =
            LogBuffer(Arc::default(), scan_file("platform").map(|f| Arc::new(std::sync::Mutex::new(f))));
        used_secret(PASSWORD);
        used_secret(gateway::TOKEN);
        let filter = tracing_subscriber::EnvFilter::new("info,mcp_platform=trace,sqlx=debug,actix_web=debug");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(buffer.clone())
            .try_init();
        buffer
    })
}

/// The log lines captured so far, from every test of this run.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().0.lock().unwrap()).into_owned()
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, or `None` (test skipped) outside CI when it is not configured.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true but TEST_POSTGRES_URL is not set: the PostgreSQL tests must run in CI")
            }
            _ => {
                skipped("TEST_POSTGRES_URL is not set");
                None
            }
        }
    }
}

/// Says, in one line naming the test, that it was skipped and why.
pub fn skipped(why: &str) {
    eprintln!("skipped {}: {why}", std::thread::current().name().unwrap_or("a test"));
}

/// Generates one test per backend for each named `async fn(Backend)` in the calling module.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::helpers::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}

/// Removes the test's database when the test ends.
pub enum Cleanup {
    SqliteDir(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime: do the async work on a thread of its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async {
                        if let Ok(pool) = sqlx::PgPool::connect(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                            pool.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    /// The server's own pool, to take the database away from it.
    pub server_db: Db,
    /// Stops the server gracefully, as SIGTERM does; see `stop`.
    server: Option<RunningServer>,
    pub database_url: String,
    pub clock: Arc<OffsetClock>,
    pub data_dir: PathBuf,
    /// The server's secret key, for the CLI and for opening sealed tokens in tests.
    pub master: MasterKey,
    /// What the server was started with, to start it again (`restart`).
    config: Config,
    _cleanup: Cleanup,
}

/// One argon2 hash of `PASSWORD`, shared by every test user: hashing is the slow part.
async fn password_hash() -> &'static str {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async {
        let passwords = mcp_platform::auth::password::Passwords::new().unwrap();
        passwords.hash(SecretString::from(PASSWORD)).await.unwrap()
    })
    .await
}

pub struct TestUser {
    pub id: UserId,
    pub email: String,
    pub password: String,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Settings::default()).await
}

/// Starts the server with these settings on top of the test defaults.
pub async fn spawn_app_with(backend: Backend, mut settings: Settings) -> TestApp {
    log_buffer();
    let data_dir = std::env::temp_dir().join(format!("mcp-platform-test-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let (database_url, cleanup) = empty_database(backend, &data_dir).await;
    settings.database_url = Some(database_url.clone());
    settings.bind = Some("127.0.0.1:0".into());
    settings.data_dir = Some(data_dir.clone());
    settings.workers.get_or_insert_with(|| "1".into());
    // The test upstreams listen on loopback; the SSRF tests set their own policy.
    settings.allow_private_upstreams.get_or_insert_with(|| "127.0.0.0/8".into());
    let config = Config::from_settings(settings).unwrap();
    let clock = Arc::new(OffsetClock::default());
    let master = MasterKey::generate();
    used_secret(&master.encode());
    let (address, server_db, server) = start(&config, &master, &clock).await;
    let db = Db::connect(&config.database).await.unwrap();
    TestApp {
        address,
        db,
        server_db,
        server: Some(server),
        database_url,
        clock,
        data_dir,
        master,
        config,
        _cleanup: cleanup,
    }
}

/// Another instance of a test's platform (`TestApp::start_instance`).
pub struct Instance {
    pub address: String,
    server: Option<RunningServer>,
}

impl Instance {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Stops it gracefully and waits until it has finished.
    pub async fn stop(&mut self) {
        let (server, stopped) = self.server.take().expect("the instance is running");
        server.stop().await;
        stopped.await.unwrap().unwrap();
    }
}

type RunningServer = (mcp_platform::app::StopHandle, tokio::task::JoinHandle<std::io::Result<()>>);

async fn start(config: &Config, master: &MasterKey, clock: &Arc<OffsetClock>) -> (String, Db, RunningServer) {
    let app = Application::build(config.clone(), master, clock.clone()).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let server_db = app.db().clone();
    let handle = app.handle();
    let stopped = tokio::spawn(app.run_until_stopped());
    (address, server_db, (handle, stopped))
}

/// A new, empty database of the backend (a file in `data_dir` for SQLite), removed when the
/// returned guard is dropped.
pub async fn empty_database(backend: Backend, data_dir: &std::path::Path) -> (String, Cleanup) {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", data_dir.join("test.db").display());
            (url, Cleanup::SqliteDir(data_dir.to_owned()))
        }
        Backend::Postgres(admin_url) => {
            let name = format!("mcp_test_{}", Uuid::now_v7().simple());
            let pool = sqlx::PgPool::connect(&admin_url).await.expect("TEST_POSTGRES_URL must be reachable");
            let sql = format!("CREATE DATABASE \"{name}\"");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
            pool.close().await;
            let url = with_database(&admin_url, &name);
            (url, Cleanup::PostgresDatabase { admin_url, name })
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent("mcp-platform-tests/1.0")
        .build()
        .unwrap()
}

/// The CSRF token embedded in a page.
pub fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).unwrap_or_else(|| panic!("no CSRF token in page:\n{html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The value of the session cookie a response sets, if it sets one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let pair = v.split(';').next()?;
        let (name, value) = pair.split_once('=')?;
        (name.trim() == "mcp_session" && !value.is_empty()).then(|| value.to_owned())
    })
}

pub fn location(response: &reqwest::Response) -> Option<String> {
    response.headers().get("location").map(|v| v.to_str().unwrap().to_owned())
}

impl TestApp {
    /// Stops the server gracefully and waits until it has finished, request logs included.
    pub async fn stop(&mut self) {
        let (server, stopped) = self.server.take().expect("the server is running");
        server.stop().await;
        stopped.await.unwrap().unwrap();
    }

    /// Starts the server again on the same database, data directory and secret key, as the
    /// next start after a stop would (on a new port).
    pub async fn restart(&mut self) {
        if self.server.is_some() {
            self.stop().await;
        }
        let (address, server_db, server) = start(&self.config, &self.master, &self.clock).await;
        (self.address, self.server_db, self.server) = (address, server_db, Some(server));
    }

    /// Starts another instance on the same database and secret key, named `instance`, as a
    /// second machine behind a load balancer would run.
    pub async fn start_instance(&self, instance: &str) -> Instance {
        let config = Config { instance: instance.to_owned(), ..self.config.clone() };
        let (address, _, server) = start(&config, &self.master, &self.clock).await;
        Instance { address, server: Some(server) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client.get(self.url(path)).send().await.unwrap()
    }

    /// GETs `page` to obtain a CSRF token, then POSTs `fields` and the token to `path`.
    pub async fn post_form(
        &self,
        client: &reqwest::Client,
        page: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let html = self.get(client, page).await.text().await.unwrap();
        let token = csrf_token(&html);
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &token));
        client.post(self.url(path)).form(&form).send().await.unwrap()
    }

    pub async fn create_organization(&self, name: &str) -> OrgId {
        let id = OrgId::new();
        let name = OrganizationName::parse(name).unwrap();
        let mut conn = self.db.acquire().await.unwrap();
        db::organizations::insert(
            conn.conn(),
            id,
            name.as_str(),
            &format!("{}-{}", name.slug(), id.as_uuid().simple()),
            "owner@example.com",
            self.clock_now(),
        )
        .await
        .unwrap();
        db::organizations::claim_installation(conn.conn(), self.clock_now()).await.unwrap();
        id
    }

    pub async fn create_user(&self, organization_id: OrgId, role: Role) -> TestUser {
        let id = UserId::new();
        let email = format!("{}-{}@example.com", role.as_str(), id.as_uuid().simple());
        let hash = password_hash().await;
        let parsed = Email::parse(&email).unwrap();
        let user = db::users::NewUser { id, organization_id, email: &parsed, password_hash: hash, role };
        db::users::insert(self.db.acquire().await.unwrap().conn(), user, self.clock_now()).await.unwrap();
        TestUser { id, email, password: PASSWORD.to_owned() }
    }

    pub async fn login(&self, client: &reqwest::Client, email: &str, password: &str) -> reqwest::Response {
        self.post_form(client, "/login", "/login", &[("email", email), ("password", password)]).await
    }

    /// A new client signed in as `user`.
    pub async fn signed_in(&self, user: &TestUser) -> reqwest::Client {
        let client = client();
        let response = self.login(&client, &user.email, &user.password).await;
        assert_eq!(response.status(), 303, "sign-in of {} failed", user.email);
        assert_eq!(location(&response).as_deref(), Some("/"));
        client
    }

    /// Sets `user`'s own service token `name` on the dashboard's Service tokens page.
    pub async fn set_token(&self, user: &TestUser, name: &str, token: &str) {
        used_secret(token);
        let browser = self.signed_in(user).await;
        let saved =
            self.post_form(&browser, "/tokens", "/tokens", &[("service_name", name), ("token", token)]).await;
        assert_eq!(saved.status(), 200, "the token was not saved");
    }

    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use mcp_platform::clock::Clock;
        self.clock.now()
    }

    /// The key a create or roll form led to: its answer redirects to the page that shows the
    /// new key once.
    pub async fn shown_key(&self, browser: &reqwest::Client, response: reqwest::Response) -> String {
        assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
        assert_eq!(location(&response).as_deref(), Some("/keys/new"));
        let html = self.get(browser, "/keys/new").await.text().await.unwrap();
        let marker = "id=\"new-key\" class=\"secret\" value=\"";
        let start = html.find(marker).expect("the new key is shown") + marker.len();
        let key = html[start..start + html[start..].find('"').unwrap()].to_owned();
        used_secret(&key);
        key
    }

    /// Header values sealed for a service, as the dashboard stores them.
    pub async fn seal_headers(
        &self,
        service_id: ServiceId,
        headers: &[(&str, &str)],
    ) -> Vec<mcp_platform::db::services::SealedHeader> {
        let values = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let keyring = self.master.token_keyring();
        mcp_platform::crypto::headers::seal(&keyring, &self.db, self.clock_now(), service_id, &values)
            .await
            .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap(),
        }
    }

    /// Every audit row as (action, success, the whole row as text), oldest first.
    pub async fn audit_rows(&self) -> Vec<(String, bool, String)> {
        let sql = "SELECT action, success, COALESCE(actor_email, '') || ' ' || COALESCE(target_id, '') || ' ' || \
                   COALESCE(CAST(before_state AS TEXT), '') || ' ' || COALESCE(CAST(after_state AS TEXT), '') \
                   FROM audit_logs ORDER BY created_at, id";
        match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        }
    }
}
