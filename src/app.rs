//! Builds the running application: pool, migrations, keys, background upkeep and the server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_htmx::HtmxMiddleware;
use actix_session::SessionMiddleware;
use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::auth::csrf::CsrfKey;
use crate::auth::device::DeviceKey;
use crate::auth::password::Passwords;
use crate::auth::session_store::DbSessionStore;
use crate::auth::throttle::IpLimiter;
use crate::clock::SharedClock;
use crate::config::{Config, MasterKey};
use crate::crypto::flash::FlashKey;
use crate::crypto::keyring::Keyring;
use crate::db::{self, Db};
use crate::error::AppError;
use crate::gateway::cache::Change;
use crate::gateway::sessions::Gateway;
use crate::routes;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::writer::{RequestLogWriter, WriterConfig, WriterHandle};

/// What handlers share.
pub struct AppState {
    pub db: Db,
    pub clock: SharedClock,
    pub passwords: Passwords,
    pub csrf: CsrfKey,
    pub devices: DeviceKey,
    pub flash: FlashKey,
    pub keyring: Keyring,
    pub gateway: Arc<Gateway>,
    pub log_writer: RequestLogWriter,
    pub login_ip_limiter: IpLimiter,
    pub metrics: Metrics,
    pub settings: WebSettings,
    /// The plans organizations can be on.
    pub plans: crate::catalog::plans::Plans,
    /// Daily quotas and per-key rate limits at the gateway.
    pub limits: crate::gateway::limits::Limits,
}

pub struct WebSettings {
    /// Mark cookies the platform sets itself Secure.
    pub cookie_secure: bool,
    /// The origin links and the origin check use: the public URL, else the address this
    /// instance listens on.
    pub origin: String,
    /// Whether the configured public URL decides the origin (else the bind address does).
    pub has_public_url: bool,
    /// Take the client's address, and without a public URL the origin, from the proxy's
    /// forwarded headers.
    pub trust_proxy: bool,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<secrecy::SecretString>,
    /// Origins besides the platform's own that may use the gateway from a browser.
    pub allowed_origins: Vec<String>,
}

impl WebSettings {
    /// The origin users reach the platform at, for links: the public URL; without one, the
    /// forwarded host behind a trusted proxy, else the address this instance listens on. Never
    /// a header an untrusted client chose.
    pub fn public_base(&self, req: &actix_web::HttpRequest) -> String {
        if self.trust_proxy && !self.has_public_url {
            let info = req.connection_info();
            return format!("{}://{}", info.scheme(), info.host());
        }
        self.origin.clone()
    }
}

pub struct Application {
    port: u16,
    server: Server,
    db: Db,
    gateway: Arc<Gateway>,
    log_writer: WriterHandle,
    /// How long a stop waits for requests in flight, and then for the request logs.
    stop_timeout: Duration,
    drain: Duration,
}

/// Stops a running application gracefully: open server-to-client streams end, requests in
/// flight finish, then the stdio children end and the request logs are written.
#[derive(Clone)]
pub struct StopHandle {
    server: actix_web::dev::ServerHandle,
    gateway: Arc<Gateway>,
    drain: Duration,
}

impl StopHandle {
    /// `/readyz` answers 503 and open streams end at once; requests are still served for the
    /// drain time (a balancer that polls `/readyz` moves away meanwhile); then no new connection
    /// is accepted and the requests in flight finish, within the stop timeout.
    pub async fn stop(&self) {
        self.gateway.begin_stop();
        tokio::time::sleep(self.drain).await;
        self.server.stop(true).await;
    }
}

impl AppState {
    /// Says that something the gateway may keep a copy of was changed here: this instance's
    /// copies go at once, and every other instance's as soon as it hears of it.
    pub async fn changed(&self, change: Change) {
        self.gateway.forget_changed(&change);
        crate::gateway::changes::announce(&self.db, &change).await;
    }
}

/// Largest dashboard form accepted; the CSRF check reads bodies up to the same size.
pub const FORM_LIMIT: usize = 256 * 1024;

const SESSION_COOKIE: &str = "mcp_session";
/// The `__Host-` prefix makes browsers insist on Secure, Path=/ and no Domain.
const SECURE_SESSION_COOKIE: &str = "__Host-mcp_session";

impl Application {
    pub async fn build(
        config: Config,
        master: &MasterKey,
        clock: SharedClock,
    ) -> anyhow::Result<Application> {
        let db = Db::connect(&config.database).await?;
        db.migrate().await?;
        db.ensure_log_partitions(clock.now()).await?;
        let keyring = master.token_keyring();
        record_system_services(&db, &keyring, &config.system_services, clock.now())
            .await
            .context("cannot record the system services")?;
        crate::crypto::headers::seal_plain(&keyring, &db, clock.now())
            .await
            .context("cannot seal the header values stored in plain text")?;
        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("MCP_PLATFORM_BIND: cannot listen on {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::default();
        let writer_config = WriterConfig {
            capacity: config.log_queue,
            spill_dir: config.data_dir.clone(),
            ..WriterConfig::default()
        };
        let (log_writer, log_writer_handle) =
            RequestLogWriter::start(db.clone(), clock.clone(), writer_config, metrics.clone());
        let gateway = Arc::new(Gateway::new(
            config.stdio,
            config.upstream_policy.clone(),
            clock.clone(),
            &config.instance,
        ));
        let state = web::Data::new(AppState {
            db: db.clone(),
            clock: clock.clone(),
            passwords: Passwords::new()?,
            csrf: CsrfKey::new(master.derive(b"csrf-v1")),
            devices: DeviceKey::new(master.derive(b"device-cookie-v1")),
            flash: FlashKey::new(&master.derive(b"flash-v1")),
            keyring,
            gateway: gateway.clone(),
            log_writer,
            login_ip_limiter: IpLimiter::per_minute(config.login_ip_limit, clock.clone()),
            metrics,
            plans: config.plans.clone(),
            limits: crate::gateway::limits::Limits::new(clock.clone()),
            settings: WebSettings {
                cookie_secure: config.cookie_secure,
                origin: config.origin(port),
                has_public_url: config.public_url.is_some(),
                trust_proxy: config.trust_proxy,
                allowed_origins: config.allowed_origins.clone(),
                metrics_token: config.metrics_token.clone(),
            },
        });
        spawn_upkeep(state.clone().into_inner());
        crate::gateway::changes::listen(&db, gateway.clone());

        let store = DbSessionStore::new(db.clone(), clock);
        let cookie_key = Key::from(&master.derive::<64>(b"session-cookie-v1"));
        let secure = config.cookie_secure;
        let hsts = config.serves_tls();
        let server = HttpServer::new(move || {
            let session = SessionMiddleware::builder(store.clone(), cookie_key.clone())
                .cookie_name(if secure { SECURE_SESSION_COOKIE } else { SESSION_COOKIE }.to_owned())
                .cookie_secure(secure)
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_content_security(CookieContentSecurity::Private)
                .session_lifecycle(BrowserSession::default())
                .build();
            App::new()
                .app_data(state.clone())
                // Forms such as a pasted CSV of invitations outgrow actix's 16 KiB default.
                .app_data(web::FormConfig::default().limit(FORM_LIMIT))
                // The gateway answers API keys, not dashboard sessions: outside the session
                // middleware and the route table's gate.
                .configure(crate::gateway::endpoint::configure)
                // The JSON API answers API keys too, in its own envelope.
                .configure(crate::api::configure)
                // Assets, health and metrics need no session: none is loaded for them.
                .configure(routes::configure_open)
                .service(
                    web::scope("")
                        .configure(routes::configure)
                        .default_service(web::to(|| async {
                            Err::<actix_web::HttpResponse, _>(AppError::NotFound)
                        }))
                        .wrap(HtmxMiddleware)
                        .wrap(session),
                )
                .wrap(security_headers(hsts))
                .wrap(from_fn(crate::telemetry::logging::observe))
        })
        // Streamed answers are written in small pieces: send them at once, not after Nagle's delay.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(config.workers)
        .shutdown_timeout(config.stop_timeout.as_secs().max(1))
        // SIGINT and SIGTERM are handled in `run_until_stopped`, to end streams first.
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            db,
            gateway,
            log_writer: log_writer_handle,
            stop_timeout: config.stop_timeout,
            drain: config.drain,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stops the server from outside (SIGINT and SIGTERM do the same).
    pub fn handle(&self) -> StopHandle {
        StopHandle { server: self.server.handle(), gateway: self.gateway.clone(), drain: self.drain }
    }

    /// Serves until SIGINT or SIGTERM (or `StopHandle::stop`), then finishes the requests in
    /// flight, ends the stdio children, writes every queued request-log row and closes the pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stop = self.handle();
        let signals = tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stopping: finishing the requests in flight");
            stop.stop().await;
        });
        let result = self.server.await;
        signals.abort();
        self.gateway.stdio.shutdown().await;
        match self.log_writer.shutdown(self.stop_timeout).await {
            Ok(done) => tracing::info!(
                written = done.written,
                rejected = done.rejected,
                spilled = done.spilled,
                "request logs flushed"
            ),
            Err(e) => tracing::error!(error = ?e, "request logs could not all be written"),
        }
        // A connection stuck in the database (a lock that is never released) must not keep the
        // process from ending: whatever is still open after this is dropped with the process.
        if tokio::time::timeout(POOL_CLOSE_WAIT, self.db.close()).await.is_err() {
            tracing::warn!("database connections still busy at the stop; leaving them");
        }
        result
    }
}

/// How long a stop waits for the database pool to close, after the request logs are done.
const POOL_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Records the operator's system services, their header values sealed for their rows.
pub async fn record_system_services(
    db: &Db,
    keyring: &Keyring,
    services: &[crate::catalog::system::SystemService],
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    use crate::catalog::system::SystemUpstream;
    let known: std::collections::HashMap<String, crate::ids::ServiceId> =
        db::services::system_ids(db.acquire().await?.conn()).await?.into_iter().collect();
    let mut rows = Vec::with_capacity(services.len());
    for service in services {
        let id = known.get(service.name.as_str()).copied().unwrap_or_default();
        let headers = match &service.transport {
            SystemUpstream::Http { headers, .. } => {
                crate::crypto::headers::seal(keyring, db, now, id, headers).await?
            }
            SystemUpstream::Stdio { .. } => Vec::new(),
        };
        rows.push(db::services::SystemRow { id, service, headers });
    }
    db::services::sync_system(db.acquire().await?.conn(), &rows, now).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn security_headers(hsts: bool) -> DefaultHeaders {
    let headers = DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; \
             base-uri 'self'; form-action 'self'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "strict-origin-when-cross-origin"))
        .add(("X-Frame-Options", "DENY"))
        // Pages are per user; assets set their own caching.
        .add(("Cache-Control", "no-store"));
    if hsts {
        headers.add(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
    } else {
        headers
    }
}

/// How often the upkeep runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(300);

/// Trims this instance's own tables (the per-IP limiter, idle gateway sessions) and, on one
/// instance per period across those sharing the database, deletes expired sessions and old
/// sign-in failures, makes the coming log partitions and enforces retention. First one period
/// after the start (which made this month's partitions itself), so that it never races what is
/// done at the start: an operator's (or a test's) own retention run.
fn spawn_upkeep(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + UPKEEP_EVERY, UPKEEP_EVERY);
        loop {
            tick.tick().await;
            state.login_ip_limiter.forget_idle();
            state.gateway.forget_idle_sessions();
            if let Err(e) = upkeep(&state).await {
                tracing::warn!(error = ?e, "upkeep failed");
            }
        }
    });
}

async fn upkeep(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    // A little less than a period: the instances' timers drift apart.
    let Some(claim) = db::upkeep::claim(&state.db, now, UPKEEP_EVERY - Duration::from_secs(10)).await? else {
        return Ok(());
    };
    let run = async {
        let mut conn = state.db.acquire().await?;
        db::sessions::delete_expired(conn.conn(), now).await?;
        db::login_failures::delete_before(conn.conn(), now - chrono::Duration::hours(1)).await?;
        state.db.ensure_log_partitions(now).await?;
        drop(conn);
        let removed =
            crate::telemetry::retention::enforce(&state.db, now, crate::telemetry::retention::BATCH).await?;
        if removed != Default::default() {
            tracing::info!(logs = removed.logs, rollups = removed.rollups, audit = removed.audit,
                partitions = ?removed.partitions, "removed what retention has passed");
        }
        anyhow::Ok(())
    }
    .await;
    claim.done().await?;
    run
}
