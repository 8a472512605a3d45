//! A typed view of the dashboard session, so no handler touches string keys.

use actix_session::{Session, SessionExt};
use actix_web::{FromRequest, HttpRequest, dev::Payload};
use futures_util::future::{Ready, ready};
use uuid::Uuid;

use super::ClientInfo;

use crate::ids::UserId;

/// Keys of the session state. The store reads them to fill its columns.
pub(crate) const SESSION_ID: &str = "sid";
pub(crate) const USER_ID: &str = "uid";
pub(crate) const IP: &str = "ip";
pub(crate) const USER_AGENT: &str = "ua";
/// Something for the next page only (`put_flash`, `take_flash`).
const FLASH: &str = "flash";
const NOTICE: &str = "notice";

pub struct WebSession(Session);

impl WebSession {
    pub fn of(req: &HttpRequest) -> WebSession {
        WebSession(req.get_session())
    }

    /// The session's public id (the primary key of its row), created on first use. CSRF tokens
    /// are derived from it.
    pub fn id(&self) -> Uuid {
        if let Some(id) = self.existing_id() {
            return id;
        }
        let id = Uuid::now_v7();
        // Inserting a Uuid cannot fail to serialize.
        let _ = self.0.insert(SESSION_ID, id);
        id
    }

    pub fn existing_id(&self) -> Option<Uuid> {
        self.0.get::<Uuid>(SESSION_ID).ok().flatten()
    }

    pub fn user_id(&self) -> Option<UserId> {
        self.0.get::<UserId>(USER_ID).ok().flatten()
    }

    /// Signs `user_id` in under a fresh session key and a fresh session id, so nothing an
    /// attacker planted before sign-in (a fixed cookie, a CSRF token) carries over.
    pub fn sign_in(&self, user_id: UserId, client: &ClientInfo) -> anyhow::Result<()> {
        for key in [SESSION_ID, USER_ID, IP, USER_AGENT] {
            self.0.remove(key);
        }
        self.0.insert(SESSION_ID, Uuid::now_v7())?;
        self.0.insert(USER_ID, user_id)?;
        if let Some(ip) = client.ip_string() {
            self.0.insert(IP, ip)?;
        }
        if let Some(ua) = &client.user_agent {
            self.0.insert(USER_AGENT, ua)?;
        }
        self.0.renew();
        Ok(())
    }

    /// Keeps `value` for the next page that takes it. A secret must be sealed first
    /// (`crypto::flash`): the state is stored in the database.
    pub fn put_flash<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        self.0.insert(FLASH, value).map_err(|e| anyhow::anyhow!("cannot keep a flash: {e}"))
    }

    /// What the previous request kept for this page, once: taking it removes it.
    pub fn take_flash<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let value = self.0.get::<T>(FLASH).ok().flatten();
        self.0.remove(FLASH);
        value
    }

    /// Says what an action did, on the next page this browser opens (after a redirect).
    pub fn put_notice(&self, text: impl Into<String>) -> anyhow::Result<()> {
        self.0.insert(NOTICE, text.into()).map_err(|e| anyhow::anyhow!("cannot keep a notice: {e}"))
    }

    /// The notice an action left for this page, once (a session without one is not written).
    pub fn take_notice(&self) -> Option<String> {
        let notice = self.0.get::<String>(NOTICE).ok().flatten()?;
        self.0.remove(NOTICE);
        Some(notice)
    }

    /// Ends the session: the store deletes its row and the cookie is removed.
    pub fn sign_out(&self) {
        self.0.purge();
    }
}

impl FromRequest for WebSession {
    type Error = actix_web::Error;
    type Future = Ready<Result<WebSession, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(WebSession::of(req)))
    }
}
