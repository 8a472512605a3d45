//! The `request_logs` table: one row per client JSON-RPC request, already redacted.

use chrono::{DateTime, Utc};

use super::Conn;
use super::{CompactBody, CompactTime};
use crate::ids::{KeyId, LogId, OrgId, ServiceId, UserId};
use crate::on_conn;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewRequestLog {
    /// Also the correlation id the client received.
    pub id: LogId,
    pub organization_id: OrgId,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<KeyId>,
    pub mcp_service_id: Option<ServiceId>,
    pub service_name: String,
    pub method: Option<String>,
    pub tool_name: Option<String>,
    /// Shared by the messages of one client session.
    pub session_tag: Option<i64>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub outcome: Outcome,
    pub http_status: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub duration_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// When the call arrived.
    pub created_at: DateTime<Utc>,
    /// It counted against the organization's daily quota (kept in `daily_requests`, not in
    /// the row).
    #[serde(default)]
    pub quota_counted: bool,
    /// A 2026-07-28 (stateless) request rather than one of a 2025-11-25 session.
    #[serde(default)]
    pub stateless: bool,
}

/// How a call ended, as the `outcome` column stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An answer without error.
    Success,
    /// A tool's result with `isError: true`: the tool ran and reported a failure.
    ToolError,
    /// A JSON-RPC error, a refusal by the gateway or an upstream failure.
    Failure,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::ToolError, Outcome::Failure];

    pub fn code(self) -> i16 {
        match self {
            Outcome::Success => 0,
            Outcome::ToolError => 1,
            Outcome::Failure => 2,
        }
    }

    pub fn from_code(code: i16) -> Outcome {
        match code {
            0 => Outcome::Success,
            1 => Outcome::ToolError,
            _ => Outcome::Failure,
        }
    }

    /// As written in URLs and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ToolError => "tool_error",
            Outcome::Failure => "failure",
        }
    }

    /// As pages show it.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "Success",
            Outcome::ToolError => "Tool error",
            Outcome::Failure => "Failure",
        }
    }

    pub fn parse(raw: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

impl NewRequestLog {
    /// A row kept as a JSON line (spilled at a stop), including the form written before the
    /// correlation id became the row's id and the outcome had three values.
    pub fn from_json_line(line: &str) -> serde_json::Result<NewRequestLog> {
        let mut value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(object) = value.as_object_mut()
            && !object.contains_key("outcome")
        {
            if let Some(correlation) = object.remove("correlation_id") {
                object.insert("id".into(), correlation);
            }
            let success = object.remove("success").and_then(|s| s.as_bool()).unwrap_or(false);
            let outcome = if success { Outcome::Success } else { Outcome::Failure };
            object.insert("outcome".into(), serde_json::json!(outcome));
        }
        serde_json::from_value(value)
    }
}

/// Rows per INSERT statement: 22 parameters each stays within both databases' limits.
const ROWS_PER_STATEMENT: usize = 500;

/// Inserts the rows with multi-row statements of at most `ROWS_PER_STATEMENT` (`db::runs`). The
/// next statement's values are bound (bodies compressed) while the database runs the one before.
pub async fn insert_many(conn: Conn<'_>, rows: &[NewRequestLog]) -> sqlx::Result<()> {
    on_conn!(conn, c => {
        let statement = |chunk: &[NewRequestLog]| {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO request_logs (id, organization_id, user_id, api_key_id, mcp_service_id, service_name, \
                 method, tool_name, session_tag, request_body, response_body, request_truncated, \
                 response_truncated, outcome, http_status, error_code, error_message, duration_ms, ip, user_agent, \
                 created_at, stateless) ",
            );
            insert.push_values(chunk, |mut values, row| {
                values
                    .push_bind(row.id)
                    .push_bind(row.organization_id)
                    .push_bind(row.user_id)
                    .push_bind(row.api_key_id)
                    .push_bind(row.mcp_service_id)
                    .push_bind(row.service_name.as_str())
                    .push_bind(row.method.as_deref())
                    .push_bind(row.tool_name.as_deref())
                    .push_bind(row.session_tag)
                    .push_bind(row.request_body.as_deref().map(CompactBody::borrowed))
                    .push_bind(row.response_body.as_deref().map(CompactBody::borrowed))
                    .push_bind(row.request_truncated)
                    .push_bind(row.response_truncated)
                    .push_bind(row.outcome.code())
                    .push_bind(row.http_status)
                    .push_bind(row.error_code)
                    .push_bind(row.error_message.as_deref())
                    .push_bind(row.duration_ms)
                    .push_bind(row.ip.as_deref())
                    .push_bind(row.user_agent.as_deref())
                    .push_bind(CompactTime(row.created_at))
                    .push_bind(row.stateless);
            });
            insert
        };
        let mut chunks = super::runs(rows, ROWS_PER_STATEMENT);
        let mut next = chunks.next().map(statement);
        while let Some(mut insert) = next {
            // The statement is handed to the database on the first poll, before the next is bound.
            let (done, following) = futures_util::join!(
                insert.build().execute(&mut *c),
                async { chunks.next().map(statement) },
            );
            done?;
            next = following;
        }
        Ok(())
    })
}

/// Whether the organization has any request-log row.
pub async fn any_for_organization(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<bool> {
    on_conn!(conn, c => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM request_logs WHERE organization_id = $1)")
        .bind(organization_id)
        .fetch_one(c)
        .await)
}

/// Keeps a row the database refused, whole, with the reason.
pub async fn insert_reject(
    conn: Conn<'_>,
    row: &NewRequestLog,
    row_json: &str,
    error: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO request_log_rejects (id, organization_id, row_json, error, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.id)
    .bind(row.organization_id)
    .bind(row_json)
    .bind(error)
    .bind(now)
    .execute(c)
    .await
    .map(|_| ()))
}

/// A logged call as the explorer, its detail page and the exports read it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct LogRow {
    pub id: LogId,
    pub user_id: Option<UserId>,
    pub member_email: Option<String>,
    pub api_key_id: Option<KeyId>,
    pub key_name: Option<String>,
    pub service_name: String,
    pub method: Option<String>,
    pub tool_name: Option<String>,
    #[serde(skip)]
    pub session_tag: Option<i64>,
    #[serde(serialize_with = "outcome_name")]
    pub outcome: i16,
    pub http_status: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub duration_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_body: Option<CompactBody<'static>>,
    pub response_body: Option<CompactBody<'static>>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    #[serde(serialize_with = "compact_time")]
    pub created_at: CompactTime,
    /// A 2026-07-28 (stateless) request.
    pub stateless: bool,
}

fn outcome_name<S: serde::Serializer>(code: &i16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(Outcome::from_code(*code).as_str())
}

fn compact_time<S: serde::Serializer>(time: &CompactTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&time.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

impl LogRow {
    pub fn outcome(&self) -> Outcome {
        Outcome::from_code(self.outcome)
    }
}

/// Which calls a search reads: always one organization's, only the member's own for
/// `own`, between two ids (`below` exclusive, `from` inclusive; ids follow arrival time), and
/// matching every filter that is set.
#[derive(Debug, Clone, Default)]
pub struct LogSearch {
    pub own: Option<UserId>,
    pub service: Option<ServiceId>,
    pub member: Option<UserId>,
    pub key: Option<KeyId>,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub outcome: Option<Outcome>,
    pub from: Option<LogId>,
    pub below: Option<LogId>,
}

impl LogSearch {
    /// Whether a filter beyond the scope and the range is set: rows must then be read to be
    /// matched.
    pub fn filters(&self) -> bool {
        self.service.is_some()
            || self.member.is_some()
            || self.key.is_some()
            || self.method.is_some()
            || self.tool.is_some()
            || self.outcome.is_some()
    }

    /// Whether the only filter is an unsuccessful outcome: the partial index of unsuccessful
    /// calls then holds exactly the matches, and no row is read in vain.
    pub fn only_unsuccessful(&self) -> bool {
        self.outcome.is_some_and(|o| o != Outcome::Success)
            && self.service.is_none()
            && self.member.is_none()
            && self.key.is_none()
            && self.method.is_none()
            && self.tool.is_none()
    }
}

/// A value bound to a search statement.
enum Arg {
    Org(OrgId),
    User(UserId),
    Service(ServiceId),
    Key(KeyId),
    Log(LogId),
    Text(String),
    Small(i16),
    Int(i64),
}

/// The WHERE clause of a search over `request_logs r`, with its values, numbered from $1.
fn conditions(organization_id: OrgId, search: &LogSearch, ranged_only: bool) -> (String, Vec<Arg>) {
    let mut sql = String::from("r.organization_id = $1");
    let mut args = vec![Arg::Org(organization_id)];
    let mut add = |sql_part: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&sql_part.replace('?', &format!("${}", args.len())));
    };
    if let Some(user) = search.own {
        add(" AND r.user_id = ?", Arg::User(user));
    }
    if let Some(from) = search.from {
        add(" AND r.id >= ?", Arg::Log(from));
    }
    if let Some(below) = search.below {
        add(" AND r.id < ?", Arg::Log(below));
    }
    if ranged_only {
        return (sql, args);
    }
    if let Some(service) = search.service {
        add(" AND r.mcp_service_id = ?", Arg::Service(service));
    }
    if let Some(member) = search.member {
        add(" AND r.user_id = ?", Arg::User(member));
    }
    if let Some(key) = search.key {
        add(" AND r.api_key_id = ?", Arg::Key(key));
    }
    if let Some(method) = &search.method {
        add(" AND r.method = ?", Arg::Text(method.clone()));
    }
    if let Some(tool) = &search.tool {
        add(" AND r.tool_name = ?", Arg::Text(tool.clone()));
    }
    if let Some(outcome) = search.outcome {
        // The partial index of unsuccessful calls applies when its condition is written out.
        let condition = match outcome {
            Outcome::Success => " AND r.outcome = ?",
            _ => " AND r.outcome <> 0 AND r.outcome = ?",
        };
        add(condition, Arg::Small(outcome.code()));
    }
    (sql, args)
}

const LOG_COLUMNS: &str = "r.id, r.user_id, u.email AS member_email, r.api_key_id, \
     k.name || ' (' || k.display_key || ')' AS key_name, r.service_name, r.method, r.tool_name, r.session_tag, \
     r.outcome, r.http_status, r.error_code, r.error_message, r.duration_ms, r.ip, r.user_agent, r.request_body, \
     r.response_body, r.request_truncated, r.response_truncated, r.created_at, r.stateless";
const LOG_JOINS: &str = "LEFT JOIN users u ON u.id = r.user_id LEFT JOIN api_keys k ON k.id = r.api_key_id";

/// Runs a search statement on either backend: `$make` builds the query from the SQL, the
/// values are bound in order, and `$fetch` runs it.
macro_rules! run_search {
    ($conn:expr, $make:path, $sql:expr, $args:expr, $fetch:ident $(, $then:expr)?) => {
        on_conn!($conn, c => {
            let mut q = $make(sqlx::AssertSqlSafe($sql));
            for arg in $args {
                q = match arg {
                    Arg::Org(v) => q.bind(v),
                    Arg::User(v) => q.bind(v),
                    Arg::Service(v) => q.bind(v),
                    Arg::Key(v) => q.bind(v),
                    Arg::Log(v) => q.bind(v),
                    Arg::Text(v) => q.bind(v),
                    Arg::Small(v) => q.bind(v),
                    Arg::Int(v) => q.bind(v),
                };
            }
            // Filters vary from search to search: not worth keeping prepared.
            q.persistent(false).$fetch(c).await$(.map($then))?
        })
    };
}

/// The newest `limit` calls of the search, newest first.
pub async fn search(
    conn: Conn<'_>,
    organization_id: OrgId,
    search: &LogSearch,
    limit: i64,
) -> sqlx::Result<Vec<LogRow>> {
    let (conditions, mut args) = conditions(organization_id, search, false);
    args.push(Arg::Int(limit));
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM request_logs r {LOG_JOINS} WHERE {conditions} ORDER BY r.id DESC LIMIT ${}",
        args.len()
    );
    // The statement is built from fixed fragments; every value is bound.
    run_search!(conn, sqlx::query_as, sql, args, fetch_all)
}

/// The id of the `n`th newest call in the search's scope and range, filters aside: where a
/// filtered search that reads at most `n` rows stops. `None` when there are fewer.
pub async fn nth_newest(
    conn: Conn<'_>,
    organization_id: OrgId,
    search: &LogSearch,
    n: i64,
) -> sqlx::Result<Option<LogId>> {
    let (conditions, mut args) = conditions(organization_id, search, true);
    args.push(Arg::Int(n - 1));
    let sql = format!(
        "SELECT r.id FROM request_logs r WHERE {conditions} ORDER BY r.id DESC LIMIT 1 OFFSET ${}",
        args.len()
    );
    run_search!(conn, sqlx::query_scalar, sql, args, fetch_optional)
}

/// One call of the organization (the member's own for `own`).
pub async fn find(
    conn: Conn<'_>,
    organization_id: OrgId,
    own: Option<UserId>,
    id: LogId,
) -> sqlx::Result<Option<LogRow>> {
    let search = LogSearch { own, from: Some(id), ..LogSearch::default() };
    let (conditions, mut args) = conditions(organization_id, &search, true);
    args.push(Arg::Log(id));
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM request_logs r {LOG_JOINS} WHERE {conditions} AND r.id = ${}",
        args.len()
    );
    run_search!(conn, sqlx::query_as, sql, args, fetch_optional)
}

/// The newest unsuccessful calls since `since`, of one service or all, the member's own for
/// `own` (read through the partial index of unsuccessful calls, so only those are read).
pub async fn latest_unsuccessful(
    conn: Conn<'_>,
    organization_id: OrgId,
    own: Option<UserId>,
    service: Option<ServiceId>,
    since: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<LogRow>> {
    let search = LogSearch { own, service, from: Some(LogId::floor(since)), ..LogSearch::default() };
    let (conditions, mut args) = conditions(organization_id, &search, false);
    args.push(Arg::Int(limit));
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM request_logs r {LOG_JOINS} WHERE {conditions} AND r.outcome <> 0 \
         ORDER BY r.id DESC LIMIT ${}",
        args.len()
    );
    run_search!(conn, sqlx::query_as, sql, args, fetch_all)
}

/// How far from a call its session's other messages are looked for.
pub const SESSION_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// The other messages of a call's client session: the member's calls with the same session tag
/// within `SESSION_WINDOW` either side, oldest first, at most `limit`. (Read through the member's
/// index: the cost is the member's calls in that window.)
pub async fn same_session(
    conn: Conn<'_>,
    organization_id: OrgId,
    call: &LogRow,
    limit: i64,
) -> sqlx::Result<Vec<LogRow>> {
    let (Some(user), Some(tag)) = (call.user_id, call.session_tag) else { return Ok(Vec::new()) };
    let search = LogSearch {
        own: Some(user),
        from: Some(LogId::floor(call.created_at.0 - SESSION_WINDOW)),
        below: Some(LogId::floor(call.created_at.0 + SESSION_WINDOW)),
        ..LogSearch::default()
    };
    let (conditions, mut args) = conditions(organization_id, &search, true);
    args.push(Arg::Int(tag));
    args.push(Arg::Int(limit));
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM request_logs r {LOG_JOINS} WHERE {conditions} AND r.session_tag = ${}          ORDER BY r.id LIMIT ${}",
        args.len() - 1,
        args.len()
    );
    run_search!(conn, sqlx::query_as, sql, args, fetch_all)
}

/// Deletes up to `limit` of the organization's oldest calls: those before `below`, of one
/// member for `member`. Returns how many went.
pub async fn delete_batch(
    conn: Conn<'_>,
    organization_id: OrgId,
    member: Option<UserId>,
    below: Option<LogId>,
    limit: i64,
) -> sqlx::Result<u64> {
    let search = LogSearch { below, member, ..LogSearch::default() };
    let (conditions, mut args) = conditions(organization_id, &search, false);
    args.push(Arg::Int(limit));
    let sql = format!(
        "DELETE FROM request_logs WHERE organization_id = $1 AND id IN \
         (SELECT r.id FROM request_logs r WHERE {conditions} ORDER BY r.id LIMIT ${})",
        args.len()
    );
    run_search!(conn, sqlx::query, sql, args, execute, |done| done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_spilled_by_the_release_before_are_read() {
        let correlation = "01a22932-a37e-7019-a56d-44e731447ac3";
        let legacy = format!(
            r#"{{"id":"01a22932-0000-7000-8000-000000000001","organization_id":"01a22932-0000-7000-8000-000000000002",
            "user_id":null,"api_key_id":null,"mcp_service_id":null,"service_name":"tools","method":"ping",
            "tool_name":null,"correlation_id":"{correlation}","request_body":null,"response_body":null,
            "request_truncated":false,"response_truncated":false,"success":false,"http_status":502,
            "error_code":-32000,"error_message":"down","duration_ms":4,"ip":null,"user_agent":null,
            "created_at":"2026-03-10T12:00:00Z"}}"#
        );
        let row = NewRequestLog::from_json_line(&legacy.replace('\n', "")).unwrap();
        assert_eq!(row.id.to_string(), correlation);
        assert_eq!(row.outcome, Outcome::Failure);
        let again = NewRequestLog::from_json_line(&serde_json::to_string(&row).unwrap()).unwrap();
        assert_eq!((again.id, again.outcome, again.session_tag), (row.id, row.outcome, None));
    }
}
