//! The background upkeep runs once per period across all the instances that share a database:
//! an instance claims a run by moving `upkeep_runs.ran_at` forward when the last run is a period
//! old; on PostgreSQL it also holds an advisory lock for the whole run, so that a run that takes
//! longer than a period is never joined by another.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Db, Tx};
use crate::{execute_one, on_conn};

const TASK: &str = "upkeep";
/// The advisory lock's key: "mcpupkep" in ASCII.
const LOCK: i64 = 0x6d63_7075_706b_6570;

/// A run of the upkeep this instance claimed. On PostgreSQL the claim and its lock are a
/// transaction's, held until `done` (which a run calls whether or not it succeeded: a failed
/// run is tried again next period).
pub struct Claim {
    held: Option<Tx>,
}

impl Claim {
    pub async fn done(self) -> sqlx::Result<()> {
        match self.held {
            Some(tx) => tx.commit().await,
            None => Ok(()),
        }
    }
}

/// Claims the run due at `now` when none ran within `every` and none is running; `None` when
/// another instance has it.
pub async fn claim(db: &Db, now: DateTime<Utc>, every: Duration) -> sqlx::Result<Option<Claim>> {
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    let claim = "INSERT INTO upkeep_runs (task, ran_at) VALUES ($1, $2) \
                 ON CONFLICT (task) DO UPDATE SET ran_at = excluded.ran_at WHERE upkeep_runs.ran_at <= $3";
    let (ran_at, due) = (now.timestamp(), (now - every).timestamp());
    match db {
        // One instance: the claim only spaces the runs (a transaction held through a run would
        // keep SQLite's writers out).
        Db::Sqlite(_) => {
            let mut conn = db.acquire().await?;
            let claimed = execute_one!(conn.conn(), claim, TASK, ran_at, due)?;
            Ok(claimed.then_some(Claim { held: None }))
        }
        Db::Postgres(_) => {
            let mut tx = db.begin().await?;
            let locked: bool = on_conn!(tx.conn(), c => sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(LOCK)
                .fetch_one(c)
                .await)?;
            let claimed = locked && execute_one!(tx.conn(), claim, TASK, ran_at, due)?;
            if !claimed {
                // Ended now, not when the pool next uses the connection: the lock goes with it.
                tx.commit().await?;
                return Ok(None);
            }
            Ok(Some(Claim { held: Some(tx) }))
        }
    }
}
