//! actix-session's `SessionStore` on our database: 30 minutes idle, 12 hours absolute.

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as CookieDuration;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::session::{IP, SESSION_ID, USER_AGENT, USER_ID};
use crate::clock::SharedClock;
use crate::db::{self, Db};

pub const IDLE_TIMEOUT: Duration = Duration::minutes(30);
pub const ABSOLUTE_TIMEOUT: Duration = Duration::hours(12);
/// `last_seen_at` is written at most this often, so reads stay reads.
const TOUCH_INTERVAL: Duration = Duration::seconds(60);

type State = HashMap<String, String>;

#[derive(Clone)]
pub struct DbSessionStore {
    db: Db,
    clock: SharedClock,
}

impl DbSessionStore {
    pub fn new(db: Db, clock: SharedClock) -> DbSessionStore {
        DbSessionStore { db, clock }
    }

    async fn insert(&self, state: &State) -> anyhow::Result<SessionKey> {
        let now = self.clock.now();
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)?;
        let key = URL_SAFE_NO_PAD.encode(raw);
        let hash = key_hash(&key);
        let json = serde_json::to_string(state)?;
        let ip = field::<String>(state, IP);
        let user_agent = field::<String>(state, USER_AGENT);
        let row = db::sessions::NewSession {
            id: field(state, SESSION_ID).unwrap_or_else(Uuid::now_v7),
            key_hash: &hash,
            user_id: field(state, USER_ID),
            state: &json,
            ip: ip.as_deref(),
            user_agent: user_agent.as_deref(),
            expires_at: expires_at(now, now),
        };
        db::sessions::insert(self.db.acquire().await?.conn(), row, now).await?;
        Ok(SessionKey::try_from(key)?)
    }
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn field<T: serde::de::DeserializeOwned>(state: &State, name: &str) -> Option<T> {
    state.get(name).and_then(|v| serde_json::from_str(v).ok())
}

/// When a session seen at `last_seen` and created at `created` stops being valid.
fn expires_at(created: DateTime<Utc>, last_seen: DateTime<Utc>) -> DateTime<Utc> {
    (last_seen + IDLE_TIMEOUT).min(created + ABSOLUTE_TIMEOUT)
}

impl SessionStore for DbSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let now = self.clock.now();
        let hash = key_hash(session_key.as_ref());
        let mut conn = self.db.acquire().await.map_err(|e| LoadError::Other(e.into()))?;
        let Some(row) = db::sessions::find_by_key_hash(conn.conn(), &hash)
            .await
            .map_err(|e| LoadError::Other(e.into()))?
        else {
            return Ok(None);
        };
        if now >= expires_at(row.created_at, row.last_seen_at) {
            db::sessions::delete_by_id(conn.conn(), row.id).await.map_err(|e| LoadError::Other(e.into()))?;
            return Ok(None);
        }
        if now - row.last_seen_at >= TOUCH_INTERVAL {
            db::sessions::touch(conn.conn(), row.id, now, expires_at(row.created_at, now))
                .await
                .map_err(|e| LoadError::Other(e.into()))?;
        }
        serde_json::from_str(&row.state).map(Some).map_err(|e| LoadError::Deserialization(e.into()))
    }

    async fn save(&self, state: State, _ttl: &CookieDuration) -> Result<SessionKey, SaveError> {
        self.insert(&state).await.map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        mut state: State,
        _ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let hash = key_hash(session_key.as_ref());
        let json = serde_json::to_string(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let mut conn = self.db.acquire().await.map_err(|e| UpdateError::Other(e.into()))?;
        let updated = db::sessions::update_state(conn.conn(), &hash, field(&state, USER_ID), &json)
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        if updated {
            return Ok(session_key);
        }
        // The session was ended while this request ran: start over signed out, never revive it.
        state.remove(USER_ID);
        self.insert(&state).await.map_err(UpdateError::Other)
    }

    async fn update_ttl(&self, _key: &SessionKey, _ttl: &CookieDuration) -> Result<(), anyhow::Error> {
        // Idle time is tracked by `load`, which touches the row at most once a minute.
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let hash = key_hash(session_key.as_ref());
        db::sessions::delete_by_key_hash(self.db.acquire().await?.conn(), &hash).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_or_too_old() {
        let created = Utc::now();
        assert_eq!(expires_at(created, created), created + IDLE_TIMEOUT);
        let late = created + Duration::hours(11) + Duration::minutes(50);
        assert_eq!(expires_at(created, late), created + ABSOLUTE_TIMEOUT);
    }
}
