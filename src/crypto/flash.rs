//! Secrets shown once on the page a form redirects to (a new API key): sealed (AES-256-GCM) into
//! the session's state, which is stored in the database, and bound to that session, so the
//! plain text is never at rest and only that browser's next page can show it.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

const NONCE_LEN: usize = 12;

pub struct FlashKey(Aes256Gcm);

impl FlashKey {
    pub fn new(key: &[u8; 32]) -> FlashKey {
        FlashKey(Aes256Gcm::new_from_slice(key).expect("32-byte key"))
    }

    fn aad(session_id: Uuid) -> Vec<u8> {
        format!("mcp-platform flash v1|{session_id}").into_bytes()
    }

    pub fn seal(&self, session_id: Uuid, secret: &str) -> String {
        let nonce = super::random_bytes::<NONCE_LEN>();
        let payload = Payload { msg: secret.as_bytes(), aad: &Self::aad(session_id) };
        let sealed = self
            .0
            .encrypt(&Nonce::<Aes256Gcm>::from(nonce), payload)
            .expect("AES-GCM encryption of a short message cannot fail");
        STANDARD.encode([&nonce[..], &sealed].concat())
    }

    /// The secret, if `sealed` was sealed for this session with this key.
    pub fn open(&self, session_id: Uuid, sealed: &str) -> Option<String> {
        let bytes = STANDARD.decode(sealed).ok()?;
        let (nonce, body) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).ok()?;
        let plain = self.0.decrypt(&nonce, Payload { msg: body, aad: &Self::aad(session_id) }).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flash_opens_only_in_its_own_session() {
        let key = FlashKey::new(&[5; 32]);
        let session = Uuid::now_v7();
        let sealed = key.seal(session, "mcp_sk_secret");
        assert!(!sealed.contains("mcp_sk_secret"));
        assert_eq!(key.open(session, &sealed).as_deref(), Some("mcp_sk_secret"));
        assert_eq!(key.open(Uuid::now_v7(), &sealed), None);
        assert_eq!(FlashKey::new(&[6; 32]).open(session, &sealed), None);
    }
}
