//! Changes made through one instance reach the copies every other instance keeps (`cache`): on
//! PostgreSQL each change is announced with `NOTIFY` on one channel, and every instance
//! `LISTEN`s to it and drops what the change touched. A notification missed while an instance's
//! listening connection was down is covered twice: all copies are dropped when it is back, and
//! a copy never counts for longer than `cache::LIFETIME` anyway. SQLite serves one instance and
//! announces nothing.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use super::cache::Change;
use super::sessions::Gateway;
use crate::db::Db;

/// The channel changes are announced on.
const CHANNEL: &str = "mcp_platform_changes";
/// How long the listener waits before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Tells every instance (this one too) that `change` was saved.
pub async fn announce(db: &Db, change: &Change) {
    let Db::Postgres(pool) = db else { return };
    let payload = serde_json::to_string(change).expect("a change serializes");
    let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(pool).await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot announce a change to the other instances; their copies expire within 5 s");
    }
}

/// Listens, until the pool is closed, for the changes any instance announces, and drops the
/// copies of `gateway` each one touched.
pub fn listen(db: &Db, gateway: Arc<Gateway>) {
    let Db::Postgres(pool) = db else { return };
    let pool = pool.clone();
    tokio::spawn(async move {
        loop {
            match listen_once(&pool, &gateway).await {
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "not listening for other instances' changes; trying again")
                }
                Ok(()) => {}
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

async fn listen_once(pool: &sqlx::PgPool, gateway: &Gateway) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // Whatever was announced before this point may have been missed.
    gateway.forget_everything();
    loop {
        match listener.try_recv().await? {
            Some(notification) => match serde_json::from_str::<Change>(notification.payload()) {
                Ok(change) => gateway.forget_changed(&change),
                Err(e) => tracing::warn!(error = %e, "an announced change could not be read"),
            },
            // The connection was lost and is open again: anything may have been missed.
            None => gateway.forget_everything(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, OrgId, UserId};

    #[test]
    fn every_change_is_announced_and_read_back_as_it_was() {
        let (organization_id, user_id) = (OrgId::new(), UserId::new());
        for change in [
            Change::Key(KeyId::new()),
            Change::Member(user_id),
            Change::Service { organization_id, name: "github".into() },
            Change::Token { organization_id, user_id, name: "jira".into() },
        ] {
            let payload = serde_json::to_string(&change).unwrap();
            assert!(payload.len() < 8000, "NOTIFY takes at most 8000 bytes");
            assert_eq!(serde_json::from_str::<Change>(&payload).unwrap(), change, "{payload}");
        }
    }
}
