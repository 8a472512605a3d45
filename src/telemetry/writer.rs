//! The batched request-log writer. A call takes a `Slot` in a bounded queue when it is admitted
//! (none left: the gateway refuses the call, 503, rather than accept one it cannot record) and
//! fills it with its row when it ends. A background task writes each batch, its log rows and the
//! usage counters and roll-ups they move, in one transaction.
//!
//! Nothing accepted is lost, and nothing holds up the rest: a row the database refuses (a
//! constraint, a value out of range) is set aside in `request_log_rejects`, or in a file when the
//! database refuses that too, while the other rows of its batch are written; while the database
//! cannot be reached the writer waits and tries again, longer each time. At a stop it writes until
//! the stop deadline and spills what is left to a file, which the next start writes first.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::clock::SharedClock;
use crate::db::request_logs::{NewRequestLog, Outcome};
use crate::db::usage::Increment;
use crate::db::{self, Db};
use crate::ids::{OrgId, ServiceId};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::rollup;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows waiting to be written; past it the gateway refuses new calls.
    pub capacity: usize,
    /// Most rows per transaction.
    pub batch_size: usize,
    /// Longest a row waits for its batch to fill.
    pub max_delay: Duration,
    /// Where rows left at a stop are spilled, and rows refused twice are kept.
    pub spill_dir: PathBuf,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 10_000,
            batch_size: 500,
            max_delay: Duration::from_millis(50),
            spill_dir: PathBuf::from(crate::config::DEFAULT_DATA_DIR),
        }
    }
}

/// First wait after a failed write; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const SPILL_PREFIX: &str = "request-logs-spill-";
/// Rows the database refused, and could not keep in `request_log_rejects` either.
pub const REJECTS_FILE: &str = "request-logs-rejected.jsonl";

#[derive(Clone)]
pub struct RequestLogWriter {
    queue: mpsc::Sender<NewRequestLog>,
    metrics: Metrics,
}

/// Room for one row in the writer's queue, taken when a call is admitted.
pub struct Slot(mpsc::OwnedPermit<NewRequestLog>);

impl Slot {
    pub fn fill(self, row: NewRequestLog) {
        self.0.send(row);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request-log writer has stopped")]
pub struct WriterStopped;

#[derive(Debug, thiserror::Error)]
#[error("the request-log queue is full or the writer has stopped")]
pub struct QueueFull;

/// What the writer did before it stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub written: u64,
    pub rejected: u64,
    pub spilled: u64,
}

/// Stops the writer: it writes what is queued until the deadline, then spills the rest.
pub struct WriterHandle {
    deadline: watch::Sender<Option<Instant>>,
    task: JoinHandle<Summary>,
}

impl RequestLogWriter {
    /// Starts the writer; rows spilled by an earlier stop are written first.
    pub fn start(
        db: Db,
        clock: SharedClock,
        config: WriterConfig,
        metrics: Metrics,
    ) -> (RequestLogWriter, WriterHandle) {
        let (queue, rows) = mpsc::channel(config.capacity.max(1));
        let (deadline, stop) = watch::channel(None);
        let writer =
            Writer { db, clock, config, metrics: metrics.clone(), stop, summary: Summary::default() };
        let task = tokio::spawn(writer.run(rows));
        (RequestLogWriter { queue, metrics }, WriterHandle { deadline, task })
    }

    /// The metrics each message handled is counted in, whether or not it has a row (a call
    /// without a valid key has none).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Rows waiting to be written.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Takes room for one row now, or says there is none.
    pub fn reserve(&self) -> Result<Slot, QueueFull> {
        self.queue.clone().try_reserve_owned().map(Slot).map_err(|_| QueueFull)
    }

    /// Queues one row; waits while the queue is full.
    pub async fn record(&self, row: NewRequestLog) -> Result<(), WriterStopped> {
        self.queue.send(row).await.map_err(|_| WriterStopped)
    }
}

impl WriterHandle {
    /// Refuses new rows, writes the queued ones until `deadline` from now, spills the rest to a
    /// file for the next start, and says what happened to them.
    pub async fn shutdown(self, deadline: Duration) -> anyhow::Result<Summary> {
        self.deadline.send_replace(Some(Instant::now() + deadline));
        self.task.await.context("the request-log writer panicked")
    }
}

struct Writer {
    db: Db,
    clock: SharedClock,
    config: WriterConfig,
    metrics: Metrics,
    /// Set when the platform stops: the time by which the writer gives up and spills.
    stop: watch::Receiver<Option<Instant>>,
    summary: Summary,
}

impl Writer {
    async fn run(mut self, mut rows: mpsc::Receiver<NewRequestLog>) -> Summary {
        let size = self.config.batch_size;
        let mut batch = Vec::with_capacity(size);
        let mut in_time = match self.recover_spilled().await {
            Ok(()) => true,
            Err(left) => {
                batch = left;
                false
            }
        };
        while in_time {
            let received = if rows.is_closed() {
                match before_deadline(&mut self.stop, rows.recv_many(&mut batch, size)).await {
                    Some(received) => received,
                    None => break,
                }
            } else {
                tokio::select! {
                    received = rows.recv_many(&mut batch, size) => received,
                    _ = stop_requested(&mut self.stop) => {
                        rows.close();
                        continue;
                    }
                }
            };
            if received == 0 {
                break;
            }
            // Let a small batch fill up a little before paying for a transaction; rows wait in
            // the queue meanwhile, so this task is not woken for each of them.
            if batch.len() < size && !rows.is_closed() {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.max_delay) => {}
                    _ = stop_requested(&mut self.stop) => rows.close(),
                }
                while batch.len() < size && !rows.is_empty() {
                    let room = size - batch.len();
                    rows.recv_many(&mut batch, room).await;
                }
            }
            in_time = self.write(&mut batch).await;
        }
        rows.close();
        while let Ok(row) = rows.try_recv() {
            batch.push(row);
        }
        self.spill(&batch);
        self.summary
    }

    /// Writes the batch: rows the database refuses are set aside, and while it cannot be
    /// reached the writer waits and tries again. False when the stop deadline passed first; the
    /// rows not written are then left in `batch`.
    async fn write(&mut self, batch: &mut Vec<NewRequestLog>) -> bool {
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        let started = Instant::now();
        while !batch.is_empty() {
            let Some(result) =
                before_deadline(&mut self.stop, write_batch(&self.db, self.clock.now(), batch)).await
            else {
                return false;
            };
            match result {
                Ok(()) => {
                    self.written(batch.len(), started.elapsed());
                    batch.clear();
                }
                Err(e) if db::refused_data(&e) => {
                    if !self.one_by_one(batch).await {
                        return false;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::error!(error = %e, rows = batch.len(), failures, retry_in = ?backoff,
                            "cannot write request logs; retrying");
                    }
                    if before_deadline(&mut self.stop, tokio::time::sleep(backoff)).await.is_none() {
                        return false;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if failures > 0 {
            tracing::info!(failures, "request logs are written again");
        }
        true
    }

    /// Writes each row on its own, so only the refused ones are set aside; rows that meet
    /// another failure stay in `batch` to be tried again. False when the deadline passed.
    async fn one_by_one(&mut self, batch: &mut Vec<NewRequestLog>) -> bool {
        let mut left = Vec::new();
        let mut in_time = true;
        let mut rows = std::mem::take(batch).into_iter();
        for row in rows.by_ref() {
            match before_deadline(
                &mut self.stop,
                write_batch(&self.db, self.clock.now(), std::slice::from_ref(&row)),
            )
            .await
            {
                None => {
                    left.push(row);
                    in_time = false;
                    break;
                }
                Some(Ok(())) => self.written(1, Duration::ZERO),
                Some(Err(e)) if db::refused_data(&e) => self.reject(row, &e).await,
                Some(Err(_)) => left.push(row),
            }
        }
        left.extend(rows);
        *batch = left;
        in_time
    }

    fn written(&mut self, rows: usize, took: Duration) {
        self.metrics.written(rows as u64, took.as_secs_f64());
        self.summary.written += rows as u64;
    }

    /// Keeps a refused row whole with the reason: in `request_log_rejects`, or in a file when
    /// the database refuses that too.
    async fn reject(&mut self, row: NewRequestLog, error: &sqlx::Error) {
        self.summary.rejected += 1;
        self.metrics.rejected(1);
        let reason = error.to_string();
        let json = serde_json::to_string(&row).unwrap_or_default();
        let kept = async {
            let mut conn = self.db.acquire().await?;
            db::request_logs::insert_reject(conn.conn(), &row, &json, &reason, self.clock.now()).await
        };
        match before_deadline(&mut self.stop, kept).await {
            Some(Ok(())) => tracing::error!(row = %row.id, organization = %row.organization_id,
                error = %reason, "the database refused a request-log row; kept in request_log_rejects"),
            _ => {
                let file = self.config.spill_dir.join(REJECTS_FILE);
                match append_lines(&file, std::slice::from_ref(&row)) {
                    Ok(()) => tracing::error!(row = %row.id, organization = %row.organization_id,
                        error = %reason, file = %file.display(), "the database refused a request-log row; kept in a file"),
                    Err(e) => tracing::error!(row = %row.id, organization = %row.organization_id,
                        error = %reason, file_error = %e, "the database refused a request-log row and it could not be kept"),
                }
            }
        }
    }

    /// Writes the rows an earlier stop left in the data directory, file by file. On a stop
    /// meanwhile, the rows not yet written are handed back to be spilled again.
    async fn recover_spilled(&mut self) -> Result<(), Vec<NewRequestLog>> {
        for file in spill_files(&self.config.spill_dir) {
            let rows = match read_lines(&file) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "cannot read spilled request logs; left in place");
                    continue;
                }
            };
            // Once in memory the rows are this run's to write, or to spill again.
            if let Err(e) = std::fs::remove_file(&file) {
                tracing::error!(file = %file.display(), error = %e, "cannot remove spilled request logs; left in place");
                continue;
            }
            tracing::info!(rows = rows.len(), file = %file.display(), "writing request logs spilled at the last stop");
            let mut rows = rows.into_iter();
            loop {
                let mut batch: Vec<_> = rows.by_ref().take(self.config.batch_size).collect();
                if batch.is_empty() {
                    break;
                }
                if !self.write(&mut batch).await {
                    batch.extend(rows);
                    return Err(batch);
                }
            }
        }
        Ok(())
    }

    /// Keeps rows that could not be written before the stop deadline for the next start.
    fn spill(&mut self, rows: &[NewRequestLog]) {
        if rows.is_empty() {
            return;
        }
        let file = self.config.spill_dir.join(format!("{SPILL_PREFIX}{}.jsonl", Uuid::now_v7()));
        match append_lines(&file, rows) {
            Ok(()) => {
                self.summary.spilled += rows.len() as u64;
                tracing::warn!(rows = rows.len(), file = %file.display(),
                    "request logs not written before the stop deadline; kept for the next start");
            }
            Err(e) => tracing::error!(rows = rows.len(), file = %file.display(), error = %e,
                "request logs not written before the stop deadline could not be kept; they are lost"),
        }
    }
}

/// Resolves once a stop deadline is set; never, when the handle is gone without a stop.
async fn stop_requested(stop: &mut watch::Receiver<Option<Instant>>) {
    if stop.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `work` to its end, or until the stop deadline passes (`None`).
async fn before_deadline<T>(
    stop: &mut watch::Receiver<Option<Instant>>,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let deadline = tokio::select! {
        done = &mut work => return Some(done),
        _ = stop_requested(stop) => (*stop.borrow()).expect("a stop sets its deadline"),
    };
    tokio::time::timeout_at(deadline, work).await.ok()
}

/// Spill files in the directory, oldest first (their names hold a time-ordered id).
fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(SPILL_PREFIX) && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    files
}

/// Appends rows as JSON lines to a file readable by its owner only, and syncs it.
fn append_lines(file: &Path, rows: &[NewRequestLog]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(crate::config::open_private_file(file, true)?);
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn read_lines(file: &Path) -> std::io::Result<Vec<NewRequestLog>> {
    let text = std::fs::read_to_string(file)?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match NewRequestLog::from_json_line(line) {
            Ok(row) => rows.push(row),
            Err(e) => {
                tracing::error!(file = %file.display(), line = n + 1, error = %e, "a spilled request-log line is unreadable; skipped")
            }
        }
    }
    Ok(rows)
}

/// Writes the rows, the usage counters and the roll-ups they move, in one transaction.
pub async fn write_batch(db: &Db, now: DateTime<Utc>, batch: &[NewRequestLog]) -> sqlx::Result<()> {
    write_tallied(db, now, batch, &Tally::of(batch)).await
}

/// What a batch of rows adds to the usage counters, the daily quota counters and the roll-ups.
#[derive(Default)]
pub struct Tally {
    usage: BTreeMap<(OrgId, ServiceId, chrono::NaiveDate), Increment>,
    daily: BTreeMap<(OrgId, chrono::NaiveDate), i64>,
    rollups: BTreeMap<rollup::RollupKey, rollup::Counts>,
}

impl Tally {
    pub fn of(batch: &[NewRequestLog]) -> Tally {
        let mut tally = Tally { rollups: rollup::rollups_of(batch), ..Tally::default() };
        for row in batch {
            if let Some(service) = row.mcp_service_id {
                let inc = tally
                    .usage
                    .entry((row.organization_id, service, row.created_at.date_naive()))
                    .or_default();
                inc.requests += 1;
                inc.duration_ms += row.duration_ms;
                if row.outcome == Outcome::Success { inc.successes += 1 } else { inc.failures += 1 }
            }
            if row.quota_counted {
                *tally.daily.entry((row.organization_id, row.created_at.date_naive())).or_default() += 1;
            }
        }
        tally
    }
}

/// `write_batch` with the batch's tally made beforehand (`dev seed` makes it on another thread).
pub async fn write_tallied(
    db: &Db,
    now: DateTime<Utc>,
    batch: &[NewRequestLog],
    tally: &Tally,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    db::request_logs::insert_many(tx.conn(), batch).await?;
    for (&(organization_id, service, day), &inc) in &tally.usage {
        db::usage::add(tx.conn(), organization_id, service, day, inc, now).await?;
    }
    db::usage::add_rollups(tx.conn(), &tally.rollups).await?;
    // PostgreSQL counts them as they are admitted (`gateway::limits`).
    if let Db::Sqlite(_) = db {
        db::usage::add_daily_requests(tx.conn(), &tally.daily).await?;
    }
    tx.commit().await
}
