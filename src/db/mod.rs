//! Storage on SQLite or PostgreSQL from one set of SQL (`$N` placeholders work on both).
//!
//! `Db` is the pool; `Conn` is one borrowed connection of either kind, from the pool or from a
//! transaction, so every query function is written once and takes a `Conn`. The `on_conn!`
//! macro expands a query body once per backend.

pub mod api_keys;
pub mod audit;
pub mod compact_body;
pub mod compact_time;
pub mod invitations;
pub mod login_failures;
pub mod organizations;
pub mod password_resets;
pub mod request_logs;
pub mod services;
pub mod sessions;
pub mod token_keys;
pub mod tool_policies;
pub mod upkeep;
pub mod usage;
pub mod user_tokens;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Datelike, Months, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

pub use compact_body::CompactBody;
pub use compact_time::CompactTime;

use crate::config::{Backend, DatabaseUrl};

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One connection of either backend.
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// The same connection for one more call, keeping this handle for the calls after it.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// Runs `$body` with `$c` bound to the backend's own connection type.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite($c) => $body,
            $crate::db::Conn::Postgres($c) => $body,
        }
    };
}

/// Runs one statement with its bound values on either backend: how many rows it changed.
#[macro_export]
macro_rules! execute {
    ($conn:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        $crate::on_conn!($conn, c => sqlx::query($sql)$(.bind($bind))*.execute(c).await.map(|done| done.rows_affected()))
    };
}

/// Runs one statement that changes one row when it applies: whether it did.
#[macro_export]
macro_rules! execute_one {
    ($($statement:tt)*) => {
        $crate::execute!($($statement)*).map(|changed| changed == 1)
    };
}

pub enum PooledConn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl PooledConn {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            PooledConn::Sqlite(c) => Conn::Sqlite(c),
            PooledConn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Postgres(t) => Conn::Postgres(t),
        }
    }

    pub async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// The rows cut into runs for multi-row statements: runs of `max`, then of the powers of two
/// below it, largest first. A batch of any size is written with statements of a few texts,
/// each prepared once per connection and kept, instead of one text per batch size prepared
/// anew each time (for SQLite, preparing a roll-up statement of a dozen rows cost more than
/// running it).
pub(crate) fn runs<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let len = if rest.len() >= max { max } else { 1 << rest.len().checked_ilog2()? };
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some(run)
    })
}

/// A LIKE pattern (used with `ESCAPE '\\'`) matching `text` literally: anywhere, or at the start.
pub(crate) fn like_pattern(text: &str, prefix_only: bool) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    if prefix_only { format!("{escaped}%") } else { format!("%{escaped}%") }
}

/// Last-use times (keys, service tokens) are written at most this often, so most calls write
/// nothing.
pub const LAST_USE_INTERVAL: chrono::Duration = chrono::Duration::minutes(1);

/// Whether a use at `now` should be written, given the last one recorded.
pub fn last_use_due(last_used: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_used.is_none_or(|t| now - t >= LAST_USE_INTERVAL)
}

/// The name of the unique index a write violated, so callers can turn it into a form error.
pub fn unique_violation(err: &sqlx::Error) -> Option<String> {
    let db_err = err.as_database_error()?;
    if !db_err.is_unique_violation() {
        return None;
    }
    // PostgreSQL names the constraint; SQLite names the columns ("users.email").
    db_err.constraint().map(str::to_owned).or_else(|| {
        let msg = db_err.message();
        msg.strip_prefix("UNIQUE constraint failed: ").map(str::to_owned)
    })
}

/// Whether a write lost a race with another one (PostgreSQL's serialization failure or
/// deadlock, SQLite's busy or locked database): the user may simply try again.
pub fn lost_race(err: &sqlx::Error) -> bool {
    let Some(db_err) = err.as_database_error() else { return false };
    match db_err.code().as_deref() {
        Some("40001" | "40P01") => true,
        // SQLite's primary result codes 5 and 6, with their extended codes.
        Some(code) => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
        None => false,
    }
}

/// Whether the database refused the data itself (a constraint, a value out of range or of the
/// wrong type), as opposed to failing to take it now: writing it again will not help.
pub fn refused_data(err: &sqlx::Error) -> bool {
    let Some(db_err) = err.as_database_error() else { return false };
    if db_err.is_unique_violation() || db_err.is_foreign_key_violation() || db_err.is_check_violation() {
        return true;
    }
    match db_err.code().as_deref() {
        // PostgreSQL's classes 22 (data exception) and 23 (integrity constraint violation).
        Some(code) if code.len() == 5 && (code.starts_with("22") || code.starts_with("23")) => true,
        // SQLite's TOOBIG (18), CONSTRAINT (19) and MISMATCH (20), with their extended codes.
        Some(code) => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 18..=20)),
        None => false,
    }
}

impl Db {
    pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Db> {
        match url.backend {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url.expose())
                    .context("DATABASE_URL: not a valid sqlite:// URL")?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                if let Some(dir) = options.get_filename().parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .context("cannot open the SQLite database")?;
                Ok(Db::Sqlite(pool))
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url.expose())
                    .context("DATABASE_URL: not a valid postgres:// URL")?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .context("cannot connect to PostgreSQL")?;
                Ok(Db::Postgres(pool))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
        }
        .context("database migration failed")
    }

    pub async fn acquire(&self) -> sqlx::Result<PooledConn> {
        Ok(match self {
            Db::Sqlite(pool) => PooledConn::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => PooledConn::Postgres(pool.acquire().await?),
        })
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and then upgrades to a write lock
    /// fails with "database is locked" without waiting, because SQLite skips the busy handler
    /// there to avoid a deadlock.
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// The pool's open connections: in use, and idle.
    pub fn connections(&self) -> (usize, usize) {
        let (size, idle) = match self {
            Db::Sqlite(pool) => (pool.size(), pool.num_idle()),
            Db::Postgres(pool) => (pool.size(), pool.num_idle()),
        };
        ((size as usize).saturating_sub(idle), idle)
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self {
            Db::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
            Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }

    /// On PostgreSQL, creates the monthly `request_logs` partitions for this month and the next
    /// two, so rows never pile up in the default partition. Nothing to do on SQLite.
    pub async fn ensure_log_partitions(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.ensure_log_partitions_since(now, now).await
    }

    /// On PostgreSQL, drops the monthly `request_logs` partitions that end on or before `day`:
    /// the rows in them are past every organization's retention. Returns their names.
    pub async fn drop_log_partitions_before(&self, day: chrono::NaiveDate) -> anyhow::Result<Vec<String>> {
        let Db::Postgres(pool) = self else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'request_logs'",
        )
        .fetch_all(pool)
        .await?;
        let mut dropped = Vec::new();
        for name in names {
            // Only the monthly partitions this platform made: request_logs_yYYYYmMM.
            let Some(month) = name.strip_prefix("request_logs_y").and_then(|rest| {
                chrono::NaiveDate::parse_from_str(&format!("{}-01", rest.replace('m', "-")), "%Y-%m-%d").ok()
            }) else {
                continue;
            };
            let Some(end) = crate::telemetry::retention::month_after(month) else { continue };
            if end <= day {
                // The name was read from the catalogue and matched the pattern above.
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
                    .execute(pool)
                    .await?;
                tracing::info!(partition = %name, "dropped a request-log partition past every organization's retention");
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    /// The same, from the month of `since` on (rows written for the past: `dev seed`).
    pub async fn ensure_log_partitions_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let Db::Postgres(pool) = self else {
            return Ok(());
        };
        let first = since.date_naive().with_day(1).context("first of month")?;
        let last = now.date_naive().with_day(1).context("first of month")? + Months::new(2);
        let mut from = first;
        while from <= last {
            let to = from + Months::new(1);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS request_logs_y{}m{:02} PARTITION OF request_logs \
                 FOR VALUES FROM ('{from}') TO ('{to}')",
                from.year(),
                from.month()
            );
            // Built only from dates computed above, never from input.
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .with_context(|| format!("cannot create the request_logs partition for {from}"))?;
            from = to;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    fn lengths(rows: usize, max: usize) -> Vec<usize> {
        runs(&vec![(); rows], max).map(<[()]>::len).collect()
    }

    #[test]
    fn runs_are_of_max_then_powers_of_two_and_cover_every_row_once() {
        assert_eq!(lengths(0, 500), Vec::<usize>::new());
        assert_eq!(lengths(1, 500), [1]);
        assert_eq!(lengths(23, 500), [16, 4, 2, 1]);
        assert_eq!(lengths(1234, 500), [500, 500, 128, 64, 32, 8, 2]);
        assert_eq!(lengths(200, 200), [200]);
        let rows: Vec<usize> = (0..777).collect();
        let cut: Vec<usize> = runs(&rows, 200).flatten().copied().collect();
        assert_eq!(cut, rows);
        // A batch of any size uses one of a few statement texts.
        let mut sizes: Vec<usize> = (0..=1000).flat_map(|n| lengths(n, 500)).collect();
        sizes.sort_unstable();
        sizes.dedup();
        assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 64, 128, 256, 500]);
    }
}
