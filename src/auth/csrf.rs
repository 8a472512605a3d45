//! CSRF tokens bound to the session: an HMAC of the session's id under a key derived from the
//! secret key. Nothing is stored, and a new session after sign-in gets a new token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

pub const FORM_FIELD: &str = "csrf_token";
pub const HEADER: &str = "X-CSRF-Token";

pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    pub fn new(bytes: [u8; 32]) -> CsrfKey {
        CsrfKey(bytes)
    }

    fn mac(&self, session_id: Uuid) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"csrf:");
        mac.update(session_id.as_bytes());
        mac
    }

    pub fn token(&self, session_id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(session_id).finalize().into_bytes())
    }

    /// Constant-time check of a token presented with a request.
    pub fn verify(&self, session_id: Uuid, token: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(token.trim()) {
            Ok(tag) => self.mac(session_id).verify_slice(&tag).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_the_session_and_the_key() {
        let key = CsrfKey::new([7; 32]);
        let sid = Uuid::now_v7();
        let token = key.token(sid);
        assert!(key.verify(sid, &token));
        assert!(!key.verify(Uuid::now_v7(), &token), "another session's token");
        assert!(!CsrfKey::new([8; 32]).verify(sid, &token), "a token made with another key");
        let mut tampered = token.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        assert!(!key.verify(sid, std::str::from_utf8(&tampered).unwrap()));
        assert!(!key.verify(sid, ""));
    }
}
