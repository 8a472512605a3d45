//! Short-lived copies of what every gateway call reads: the API key's record, the service and
//! the caller's sealed token. An entry counts for `LIFETIME` at most by the application's clock,
//! so a change made through another instance reaches this one within that time even when its
//! announcement (`changes`) is missed; a change made through any instance drops exactly the
//! entries it touched as soon as it is saved and announced (`Lookups::forget`, called through
//! `AppState::changed` by the code that made the change). The
//! checks themselves (revoked, expired, the owner's status and role, scopes) run on every call.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use secrecy::SecretString;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::db::api_keys::KeyAuth;
use crate::db::services::ServiceRow;
use crate::db::user_tokens::SealedRow;
use crate::ids::{KeyId, OrgId, UserId};

pub const LIFETIME: Duration = Duration::from_secs(5);
/// Entries per kind; the least used go first beyond it.
const CAPACITY: u64 = 10_000;

/// Something the gateway may hold a copy of has changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "of", rename_all = "snake_case")]
pub enum Change {
    /// A key was revoked or rolled.
    Key(KeyId),
    /// A member was deactivated, reactivated or given another role: their keys and tokens.
    Member(UserId),
    /// One of an organization's services, by name, was created, changed or deleted.
    Service { organization_id: OrgId, name: String },
    /// A member's service token was set, replaced or deleted.
    Token { organization_id: OrgId, user_id: UserId, name: String },
}

type KeyKey = [u8; 32];
type ServiceKey = (OrgId, String);
type TokenKey = (OrgId, UserId, String);

/// A copy and when it was made, by the application's clock.
#[derive(Clone)]
struct Stamped<T> {
    value: T,
    at: DateTime<Utc>,
}

pub struct Lookups {
    clock: SharedClock,
    /// By the key's SHA-256.
    keys: Cache<KeyKey, Stamped<KeyAuth>>,
    /// By organization and service name; `None` when there is no such service.
    services: Cache<ServiceKey, Stamped<Option<Arc<LoadedService>>>>,
    /// By organization, user and token name; `None` when the user has not set it.
    tokens: Cache<TokenKey, Stamped<Option<SealedRow>>>,
    /// Counts the changes to keys and members, so open streams check their key again at once.
    changes: watch::Sender<u64>,
}

/// A service as the gateway uses it: its row, its header values opened and its credential
/// placement parsed once per load, and whether its upstream's literal address (if it has one)
/// may be reached (`Gateway::load`).
pub struct LoadedService {
    pub row: ServiceRow,
    pub headers: Vec<(String, SecretString)>,
    /// Where the caller's own token goes, for an HTTP upstream that takes one.
    pub placement: Option<crate::catalog::definition::CredentialPlacement>,
    pub literal_address: Result<(), crate::catalog::egress::Refused>,
    /// The organization's tool policy for the service.
    pub policy: crate::catalog::tool_policy::ToolPolicy,
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
    // moka's own time bounds memory; whether an entry still counts is the clock's call.
    Cache::builder().max_capacity(CAPACITY).time_to_live(LIFETIME).support_invalidation_closures().build()
}

impl Lookups {
    pub fn new(clock: SharedClock) -> Lookups {
        Lookups { clock, keys: cache(), services: cache(), tokens: cache(), changes: watch::Sender::new(0) }
    }

    fn fresh<T: Clone>(&self, stamped: Option<Stamped<T>>) -> Option<T> {
        let stamped = stamped?;
        let age = (self.clock.now() - stamped.at).to_std().unwrap_or_default();
        (age < LIFETIME).then_some(stamped.value)
    }

    fn stamp<T>(&self, value: T) -> Stamped<T> {
        Stamped { value, at: self.clock.now() }
    }

    pub fn key(&self, hash: &KeyKey) -> Option<KeyAuth> {
        self.fresh(self.keys.get(hash))
    }

    pub fn keep_key(&self, hash: KeyKey, key: KeyAuth) {
        self.keys.insert(hash, self.stamp(key));
    }

    pub fn service(&self, organization_id: OrgId, name: &str) -> Option<Option<Arc<LoadedService>>> {
        self.fresh(self.services.get(&(organization_id, name.to_owned())))
    }

    pub fn keep_service(&self, organization_id: OrgId, name: &str, service: Option<Arc<LoadedService>>) {
        self.services.insert((organization_id, name.to_owned()), self.stamp(service));
    }

    pub fn token(&self, organization_id: OrgId, user_id: UserId, name: &str) -> Option<Option<SealedRow>> {
        self.fresh(self.tokens.get(&(organization_id, user_id, name.to_owned())))
    }

    pub fn keep_token(&self, organization_id: OrgId, user_id: UserId, name: &str, row: Option<SealedRow>) {
        self.tokens.insert((organization_id, user_id, name.to_owned()), self.stamp(row));
    }

    /// Drops exactly the copies `change` touched.
    pub fn forget(&self, change: &Change) {
        // Invalidation closures are enabled on every cache, so these cannot fail.
        match change {
            Change::Key(id) => {
                let id = *id;
                let _ = self.keys.invalidate_entries_if(move |_, key| key.value.id == id);
            }
            Change::Member(user_id) => {
                let user_id = *user_id;
                let _ = self.keys.invalidate_entries_if(move |_, key| key.value.user_id == user_id);
                let _ = self.tokens.invalidate_entries_if(move |(_, user, _), _| *user == user_id);
            }
            Change::Service { organization_id, name } => {
                self.services.invalidate(&(*organization_id, name.clone()));
            }
            Change::Token { organization_id, user_id, name } => {
                self.tokens.invalidate(&(*organization_id, *user_id, name.clone()));
            }
        }
        if matches!(change, Change::Key(_) | Change::Member(_)) {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Drops every copy (changes may have been missed).
    pub fn forget_everything(&self) {
        self.keys.invalidate_all();
        self.services.invalidate_all();
        self.tokens.invalidate_all();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes to keys and members as `forget` announces them.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
