//! Short-lived copies of what every gateway call reads: the API key's record, the service and
//! the caller's sealed token. An entry lives `LIFETIME` at most, so a change made through another
//! instance reaches this one within that time; a change made through this instance's dashboard
//! drops every entry as soon as it is saved (`forget_all`, called by the route gate). The checks
//! themselves (revoked, expired, the owner's status and role, scopes) run on every call.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use secrecy::SecretString;
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::api_keys::KeyAuth;
use crate::db::services::ServiceRow;
use crate::db::user_tokens::SealedRow;

pub const LIFETIME: Duration = Duration::from_secs(5);
/// Entries per kind; the least used go first beyond it.
const CAPACITY: u64 = 10_000;

pub struct Lookups {
    /// By the key's SHA-256.
    pub keys: Cache<[u8; 32], KeyAuth>,
    /// By organization and service name; `None` when there is no such service.
    pub services: Cache<(Uuid, String), Option<Arc<LoadedService>>>,
    /// By organization, user and token name; `None` when the user has not set it.
    pub tokens: Cache<(Uuid, Uuid, String), Option<SealedRow>>,
    /// Counts the times everything was dropped, so open streams check their key again at once.
    changes: watch::Sender<u64>,
}

/// A service as the gateway uses it: its row, its header values opened once per load, and
/// whether its upstream's literal address (if it has one) may be reached (`Gateway::load`).
pub struct LoadedService {
    pub row: ServiceRow,
    pub headers: Vec<(String, SecretString)>,
    pub literal_address: Result<(), crate::catalog::egress::Refused>,
}

impl std::ops::Deref for LoadedService {
    type Target = ServiceRow;

    fn deref(&self) -> &ServiceRow {
        &self.row
    }
}

fn cache<K, V>() -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(CAPACITY).time_to_live(LIFETIME).build()
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups { keys: cache(), services: cache(), tokens: cache(), changes: watch::Sender::new(0) }
    }
}

impl Lookups {
    /// Drops every entry: something the gateway reads may have changed.
    pub fn forget_all(&self) {
        self.keys.invalidate_all();
        self.services.invalidate_all();
        self.tokens.invalidate_all();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes as `forget_all` announces them.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
