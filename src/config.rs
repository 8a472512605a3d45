//! Typed configuration, read from the environment and flags and validated once at start.
//! Every error names the setting it is about, in one line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::Args;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::gateway::stdio::StdioLimits;

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";
const SECRET_KEY_FILE_NAME: &str = "secret.key";
const SECRET_KEY_BYTES: usize = 64;

/// Raw settings as they arrive; `Config::from_settings` turns them into a checked `Config`.
#[derive(Debug, Clone, Default, Args)]
pub struct Settings {
    /// Database: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite under the data dir]
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Address to serve on [default: 127.0.0.1:8080]
    #[arg(long, env = "MCP_PLATFORM_BIND", global = true)]
    pub bind: Option<String>,
    /// Directory for the SQLite database and the generated secret key [default: ./data]
    #[arg(long, env = "MCP_PLATFORM_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// File holding the secret key (base64, 64 bytes) [default: DATA_DIR/secret.key, created if missing]
    #[arg(long, env = "MCP_PLATFORM_SECRET_KEY_FILE", global = true)]
    pub secret_key_file: Option<PathBuf>,
    /// The secret key itself, base64 (environment only, so it never shows in a process list)
    #[arg(skip)]
    pub secret_key: Option<SecretString>,
    /// The address users reach the platform at, e.g. https://mcp.example.com
    #[arg(long, env = "MCP_PLATFORM_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Mark the session cookie Secure (true/false) [default: false only on a loopback address over http]
    #[arg(long, env = "MCP_PLATFORM_COOKIE_SECURE", global = true)]
    pub cookie_secure: Option<String>,
    /// HTTP worker threads [default: one less than the number of cores, at least 1]
    #[arg(long, env = "MCP_PLATFORM_WORKERS", global = true)]
    pub workers: Option<String>,
    /// Sign-in attempts allowed per client IP per minute [default: 30]
    #[arg(long, env = "MCP_PLATFORM_LOGIN_IP_LIMIT", global = true)]
    pub login_ip_limit: Option<String>,
    /// TOML file defining the system services offered to every organization (see README)
    #[arg(long, env = "MCP_PLATFORM_SERVICES_FILE", global = true)]
    pub services_file: Option<PathBuf>,
    /// Take the client IP from X-Forwarded-For (only behind a proxy you run) [default: false]
    #[arg(long, env = "MCP_PLATFORM_TRUST_PROXY", global = true)]
    pub trust_proxy: Option<String>,
    /// Most stdio sessions (child processes) one user may have open [default: 3]
    #[arg(long, env = "MCP_PLATFORM_STDIO_MAX_PER_USER", global = true)]
    pub stdio_max_per_user: Option<String>,
    /// Most stdio sessions this instance runs at once [default: 50]
    #[arg(long, env = "MCP_PLATFORM_STDIO_MAX_TOTAL", global = true)]
    pub stdio_max_total: Option<String>,
    /// Private networks tenant-defined upstreams may reach, e.g. 10.0.0.0/8,127.0.0.1 [default: none]
    #[arg(long, env = "MCP_PLATFORM_ALLOW_PRIVATE_UPSTREAMS", global = true)]
    pub allow_private_upstreams: Option<String>,
    /// Browser origins besides the public URL's that may use the gateway, comma-separated, e.g. http://localhost:6274
    #[arg(long, env = "MCP_PLATFORM_ALLOWED_ORIGINS", global = true)]
    pub allowed_origins: Option<String>,
    /// Request-log rows that may wait for the database; past it the gateway answers 503 [default: 10000]
    #[arg(long, env = "MCP_PLATFORM_LOG_QUEUE", global = true)]
    pub log_queue: Option<String>,
    /// Seconds a stop waits for requests in flight, then for queued request logs, before it
    /// spills them to the data directory for the next start [default: 30]
    #[arg(long, env = "MCP_PLATFORM_STOP_TIMEOUT_SECONDS", global = true)]
    pub stop_timeout_seconds: Option<String>,
    /// Seconds an unused stdio session lives before its process is ended [default: 600]
    #[arg(long, env = "MCP_PLATFORM_STDIO_IDLE_SECONDS", global = true)]
    pub stdio_idle_seconds: Option<String>,
    /// This instance's name, which begins its gateway session ids (a load balancer routes on
    /// it) and is in its log lines: letters, digits and '-', at most 32 [default: the host name]
    #[arg(long, env = "MCP_PLATFORM_INSTANCE", global = true)]
    pub instance: Option<String>,
    /// Seconds a stop keeps serving with /readyz answering 503, so that a balancer that polls it
    /// moves away first [default: 0]
    #[arg(long, env = "MCP_PLATFORM_DRAIN_SECONDS", global = true)]
    pub drain_seconds: Option<String>,
    /// A bearer token /metrics requires (environment only, so it never shows in a process list)
    #[arg(skip)]
    pub metrics_token: Option<SecretString>,
    /// How the platform's own log is written on standard error: text or json [default: text]
    #[arg(long, env = "MCP_PLATFORM_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn bad(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { setting, message: message.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL whose scheme has been checked. The URL may hold a password, so it is
/// kept secret and never printed.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    pub backend: Backend,
    url: SecretString,
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<DatabaseUrl, ConfigError> {
        let scheme = raw.split_once(':').map(|(s, _)| s).unwrap_or("");
        let backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            "" => {
                return Err(bad("DATABASE_URL", "has no scheme (expected sqlite:// or postgres://)"));
            }
            other => {
                let shown: String = other.chars().take(20).collect();
                return Err(bad(
                    "DATABASE_URL",
                    format!("unsupported scheme \"{shown}\" (expected sqlite:// or postgres://)"),
                ));
            }
        };
        Ok(DatabaseUrl { backend, url: SecretString::from(raw.to_owned()) })
    }

    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }
}

/// Where the secret key comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Inline(SecretString),
    /// A file; `explicit` is false for the default path, which is created when missing.
    File {
        path: PathBuf,
        explicit: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseUrl,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub secret: SecretSource,
    pub public_url: Option<String>,
    pub cookie_secure: bool,
    pub workers: usize,
    pub login_ip_limit: u32,
    pub trust_proxy: bool,
    pub stdio: StdioLimits,
    pub log_queue: usize,
    pub allowed_origins: Vec<String>,
    pub upstream_policy: crate::catalog::egress::UpstreamPolicy,
    pub stop_timeout: Duration,
    /// The operator's system services, read and checked at start.
    pub system_services: Vec<crate::catalog::system::SystemService>,
    /// The plans organizations can be on: built in, and from the operator's file.
    pub plans: crate::catalog::plans::Plans,
    /// This instance's name among the instances sharing the database.
    pub instance: String,
    pub log_format: crate::telemetry::logging::LogFormat,
    /// How long a stop keeps serving with `/readyz` at 503.
    pub drain: Duration,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<SecretString>,
}

impl Config {
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(bad("MCP_PLATFORM_DATA_DIR", "is empty"));
        }
        let database = match s.database_url.as_deref().map(str::trim) {
            None | Some("") => DatabaseUrl::parse(&default_sqlite_url(&data_dir))?,
            Some(raw) => DatabaseUrl::parse(raw)?,
        };
        let bind_raw = s.bind.as_deref().unwrap_or(DEFAULT_BIND);
        let bind = SocketAddr::from_str(bind_raw.trim()).map_err(|_| {
            bad("MCP_PLATFORM_BIND", format!("\"{bind_raw}\" is not an address like 127.0.0.1:8080"))
        })?;
        let public_url =
            s.public_url.as_deref().map(|raw| parse_origin("MCP_PLATFORM_PUBLIC_URL", raw)).transpose()?;
        // Links and the origin check must not come from what a client sends.
        if public_url.is_none() && !bind.ip().is_loopback() {
            return Err(bad(
                "MCP_PLATFORM_PUBLIC_URL",
                format!(
                    "is required when MCP_PLATFORM_BIND is not a loopback address ({bind}): \
                     set the address users reach, e.g. https://mcp.example.com"
                ),
            ));
        }
        let cookie_secure = match s.cookie_secure.as_deref() {
            Some(raw) => parse_bool("MCP_PLATFORM_COOKIE_SECURE", raw)?,
            None => match &public_url {
                Some(url) => url.starts_with("https://"),
                None => !bind.ip().is_loopback(),
            },
        };
        let workers = match s.workers.as_deref() {
            Some(raw) => parse_positive("MCP_PLATFORM_WORKERS", raw, 256)? as usize,
            // One core is left to the request-log writer, the database and stdio services.
            None => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
        };
        let login_ip_limit = match s.login_ip_limit.as_deref() {
            Some(raw) => parse_positive("MCP_PLATFORM_LOGIN_IP_LIMIT", raw, 100_000)?,
            None => 30,
        };
        let trust_proxy = match s.trust_proxy.as_deref() {
            Some(raw) => parse_bool("MCP_PLATFORM_TRUST_PROXY", raw)?,
            None => false,
        };
        let defaults = StdioLimits::default();
        let limit = |setting, raw: &Option<String>, default: usize, max| match raw.as_deref() {
            Some(raw) => parse_positive(setting, raw, max).map(|n| n as usize),
            None => Ok(default),
        };
        let stdio = StdioLimits {
            per_user: limit(
                "MCP_PLATFORM_STDIO_MAX_PER_USER",
                &s.stdio_max_per_user,
                defaults.per_user,
                1000,
            )?,
            total: limit("MCP_PLATFORM_STDIO_MAX_TOTAL", &s.stdio_max_total, defaults.total, 10_000)?,
            idle: match s.stdio_idle_seconds.as_deref() {
                Some(raw) => Duration::from_secs(
                    parse_positive("MCP_PLATFORM_STDIO_IDLE_SECONDS", raw, 86_400)?.into(),
                ),
                None => defaults.idle,
            },
        };
        let log_queue = match s.log_queue.as_deref() {
            Some(raw) => parse_positive("MCP_PLATFORM_LOG_QUEUE", raw, 10_000_000)? as usize,
            None => 10_000,
        };
        let stop_timeout = Duration::from_secs(match s.stop_timeout_seconds.as_deref() {
            Some(raw) => parse_positive("MCP_PLATFORM_STOP_TIMEOUT_SECONDS", raw, 3600)?.into(),
            None => 30,
        });
        let allowed_origins = s
            .allowed_origins
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| parse_origin("MCP_PLATFORM_ALLOWED_ORIGINS", o))
            .collect::<Result<Vec<_>, _>>()?;
        let upstream_policy =
            crate::catalog::egress::UpstreamPolicy::parse(s.allow_private_upstreams.as_deref().unwrap_or(""))
                .map_err(|e| bad("MCP_PLATFORM_ALLOW_PRIVATE_UPSTREAMS", e))?;
        let operator_file = match &s.services_file {
            Some(path) => {
                crate::catalog::system::load(path).map_err(|e| bad("MCP_PLATFORM_SERVICES_FILE", e))?
            }
            None => crate::catalog::system::OperatorFile::default(),
        };
        let instance = match s.instance.as_deref().map(str::trim) {
            Some(raw) => parse_instance(raw).ok_or_else(|| {
                bad(
                    "MCP_PLATFORM_INSTANCE",
                    format!(
                        "\"{}\" is not a name of letters, digits and '-' (at most 32)",
                        raw.chars().take(40).collect::<String>()
                    ),
                )
            })?,
            None => default_instance(),
        };
        let drain = Duration::from_secs(match s.drain_seconds.as_deref() {
            Some(raw) => parse_count("MCP_PLATFORM_DRAIN_SECONDS", raw, 300)?.into(),
            None => 0,
        });
        let log_format = match s.log_format.as_deref() {
            Some(raw) => crate::telemetry::logging::LogFormat::parse(raw)
                .ok_or_else(|| bad("MCP_PLATFORM_LOG_FORMAT", "is text or json"))?,
            None => crate::telemetry::logging::LogFormat::Text,
        };
        let secret = match (s.secret_key, s.secret_key_file) {
            (Some(key), _) => SecretSource::Inline(key),
            (None, Some(path)) => SecretSource::File { path, explicit: true },
            (None, None) => SecretSource::File { path: data_dir.join(SECRET_KEY_FILE_NAME), explicit: false },
        };
        Ok(Config {
            database,
            bind,
            data_dir,
            secret,
            public_url,
            cookie_secure,
            workers,
            login_ip_limit,
            trust_proxy,
            stdio,
            log_queue,
            allowed_origins,
            upstream_policy,
            stop_timeout,
            system_services: operator_file.services,
            plans: operator_file.plans,
            instance,
            log_format,
            drain,
            metrics_token: s.metrics_token.filter(|token| !token.expose_secret().trim().is_empty()),
        })
    }

    /// The URL to print at start.
    pub fn display_url(&self, port: u16) -> String {
        format!("{}/", self.origin(port))
    }

    /// The origin users reach: the public URL, or (on a loopback bind only) the bind address
    /// with the port actually bound.
    pub fn origin(&self, port: u16) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", SocketAddr::new(self.bind.ip(), port)),
        }
    }

    pub fn serves_tls(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
    }
}

fn default_sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("mcp-platform.db").display())
}

/// An origin (`http` or `https`, a host, perhaps a port, nothing else), as browsers write it in
/// `Origin`: lower-case, without a default port or a trailing slash.
fn parse_origin(setting: &'static str, raw: &str) -> Result<String, ConfigError> {
    let not_an_origin = || bad(setting, format!("\"{raw}\" is not an origin like https://mcp.example.com"));
    let url = url::Url::parse(raw.trim()).map_err(|_| not_an_origin())?;
    let bare = url.username().is_empty()
        && url.password().is_none()
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
        return Err(not_an_origin());
    }
    Ok(url.origin().ascii_serialization())
}

/// An instance name as given, when it is one.
fn parse_instance(raw: &str) -> Option<String> {
    let fits = !raw.is_empty() && raw.len() <= 32;
    (fits && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then(|| raw.to_owned())
}

/// The host name, as far as it makes an instance name (else "mcp").
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    if name.is_empty() { "mcp".to_owned() } else { name }
}

fn parse_bool(setting: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(setting, format!("\"{raw}\" is not true or false"))),
    }
}

fn parse_count(setting: &'static str, raw: &str, max: u32) -> Result<u32, ConfigError> {
    match raw.trim().parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad(setting, format!("\"{raw}\" is not a whole number from 0 to {max}"))),
    }
}

fn parse_positive(setting: &'static str, raw: &str, max: u32) -> Result<u32, ConfigError> {
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(setting, format!("\"{raw}\" is not a whole number from 1 to {max}"))),
    }
}

/// The platform's master secret; every other key is derived from it.
pub struct MasterKey(SecretBox<[u8; SECRET_KEY_BYTES]>);

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut bytes = [0u8; SECRET_KEY_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        MasterKey(SecretBox::new(Box::new(bytes)))
    }

    fn decode(setting: &'static str, text: &str) -> Result<MasterKey, ConfigError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| bad(setting, "is not valid base64"))?;
        let bytes: [u8; SECRET_KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| bad(setting, format!("must decode to exactly {SECRET_KEY_BYTES} bytes")))?;
        Ok(MasterKey(SecretBox::new(Box::new(bytes))))
    }

    pub fn encode(&self) -> String {
        STANDARD.encode(self.0.expose_secret())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// A key for one purpose (HKDF-SHA256), so no derived key can stand in for another.
    pub fn derive<const N: usize>(&self, purpose: &[u8]) -> [u8; N] {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"mcp-platform"), self.0.expose_secret());
        let mut out = [0u8; N];
        hkdf.expand(purpose, &mut out).expect("derived keys are short enough for HKDF");
        out
    }

    /// The keyring that seals service tokens.
    pub fn token_keyring(&self) -> crate::crypto::keyring::Keyring {
        crate::crypto::keyring::Keyring::new(&self.derive::<32>(b"token-kek-v1"))
    }
}

/// Reads the secret key, creating the default key file (mode 0600) on first start when
/// `create_missing` is set. Returns the key and, when a file was created, its path so the
/// caller can say so.
pub fn load_secret(
    source: &SecretSource,
    create_missing: bool,
) -> Result<(MasterKey, Option<PathBuf>), ConfigError> {
    match source {
        SecretSource::Inline(key) => {
            Ok((MasterKey::decode("MCP_PLATFORM_SECRET_KEY", key.expose_secret())?, None))
        }
        SecretSource::File { path, explicit } => {
            const SETTING: &str = "MCP_PLATFORM_SECRET_KEY_FILE";
            match std::fs::read_to_string(path) {
                Ok(text) => Ok((MasterKey::decode(SETTING, &text)?, None)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit && create_missing => {
                    let key = MasterKey::generate();
                    write_private_file(path, &key.encode())
                        .map_err(|e| bad(SETTING, format!("cannot create {}: {e}", path.display())))?;
                    Ok((key, Some(path.clone())))
                }
                Err(e) => Err(bad(SETTING, format!("cannot read {}: {e}", path.display()))),
            }
        }
    }
}

/// Opens a file in the data directory that only the platform's user may read, creating it (and
/// its directory) with mode 0600: a new file only, or one appended to.
pub(crate) fn open_private_file(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    if append {
        options.create(true).append(true);
    } else {
        options.write(true).create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = open_private_file(path, false)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_scheme_is_checked() {
        assert_eq!(DatabaseUrl::parse("sqlite://x.db").unwrap().backend, Backend::Sqlite);
        assert_eq!(DatabaseUrl::parse("postgres://u@h/d").unwrap().backend, Backend::Postgres);
        let err = DatabaseUrl::parse("mysql://root:hunter2@db/x").unwrap_err();
        let line = err.to_string();
        assert!(line.starts_with("DATABASE_URL: unsupported scheme \"mysql\""), "{line}");
        assert!(!line.contains("hunter2"), "the URL's password must not be echoed");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::from_settings(Settings { bind: Some("nowhere".into()), ..Default::default() })
            .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_BIND");
        let err =
            Config::from_settings(Settings { cookie_secure: Some("maybe".into()), ..Default::default() })
                .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_COOKIE_SECURE");
        let err = Config::from_settings(Settings { stdio_max_total: Some("0".into()), ..Default::default() })
            .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_STDIO_MAX_TOTAL");
        let err =
            Config::from_settings(Settings { stdio_idle_seconds: Some("ten".into()), ..Default::default() })
                .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_STDIO_IDLE_SECONDS");
        let err = Config::from_settings(Settings {
            allow_private_upstreams: Some("10.0.0.0/8, intranet".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_ALLOW_PRIVATE_UPSTREAMS");
        assert!(err.message.contains("\"intranet\""), "{}", err.message);
        for instance in ["", "a.b", "two words", &"x".repeat(33)] {
            let err =
                Config::from_settings(Settings { instance: Some(instance.into()), ..Default::default() })
                    .unwrap_err();
            assert_eq!(err.setting, "MCP_PLATFORM_INSTANCE", "{instance:?}");
        }
        let config =
            Config::from_settings(Settings { instance: Some("eu-2".into()), ..Default::default() }).unwrap();
        assert_eq!(config.instance, "eu-2");
        let err = Config::from_settings(Settings { log_format: Some("yaml".into()), ..Default::default() })
            .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_LOG_FORMAT");
        let err = Config::from_settings(Settings { drain_seconds: Some("301".into()), ..Default::default() })
            .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_DRAIN_SECONDS");
        let name = Config::from_settings(Settings::default()).unwrap().instance;
        assert!(parse_instance(&name).is_some(), "the default {name:?} is a name");
    }

    #[test]
    fn origins_are_written_as_browsers_write_them() {
        let origin = |raw| parse_origin("MCP_PLATFORM_PUBLIC_URL", raw);
        assert_eq!(origin("https://MCP.Example.com:443/").unwrap(), "https://mcp.example.com");
        assert_eq!(origin(" http://localhost:6274 ").unwrap(), "http://localhost:6274");
        assert_eq!(origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in
            ["https://mcp.example.com/app", "ftp://x", "https://ada@x", "https://x/?q", "mcp.example.com", ""]
        {
            assert_eq!(origin(bad).unwrap_err().setting, "MCP_PLATFORM_PUBLIC_URL", "{bad}");
        }
    }

    #[test]
    fn a_public_bind_needs_a_public_url() {
        let err = Config::from_settings(Settings { bind: Some("0.0.0.0:8080".into()), ..Default::default() })
            .unwrap_err();
        assert_eq!(err.setting, "MCP_PLATFORM_PUBLIC_URL");
        assert!(err.message.contains("0.0.0.0:8080"), "{}", err.message);
        let local = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(local.origin(8080), "http://127.0.0.1:8080");
        let public = Config::from_settings(Settings {
            bind: Some("0.0.0.0:8080".into()),
            public_url: Some("https://mcp.example.com/".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(public.origin(8080), "https://mcp.example.com");
    }

    #[test]
    fn stdio_limits_have_defaults_and_can_be_set() {
        let limits = Config::from_settings(Settings::default()).unwrap().stdio;
        assert_eq!(limits, StdioLimits::default());
        assert_eq!(limits.idle, Duration::from_secs(600));
        let set = Config::from_settings(Settings {
            stdio_max_per_user: Some("1".into()),
            stdio_max_total: Some("7".into()),
            stdio_idle_seconds: Some("30".into()),
            ..Default::default()
        })
        .unwrap()
        .stdio;
        assert_eq!(set, StdioLimits { per_user: 1, total: 7, idle: Duration::from_secs(30) });
    }

    #[test]
    fn cookies_are_secure_except_on_loopback_http() {
        let local = Config::from_settings(Settings::default()).unwrap();
        assert!(!local.cookie_secure);
        let public = Config::from_settings(Settings {
            bind: Some("0.0.0.0:8080".into()),
            public_url: Some("http://10.1.2.3:8080".into()),
            cookie_secure: Some("true".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(public.cookie_secure);
        let tls = Config::from_settings(Settings {
            public_url: Some("https://mcp.example.com/".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(tls.cookie_secure && tls.serves_tls());
    }

    #[test]
    fn default_secret_file_is_created_private() {
        let dir = std::env::temp_dir().join(format!("mcp-secret-{}", uuid::Uuid::now_v7()));
        let source = SecretSource::File { path: dir.join("secret.key"), explicit: false };
        let (key, created) = load_secret(&source, true).unwrap();
        assert!(created.is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = load_secret(&source, true).unwrap();
        assert!(created.is_none());
        assert_eq!(key.expose(), again.expose());
        let explicit = SecretSource::File { path: dir.join("missing.key"), explicit: true };
        assert_eq!(load_secret(&explicit, true).err().unwrap().setting, "MCP_PLATFORM_SECRET_KEY_FILE");
        let not_created = SecretSource::File { path: dir.join("other.key"), explicit: false };
        assert!(load_secret(&not_created, false).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
