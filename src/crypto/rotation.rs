//! Re-sealing every stored service token under the current key, in batches (one transaction
//! each) while the platform keeps serving. Safe to interrupt and run again: each batch commits
//! on its own, and a row changed meanwhile (a user replaced their token) is left as it is.

use anyhow::Context;
use uuid::Uuid;

use super::keyring::{Binding, Keyring, seal_with};
use crate::clock::Clock;
use crate::db::{self, Db};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub resealed: u64,
    /// Rows that could not be opened (logged); they stay under their old key.
    pub failed: u64,
    /// Rows still under an older key when the run stopped.
    pub remaining: i64,
}

/// Re-seals rows under older keys with the current key. `max_batches` stops early (to resume
/// later); `None` runs to the end.
pub async fn reseal_tokens(
    db: &Db,
    keyring: &Keyring,
    clock: &dyn Clock,
    batch_size: i64,
    max_batches: Option<usize>,
) -> anyhow::Result<Progress> {
    let (current, cipher) = keyring.current(db, clock.now()).await?;
    let mut progress = Progress::default();
    let mut after = Uuid::nil();
    let mut batches = 0;
    loop {
        if max_batches.is_some_and(|max| batches >= max) {
            break;
        }
        let mut tx = db.begin().await?;
        let rows = db::user_tokens::sealed_under_other_keys(tx.conn(), &current, after, batch_size).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in &rows {
            let binding = Binding {
                organization_id: row.organization_id,
                user_id: row.user_id,
                service_name: &row.service_name,
            };
            let plaintext = match keyring.open(db, &row.ciphertext, binding).await {
                Ok(plaintext) => plaintext,
                Err(e) => {
                    tracing::error!(token = %row.id, error = %e, "cannot open a stored token; left under its old key");
                    progress.failed += 1;
                    continue;
                }
            };
            let sealed = seal_with(
                &cipher,
                &current,
                secrecy::ExposeSecret::expose_secret(&plaintext).as_bytes(),
                binding,
            );
            if db::user_tokens::replace_sealed(
                tx.conn(),
                row.id,
                &row.key_id,
                &row.ciphertext,
                &sealed,
                &current,
            )
            .await?
            {
                progress.resealed += 1;
            }
        }
        tx.commit().await.context("cannot commit a re-sealed batch")?;
        batches += 1;
    }
    progress.remaining =
        db::user_tokens::count_under_other_keys(db.acquire().await?.conn(), &current).await?;
    Ok(progress)
}
