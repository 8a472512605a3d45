//! Authenticating an API key for the gateway (`parse`, then `find` or a cached copy, then
//! `admit`): either who is calling and with which scopes, or exactly why the key is refused.

use chrono::{DateTime, Utc};

use crate::catalog::tool_policy::KeyReach;
use crate::crypto::api_key::ApiKey;
use crate::db::api_keys::KeyAuth;
use crate::db::{self, Db};
use crate::domain::{Role, Scopes};
use crate::ids::{KeyId, OrgId, UserId};

#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub key_id: KeyId,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub role: Role,
    /// The key's scopes, cut down to what the owner's current role allows.
    pub scopes: Scopes,
    /// The key's own rate limit (requests per minute), else the plan's.
    pub rate_limit_per_minute: Option<u32>,
    /// The organization's plan.
    pub plan: String,
    /// The services and tools the key is narrowed to.
    pub reach: KeyReach,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRejection {
    #[error("the API key is malformed")]
    Malformed,
    #[error("the API key is not known")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    #[error("the API key was replaced and its grace period is over")]
    Rolled,
    #[error("the API key's owner is deactivated")]
    OwnerDeactivated,
    #[error("the key store is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// The checksum refuses typos and guesses before the database is asked anything.
pub fn parse(raw: &str) -> Result<ApiKey, KeyRejection> {
    ApiKey::parse(raw).map_err(|_| KeyRejection::Malformed)
}

/// The key with this hash and its owner.
pub async fn find(db: &Db, hash: &[u8; 32]) -> Result<KeyAuth, KeyRejection> {
    let mut conn = db.acquire().await.map_err(|e| KeyRejection::Unavailable(e.into()))?;
    db::api_keys::by_hash(conn.conn(), hash)
        .await
        .map_err(|e| KeyRejection::Unavailable(e.into()))?
        .ok_or(KeyRejection::Unknown)
}

/// Decides on a found key at `now`, and records its use when due (at most once a minute;
/// `found.last_used_at` follows).
pub async fn admit(db: &Db, found: &mut KeyAuth, now: DateTime<Utc>) -> Result<KeyPrincipal, KeyRejection> {
    if found.revoked_at.is_some() {
        return Err(KeyRejection::Revoked);
    }
    if found.expires_at.is_some_and(|t| t <= now) {
        return Err(if found.rolled_at.is_some() { KeyRejection::Rolled } else { KeyRejection::Expired });
    }
    if !found.owner_active {
        return Err(KeyRejection::OwnerDeactivated);
    }
    let scopes = Scopes::parse(found.scopes.split_whitespace())
        .map_err(|e| KeyRejection::Unavailable(anyhow::anyhow!("stored scopes: {e}")))?
        .limited_to(found.owner_role);
    // Most calls skip the write: on SQLite even an UPDATE that matches nothing takes the
    // database's write lock.
    if db::last_use_due(found.last_used_at, now) {
        let mut conn = db.acquire().await.map_err(|e| KeyRejection::Unavailable(e.into()))?;
        db::api_keys::touch(conn.conn(), found.id, now)
            .await
            .map_err(|e| KeyRejection::Unavailable(e.into()))?;
        found.last_used_at = Some(now);
    }
    Ok(KeyPrincipal {
        key_id: found.id,
        organization_id: found.organization_id,
        user_id: found.user_id,
        role: found.owner_role,
        scopes,
        rate_limit_per_minute: found.rate_limit_per_minute.and_then(|n| u32::try_from(n).ok()),
        plan: found.plan.clone(),
        reach: KeyReach::from_stored(found.reach.as_deref()),
    })
}
