//! The batched request-log writer. Handlers hand rows to `RequestLogWriter::record`, which
//! waits when the queue is full (back-pressure, never a dropped row); a background task writes
//! each batch, its log rows and the usage counters they move, in one transaction; `shutdown`
//! writes everything still queued. So after a graceful stop, counters equal log rows exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::clock::SharedClock;
use crate::db::request_logs::NewRequestLog;
use crate::db::usage::Increment;
use crate::db::{self, Db};
use crate::telemetry::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Rows waiting to be written before `record` waits.
    pub capacity: usize,
    /// Most rows per transaction.
    pub batch_size: usize,
    /// Longest a row waits for its batch to fill.
    pub max_delay: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { capacity: 10_000, batch_size: 500, max_delay: Duration::from_millis(50) }
    }
}

#[derive(Clone)]
pub struct RequestLogWriter {
    queue: mpsc::Sender<NewRequestLog>,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
#[error("the request-log writer has stopped")]
pub struct WriterStopped;

/// Stops the writer after it has written everything queued.
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<u64>,
}

impl RequestLogWriter {
    pub fn start(
        db: Db,
        clock: SharedClock,
        config: WriterConfig,
        metrics: Metrics,
    ) -> (RequestLogWriter, WriterHandle) {
        let (queue, rows) = mpsc::channel(config.capacity.max(1));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(db, clock, config, rows, stopped, metrics.clone()));
        (RequestLogWriter { queue, metrics }, WriterHandle { stop, task })
    }

    /// Counts a message handled, whether or not it has a row (a call without a valid key has
    /// none).
    pub fn count(&self, status: u16, took: Duration) {
        self.metrics.message(status, took.as_secs_f64());
    }

    /// Rows waiting to be written.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues one row; waits while the queue is full.
    pub async fn record(&self, row: NewRequestLog) -> Result<(), WriterStopped> {
        self.queue.send(row).await.map_err(|_| WriterStopped)
    }

    /// Queues one row without holding up the caller: at once when there is room, else from a
    /// task that waits for room.
    pub fn record_soon(&self, row: NewRequestLog) {
        match self.queue.try_send(row) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(row)) => {
                let writer = self.clone();
                tokio::spawn(async move {
                    if writer.record(row).await.is_err() {
                        tracing::error!("request log row lost: the writer has stopped");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("request log row lost: the writer has stopped")
            }
        }
    }
}

impl WriterHandle {
    /// Refuses new rows, writes the queued ones, and returns how many rows were written in all.
    pub async fn shutdown(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(());
        self.task.await.context("the request-log writer panicked")
    }
}

async fn run(
    db: Db,
    clock: SharedClock,
    config: WriterConfig,
    mut rows: mpsc::Receiver<NewRequestLog>,
    mut stopped: oneshot::Receiver<()>,
    metrics: Metrics,
) -> u64 {
    let mut written = 0;
    let mut batch = Vec::with_capacity(config.batch_size);
    loop {
        tokio::select! {
            _ = &mut stopped, if !rows.is_closed() => rows.close(),
            received = rows.recv_many(&mut batch, config.batch_size) => {
                if received == 0 {
                    break;
                }
                // Let a small batch fill up a little before paying for a transaction; rows
                // wait in the queue meanwhile, so this task is not woken for each of them.
                if batch.len() < config.batch_size && !rows.is_closed() {
                    tokio::select! {
                        _ = tokio::time::sleep(config.max_delay) => {}
                        _ = &mut stopped => rows.close(),
                    }
                    while batch.len() < config.batch_size && !rows.is_empty() {
                        let room = config.batch_size - batch.len();
                        rows.recv_many(&mut batch, room).await;
                    }
                }
                let rows = write_batch(&db, &clock, &mut batch).await;
                metrics.written(rows);
                written += rows;
            }
        }
    }
    written
}

/// Writes the batch and its usage in one transaction, retrying until the database takes it:
/// rows are never dropped, and a failed transaction leaves no half-written counter.
async fn write_batch(db: &Db, clock: &SharedClock, batch: &mut Vec<NewRequestLog>) -> u64 {
    let mut attempt = 0u32;
    loop {
        match try_write(db, clock, batch).await {
            Ok(()) => {
                let n = batch.len() as u64;
                batch.clear();
                return n;
            }
            Err(e) => {
                attempt += 1;
                tracing::error!(error = ?e, rows = batch.len(), attempt, "cannot write request logs; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(50)))).await;
            }
        }
    }
}

async fn try_write(db: &Db, clock: &SharedClock, batch: &[NewRequestLog]) -> anyhow::Result<()> {
    let mut usage: BTreeMap<(Uuid, Uuid, chrono::NaiveDate), Increment> = BTreeMap::new();
    let mut tx = db.begin().await?;
    db::request_logs::insert_many(tx.conn(), batch).await?;
    for row in batch {
        if let Some(service) = row.mcp_service_id {
            let inc = usage.entry((row.organization_id, service, row.created_at.date_naive())).or_default();
            inc.requests += 1;
            inc.duration_ms += row.duration_ms;
            if row.success { inc.successes += 1 } else { inc.failures += 1 }
        }
    }
    let now = clock.now();
    for ((organization_id, service, day), inc) in usage {
        db::usage::add(tx.conn(), organization_id, service, day, inc, now).await?;
    }
    tx.commit().await?;
    Ok(())
}
