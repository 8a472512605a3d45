//! The platform's own log: `tracing` lines on standard error, human-readable or one JSON object
//! a line (`MCP_PLATFORM_LOG_FORMAT`), every line with the instance's name. Each request gets a
//! correlation id when it arrives: every line logged while it is answered, its access line
//! included, carries it, and so do its `X-Correlation-Id` header and, for a gateway call, its
//! request-log row. Paths are logged without the tokens of links and redacted like bodies.

use std::borrow::Cow;
use std::io::Write;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::app::AppState;
use crate::gateway::refusal::CORRELATION_HEADER;
use crate::ids::LogId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(raw: &str) -> Option<LogFormat> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Logs to standard error from now on, in `format`, each line with `instance`'s name; `RUST_LOG`
/// chooses what is logged (default: `info`, and only warnings of `sqlx`).
pub fn init(format: LogFormat, instance: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let writer = Stamped::new(instance, format);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        // The event's fields at the top level, the request's span (its correlation id) under
        // "span".
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init()
        }
    }
}

/// Standard error, each line stamped with the instance: a first member of a JSON line, the first
/// word of a text line. (The formatter writes each line whole, in one call.)
#[derive(Clone)]
struct Stamped {
    stamp: Vec<u8>,
    json: bool,
}

impl Stamped {
    fn new(instance: &str, format: LogFormat) -> Stamped {
        let json = format == LogFormat::Json;
        let stamp = match json {
            true => format!("{{\"instance\":{},", serde_json::Value::from(instance)),
            false => format!("{instance} "),
        };
        Stamped { stamp: stamp.into_bytes(), json }
    }
}

impl<'a> MakeWriter<'a> for Stamped {
    type Writer = StampedLine<'a>;

    fn make_writer(&'a self) -> StampedLine<'a> {
        StampedLine(self)
    }
}

struct StampedLine<'a>(&'a Stamped);

impl Write for StampedLine<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stderr().lock();
        match (self.0.json, line.split_first()) {
            (true, Some((b'{', rest))) => {
                out.write_all(&self.0.stamp)?;
                out.write_all(rest)?;
            }
            (true, _) => out.write_all(line)?,
            (false, _) => {
                out.write_all(&self.0.stamp)?;
                out.write_all(line)?;
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The correlation id of the request being answered.
#[derive(Debug, Clone, Copy)]
pub struct Correlation(pub LogId);

impl Correlation {
    /// The request's, or a new one for a request that came another way (a test's).
    pub fn of(req: &actix_web::HttpRequest, now: chrono::DateTime<chrono::Utc>) -> LogId {
        req.extensions().get::<Correlation>().map_or_else(|| LogId::at(now), |c| c.0)
    }
}

/// The access lines' target, for `RUST_LOG` (`mcp_platform::access=warn` turns them off).
const ACCESS: &str = "mcp_platform::access";

/// Requests whose access line would only be noise: probes and scrapes.
const QUIET: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Gives the request its correlation id, answers it within a span that carries the id, puts the
/// id on the response, and logs the access line.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let now = req.app_data::<web::Data<AppState>>().map_or_else(chrono::Utc::now, |s| s.clock.now());
    let id = LogId::at(now);
    req.extensions_mut().insert(Correlation(id));
    let span = tracing::info_span!("request", correlation_id = %id);
    // What the access line says, when it is logged at all.
    let logged = tracing::enabled!(target: ACCESS, tracing::Level::INFO) && !QUIET.contains(&req.path());
    let access = logged.then(|| {
        // The client's address as the request log has it (the proxy's word only when trusted).
        let client =
            crate::auth::ClientInfo::ip_of(req.request()).map(|ip| ip.to_string()).unwrap_or_default();
        (client, req.method().to_string(), loggable_path(req.path()).into_owned())
    });
    let started = Instant::now();
    let answered = next.call(req).instrument(span.clone()).await;
    if let Some((client, method, path)) = access {
        let status = match &answered {
            Ok(response) => response.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        let ms = started.elapsed().as_millis() as u64;
        span.in_scope(|| tracing::info!(target: ACCESS, client, method, path, status, ms, "answered"));
    }
    let mut response = answered?;
    if !response.headers().contains_key(CORRELATION_HEADER) {
        let name = HeaderName::from_bytes(CORRELATION_HEADER.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(&id.to_string()).expect("a UUID is a header value");
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// The request path as it may appear in a log: the tokens of invitation and password-reset
/// links are cut out, and anything else (a gateway path is whatever the client sent) is
/// redacted like a body.
pub fn loggable_path(path: &str) -> Cow<'_, str> {
    for linked in ["/invitations/", "/password-reset/"] {
        if path.starts_with(linked) {
            return format!("{linked}[token]").into();
        }
    }
    crate::telemetry::redact::redact_text(path, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_stamped_with_the_instance() {
        let json = Stamped::new("eu-\"2", LogFormat::Json);
        let line = br#"{"timestamp":"t","level":"INFO"}"#;
        let stamped = [json.stamp.as_slice(), &line[1..]].concat();
        let parsed: serde_json::Value = serde_json::from_slice(&stamped).unwrap();
        assert_eq!(parsed["instance"], "eu-\"2");
        assert_eq!(parsed["level"], "INFO");
        assert_eq!(Stamped::new("one", LogFormat::Text).stamp, b"one ");
        assert_eq!(LogFormat::parse(" JSON "), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("yaml"), None);
    }
}
