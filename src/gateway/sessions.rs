//! The gateway's shared state: the upstream connection pool, the stdio children, the cached
//! lookups, and the live client sessions, each bound to the key and service that opened it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use tokio::sync::{broadcast, watch};

use secrecy::SecretString;

use super::cache::{Change, LoadedService, Lookups};
use super::refusal::{NOT_FOUND, Refusal};
use super::stdio::{Process, StdioLimits, StdioPool};
use crate::app::AppState;
use crate::catalog::definition::CredentialPlacement;
use crate::catalog::egress::{GuardedResolver, Refused, UpstreamPolicy};
use crate::catalog::tool_policy::ToolPolicy;
use crate::clock::SharedClock;
use crate::db::services::ServiceRow;
use crate::ids::{KeyId, ServiceId, UserId};

/// A client session of the gateway, bound to the API key that opened it.
#[derive(Clone)]
pub(super) struct GatewaySession {
    pub(super) key_id: KeyId,
    pub(super) service_id: ServiceId,
    pub(super) upstream: UpstreamSession,
    pub(super) last_used: std::time::Instant,
}

/// Whose the gateway's own session for 2026-07-28 clients is, for which service, and for which
/// declared capabilities (a digest keyed by this process, so that no client can choose one):
/// one per key for an HTTP upstream, one per member for a stdio child (the cap per member
/// counts children). No client can name it: it is not in the client sessions' table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct BridgeKey {
    pub(super) owner: Owner,
    pub(super) service_id: ServiceId,
    pub(super) declared: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Owner {
    Key(KeyId),
    User(UserId),
}

/// The gateway's own session with a legacy upstream, and that upstream's `initialize` result.
struct OwnSession {
    upstream: UpstreamSession,
    initialized: Initialized,
    last_used: std::time::Instant,
}

/// A bridged call whose upstream asked the client something: kept, with its answer half read,
/// until the client's retry brings the answer (`bridge`).
pub(super) struct Awaiting {
    pub(super) key_id: Option<KeyId>,
    pub(super) service_id: ServiceId,
    pub(super) upstream: UpstreamSession,
    /// What was asked, by the key the client answers under, with the upstream's request id.
    pub(super) asked: Vec<(String, serde_json::Value)>,
    /// The gateway's id of the call upstream.
    pub(super) bridged_id: serde_json::Value,
    pub(super) reader: super::bridge::Reader,
    pub(super) status: StatusCode,
    pub(super) since: std::time::Instant,
}

/// The longest a call is kept for its client's answer (the service's timeout, which covers the
/// whole call, usually ends it sooner), and how many may wait.
const AWAIT_LIMIT: Duration = Duration::from_secs(10 * 60);
const AWAITING_MAX: usize = 10_000;

/// What an upstream speaks, as its answer to `server/discover` shows.
#[derive(Clone)]
pub(super) enum Speaks {
    /// 2025-11-25 and before only: no modern answer to `server/discover`.
    Legacy,
    /// 2026-07-28; `dual` when it also serves the older revisions. With its `DiscoverResult`.
    Modern { dual: bool, discovered: Initialized },
}

/// A service's tools that mark parameters for `Mcp-Param-*` headers: their input schemas by name.
pub(super) type MarkedTools = Arc<HashMap<String, serde_json::Value>>;

/// How long a service's marked tools are used before its tool list is asked for again (a
/// `HeaderMismatch` from the upstream asks at once).
const MARKED_TOOLS_TTL: Duration = Duration::from_secs(10 * 60);

/// An upstream's `initialize` (or `server/discover`) result: its capabilities, identity and
/// instructions.
pub(super) type Initialized = Arc<serde_json::Map<String, serde_json::Value>>;

/// The gateway's own session with a legacy upstream for 2026-07-28 clients (`bridge`).
#[derive(Clone)]
pub(super) struct Bridged {
    pub(super) key: BridgeKey,
    pub(super) upstream: UpstreamSession,
    pub(super) initialized: Initialized,
}

#[derive(Clone)]
pub(super) enum UpstreamSession {
    /// An HTTP upstream's own session id, if it uses one (shared by each call in the session).
    Http(Option<Arc<str>>),
    /// The child process serving this session.
    Stdio(Arc<Process>),
    /// No session upstream: a 2025-11-25 client's session with an upstream of 2026-07-28 only,
    /// whose requests the gateway sends as stateless ones with what the client declared.
    Stateless(Arc<Declared>),
}

/// What a 2025-11-25 client declared at `initialize`, sent along with each of its requests to
/// an upstream of 2026-07-28 only, and the resources it subscribed to since.
pub(super) struct Declared {
    pub(super) capabilities: serde_json::Value,
    pub(super) client_info: serde_json::Value,
    pub(super) subscriptions: watch::Sender<Subscriptions>,
}

/// The resources a 2025-11-25 client subscribed to (`resources/subscribe`), which its GET
/// stream listens for upstream (`subscriptions/listen`).
#[derive(Default)]
pub(super) struct Subscriptions {
    pub(super) resources: std::collections::BTreeSet<String>,
    /// Counts the changes.
    pub(super) version: u64,
    /// The version the upstream listens for on the session's open stream; `None` with none open.
    pub(super) listened: Option<u64>,
}

impl UpstreamSession {
    pub(super) fn http_id(&self) -> Option<&str> {
        match self {
            UpstreamSession::Http(id) => id.as_deref(),
            UpstreamSession::Stdio(_) | UpstreamSession::Stateless(_) => None,
        }
    }

    pub(super) fn process(&self) -> Option<&Arc<Process>> {
        match self {
            UpstreamSession::Stdio(process) => Some(process),
            UpstreamSession::Http(_) | UpstreamSession::Stateless(_) => None,
        }
    }
}

/// Shared by the gateway's handlers: the upstream connection pool, the stdio children and the
/// live sessions. Sessions live in this instance; the README says how to route a session to its
/// instance.
pub struct Gateway {
    /// This instance's name, which begins the ids of its sessions.
    instance: String,
    /// For the operator's system services.
    client: reqwest::Client,
    /// For tenant-defined services: it connects to addresses the policy allows only.
    tenant_client: reqwest::Client,
    policy: Arc<UpstreamPolicy>,
    pub(super) sessions: Mutex<HashMap<String, GatewaySession>>,
    /// The gateway's own sessions for 2026-07-28 clients of legacy upstreams.
    bridges: Mutex<HashMap<BridgeKey, OwnSession>>,
    /// Bridged calls waiting for their clients' answers, by the `requestState` they were given.
    awaiting: Mutex<HashMap<String, Awaiting>>,
    /// What the upstreams of the gateway's own sessions send outside any request (their GET
    /// streams), by session, for the subscriptions of the clients of those sessions.
    notifications: Mutex<HashMap<BridgeKey, broadcast::WeakSender<Arc<serde_json::Value>>>>,
    pub lookups: Lookups,
    /// Each service's latest `initialize` result, for `server/discover`.
    discovered: moka::sync::Cache<ServiceId, Initialized>,
    /// What each HTTP service's upstream speaks, from its answer to `server/discover`, and when
    /// it answered. Read on every call of a 2026-07-28 client: a plain map (one entry per
    /// service asked) costs a fraction of a cache that counts its reads.
    speaks: RwLock<HashMap<ServiceId, (Instant, Speaks)>>,
    /// For each service of 2026-07-28 only: its tools that mark parameters for headers.
    marked_tools: moka::sync::Cache<ServiceId, MarkedTools>,
    pub stdio: StdioPool,
    /// Set when the platform stops: open server-to-client streams end, so the graceful stop
    /// does not wait for them.
    pub(super) stopping: watch::Sender<bool>,
}

/// Sessions unused this long are forgotten (the client re-initializes on the 404).
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);

impl Gateway {
    pub fn new(limits: StdioLimits, policy: UpstreamPolicy, clock: SharedClock, instance: &str) -> Gateway {
        let policy = Arc::new(policy);
        // Redirects are never followed: the client gets the upstream's answer as it is.
        let builder = || {
            reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(90))
                .redirect(reqwest::redirect::Policy::none())
        };
        let client = builder().build().expect("an HTTP client without TLS builds");
        // No proxy either: a proxy would resolve the name itself, past the policy.
        let tenant_client = builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
            .build()
            .expect("an HTTP client without TLS builds");
        Gateway {
            instance: instance.to_owned(),
            client,
            tenant_client,
            policy,
            sessions: Mutex::new(HashMap::new()),
            bridges: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(HashMap::new()),
            notifications: Mutex::new(HashMap::new()),
            lookups: Lookups::new(clock),
            discovered: moka::sync::Cache::builder().time_to_live(super::era::DISCOVER_TTL).build(),
            speaks: RwLock::default(),
            marked_tools: moka::sync::Cache::builder().time_to_live(MARKED_TOOLS_TTL).build(),
            stdio: StdioPool::new(limits),
            stopping: watch::Sender::new(false),
        }
    }

    /// Forgets sessions idle for longer than `SESSION_IDLE` and those whose child has ended, and
    /// calls whose clients did not come back with their answers, so the tables stay bounded.
    pub fn forget_idle_sessions(&self) {
        self.awaiting.lock().expect("awaiting lock").retain(|_, a| a.since.elapsed() < AWAIT_LIMIT);
        let live = |upstream: &UpstreamSession, last_used: Instant| match upstream {
            UpstreamSession::Stdio(process) => !process.has_ended(),
            UpstreamSession::Http(_) | UpstreamSession::Stateless(_) => last_used.elapsed() < SESSION_IDLE,
        };
        let mut sessions = self.sessions.lock().expect("session table lock");
        sessions.retain(|_, s| live(&s.upstream, s.last_used));
        drop(sessions);
        self.bridges.lock().expect("bridges lock").retain(|_, s| live(&s.upstream, s.last_used));
    }

    /// Keeps a call until its client answers what its upstream asked; `false` (and the call
    /// dropped) when too many wait.
    pub(super) fn wait_for_client(&self, state: String, awaiting: Awaiting) -> bool {
        let mut waiting = self.awaiting.lock().expect("awaiting lock");
        waiting.retain(|_, a| a.since.elapsed() < AWAIT_LIMIT);
        if waiting.len() >= AWAITING_MAX {
            return false;
        }
        waiting.insert(state, awaiting);
        true
    }

    /// The call a retry resumes, if it waits under this state for this key and service.
    pub(super) fn resume(
        &self,
        state: &str,
        key_id: Option<KeyId>,
        service_id: ServiceId,
    ) -> Option<Awaiting> {
        let mut waiting = self.awaiting.lock().expect("awaiting lock");
        let mine = waiting.get(state).is_some_and(|a| {
            a.key_id == key_id && a.service_id == service_id && a.since.elapsed() < AWAIT_LIMIT
        });
        if mine { waiting.remove(state) } else { None }
    }

    /// A subscription to what the upstream of the gateway's session `key` sends outside any
    /// request, while its stream is read; else `None`, and the caller reads it and shares it.
    pub(super) fn notifications(
        &self,
        key: &BridgeKey,
    ) -> Option<broadcast::Receiver<Arc<serde_json::Value>>> {
        let mut shared = self.notifications.lock().expect("notifications lock");
        let read = shared.get(key).and_then(broadcast::WeakSender::upgrade);
        if read.is_none() {
            shared.remove(key);
        }
        read.map(|sender| sender.subscribe())
    }

    /// Shares what the upstream of session `key` sends, as its reader sends it into `sender`
    /// (the stream ends for its subscribers when the reader drops it).
    pub(super) fn share_notifications(
        &self,
        key: &BridgeKey,
        sender: &broadcast::Sender<Arc<serde_json::Value>>,
    ) {
        let mut shared = self.notifications.lock().expect("notifications lock");
        shared.retain(|_, s| s.strong_count() > 0);
        shared.insert(*key, sender.downgrade());
    }

    /// Open sessions, for the metrics: clients' own, and the gateway's own for stateless
    /// clients of legacy upstreams.
    pub fn session_counts(&self) -> (usize, usize) {
        let clients = self.sessions.lock().expect("session table lock").len();
        (clients, self.bridges.lock().expect("bridges lock").len())
    }

    /// Ends the open server-to-client streams; called first when the platform stops.
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether the platform has begun to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves when the platform begins to stop.
    pub(super) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    /// Where tenant-defined upstreams may point.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// A request to a service's upstream: a tenant's goes through the egress policy.
    pub(super) fn upstream(
        &self,
        service: &LoadedService,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Refused> {
        if service.is_system() {
            return Ok(self.client.request(method, url));
        }
        service.literal_address.clone()?;
        Ok(self.tenant_client.request(method, url))
    }

    /// A service as loaded for calls: its header values opened, its credential placement
    /// parsed and, for a tenant's, its literal address checked once (names are checked by the
    /// resolver on each connection).
    pub(super) fn load(
        &self,
        row: ServiceRow,
        headers: Vec<(String, SecretString)>,
        policy: ToolPolicy,
    ) -> Result<LoadedService, Refusal> {
        let literal_address = match (&row.upstream_url, row.is_system()) {
            (Some(url), false) => self.policy.check_literal(url),
            _ => Ok(()),
        };
        let placement = row
            .token_placement
            .as_deref()
            .map(CredentialPlacement::parse)
            .transpose()
            .map_err(|e| Refusal::unavailable(&e, "This service's credential header is misconfigured"))?;
        Ok(LoadedService { row, headers, placement, literal_address, policy })
    }

    /// Registers a client session for the upstream session an `initialize` of `key` opened;
    /// its id, for the client.
    pub(super) fn open(&self, key_id: KeyId, service_id: ServiceId, upstream: UpstreamSession) -> String {
        // The instance's name first: a load balancer sends the session's requests here.
        let gateway_id = format!("{}.{}", self.instance, crate::crypto::random_token());
        let entry = GatewaySession { key_id, service_id, upstream, last_used: std::time::Instant::now() };
        self.sessions.lock().expect("session table lock").insert(gateway_id.clone(), entry);
        gateway_id
    }

    /// Registers the gateway's own session for 2026-07-28 clients, unless one was registered
    /// under its key meanwhile: then that one, to use instead.
    pub(super) fn open_bridge(&self, bridged: Bridged) -> Result<(), Bridged> {
        self.discovered.insert(bridged.key.service_id, bridged.initialized.clone());
        let mut bridges = self.bridges.lock().expect("bridges lock");
        if let Some(existing) = bridges.get(&bridged.key) {
            return Err(Bridged {
                key: bridged.key,
                upstream: existing.upstream.clone(),
                initialized: existing.initialized.clone(),
            });
        }
        let entry = OwnSession {
            upstream: bridged.upstream,
            initialized: bridged.initialized,
            last_used: std::time::Instant::now(),
        };
        bridges.insert(bridged.key, entry);
        Ok(())
    }

    /// Drops the copies `change` touched; a changed service is asked again what it speaks.
    pub fn forget_changed(&self, change: &Change) {
        self.lookups.forget(change);
        if let Change::Service { .. } = change {
            // Kept by service id, which the change does not carry; changes of services are rare.
            self.speaks.write().expect("speaks lock").clear();
            self.discovered.invalidate_all();
            self.marked_tools.invalidate_all();
        }
    }

    /// Drops every copy: announcements of changes may have been missed.
    pub fn forget_everything(&self) {
        self.lookups.forget_everything();
        self.speaks.write().expect("speaks lock").clear();
        self.discovered.invalidate_all();
        self.marked_tools.invalidate_all();
    }

    /// What the service's upstream was found to speak, in words for its page; `None` when it
    /// has not been asked within `era::DISCOVER_TTL`.
    pub fn speaks_in_words(&self, service_id: ServiceId) -> Option<&'static str> {
        Some(match self.speaks(service_id)? {
            Speaks::Legacy => "2025-11-25 and earlier only (the gateway bridges 2026-07-28 clients)",
            Speaks::Modern { dual: true, .. } => "2026-07-28 and 2025-11-25",
            Speaks::Modern { dual: false, .. } => "2026-07-28 only (the gateway bridges 2025-11-25 clients)",
        })
    }

    /// What the service's upstream was found to speak within `era::DISCOVER_TTL`.
    pub(super) fn speaks(&self, service_id: ServiceId) -> Option<Speaks> {
        let speaks = self.speaks.read().expect("speaks lock");
        let (asked, speaks) = speaks.get(&service_id)?;
        (asked.elapsed() < super::era::DISCOVER_TTL).then(|| speaks.clone())
    }

    pub(super) fn remember_speaks(&self, service_id: ServiceId, speaks: Speaks) {
        self.speaks.write().expect("speaks lock").insert(service_id, (Instant::now(), speaks));
    }

    /// The input schemas of the service's tools that mark parameters for `Mcp-Param-*` headers,
    /// by tool name, as its latest whole tool list had them.
    pub(super) fn marked_tools(&self, service_id: ServiceId) -> Option<MarkedTools> {
        self.marked_tools.get(&service_id)
    }

    pub(super) fn remember_marked_tools(&self, service_id: ServiceId, marked: MarkedTools) {
        self.marked_tools.insert(service_id, marked);
    }

    /// The gateway's own session for 2026-07-28 clients under `key`, while its upstream is
    /// there.
    pub(super) fn bridged(&self, key: BridgeKey) -> Option<Bridged> {
        let mut bridges = self.bridges.lock().expect("bridges lock");
        let session = bridges.get_mut(&key)?;
        if session.upstream.process().is_some_and(|process| process.has_ended()) {
            bridges.remove(&key);
            return None;
        }
        session.last_used = std::time::Instant::now();
        Some(Bridged { key, upstream: session.upstream.clone(), initialized: session.initialized.clone() })
    }

    /// The service's `initialize` result seen within `era::DISCOVER_TTL`.
    pub(super) fn discovered(&self, service_id: ServiceId) -> Option<Initialized> {
        self.discovered.get(&service_id)
    }

    pub(super) fn forget(&self, gateway_id: &str) {
        self.sessions.lock().expect("session table lock").remove(gateway_id);
    }

    /// Forgets the gateway's own session under `key` (its upstream forgot it).
    pub(super) fn forget_bridge(&self, key: &BridgeKey) {
        self.bridges.lock().expect("bridges lock").remove(key);
    }
}

/// The session the client names, if it belongs to this key and service and its upstream is
/// still there; otherwise 404 so the client starts a new one.
pub(super) fn session(
    state: &AppState,
    id: Option<&str>,
    key: KeyId,
    service: ServiceId,
) -> Result<Option<(String, GatewaySession)>, Refusal> {
    let Some(id) = id else { return Ok(None) };
    let mut sessions = state.gateway.sessions.lock().expect("session table lock");
    match sessions.get_mut(id) {
        Some(s) if s.key_id == key && s.service_id == service => {
            if let UpstreamSession::Stdio(process) = &s.upstream
                && process.has_ended()
            {
                sessions.remove(id);
                return Err(Refusal::process_ended());
            }
            s.last_used = std::time::Instant::now();
            Ok(Some((id.to_owned(), s.clone())))
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "Session not found; initialize a new one")),
    }
}
