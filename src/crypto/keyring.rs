//! Sealed service tokens: AES-256-GCM with a random 96-bit nonce per sealing, associated data
//! binding the ciphertext to its row (organization, user, service name), and the id of the key
//! inside the ciphertext so keys can rotate while the platform runs.
//!
//! Sealed format: `[1][n][key id: n bytes][nonce: 12][ciphertext + tag]`.
//! Token keys live in the database, each wrapped under a key derived from the secret key, so
//! every instance sees a rotation; unwrapped keys are cached (keys never change once made).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::db::{self, Db};
use crate::ids::{OrgId, ServiceId, UserId};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// What a sealed value is bound to: the associated data that makes a ciphertext open only for
/// its own row, and the key id written in its header, so neither can be swapped.
pub trait Bound: Copy {
    fn associated_data(&self, key_id: &str) -> Vec<u8>;
}

/// The row a user's service token belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub service_name: &'a str,
}

impl Bound for Binding<'_> {
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        format!(
            "mcp-platform token v1|{key_id}|{}|{}|{}",
            self.organization_id, self.user_id, self.service_name
        )
        .into_bytes()
    }
}

/// The service and header name a service's header value belongs to.
#[derive(Debug, Clone, Copy)]
pub struct HeaderBinding<'a> {
    pub service_id: ServiceId,
    pub name: &'a str,
}

impl Bound for HeaderBinding<'_> {
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        format!("mcp-platform header v1|{key_id}|{}|{}", self.service_id, self.name.to_ascii_lowercase())
            .into_bytes()
    }
}

/// Stored secrets this long or longer show their last 4 characters; shorter ones show none,
/// since 4 characters would give too much of them away.
const SHOW_LAST4_FROM: usize = 16;

/// The end of a secret that may be shown to tell it apart: its last 4 characters, or nothing.
pub fn visible_tail(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= SHOW_LAST4_FROM { chars[chars.len() - 4..].iter().collect() } else { String::new() }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sealed token is malformed")]
    Malformed,
    #[error("sealed token names unknown key {0}")]
    UnknownKey(String),
    #[error("sealed token does not open: tampered, or moved from another row")]
    Rejected,
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// Seals `plaintext` with `cipher`, naming `key_id`.
pub fn seal_with(cipher: &Aes256Gcm, key_id: &str, plaintext: &[u8], binding: impl Bound) -> Vec<u8> {
    let nonce_bytes = super::random_bytes::<NONCE_LEN>();
    let nonce = Nonce::<Aes256Gcm>::from(nonce_bytes);
    let aad = binding.associated_data(key_id);
    let ciphertext = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
        .expect("AES-GCM encryption of a short message cannot fail");
    let mut out = Vec::with_capacity(2 + key_id.len() + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.push(u8::try_from(key_id.len()).expect("key ids are short"));
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    out
}

/// The key id a sealed token names, without opening it.
pub fn key_id_of(sealed: &[u8]) -> Result<&str, OpenError> {
    Ok(split(sealed)?.0)
}

fn split(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), OpenError> {
    let [version, len, rest @ ..] = sealed else { return Err(OpenError::Malformed) };
    let len = *len as usize;
    if *version != VERSION || rest.len() < len + NONCE_LEN + 16 {
        return Err(OpenError::Malformed);
    }
    let key_id = std::str::from_utf8(&rest[..len]).map_err(|_| OpenError::Malformed)?;
    Ok((key_id, &rest[len..len + NONCE_LEN], &rest[len + NONCE_LEN..]))
}

pub fn open_with(cipher: &Aes256Gcm, sealed: &[u8], binding: impl Bound) -> Result<Vec<u8>, OpenError> {
    let (key_id, nonce, ciphertext) = split(sealed)?;
    let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| OpenError::Malformed)?;
    let aad = binding.associated_data(key_id);
    cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: &aad }).map_err(|_| OpenError::Rejected)
}

/// Token keys, wrapped in the database under a key-encryption key derived from the secret key.
pub struct Keyring {
    kek: Aes256Gcm,
    cache: RwLock<HashMap<String, Arc<Aes256Gcm>>>,
}

pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl Keyring {
    pub fn new(key_encryption_key: &[u8; 32]) -> Keyring {
        Keyring {
            kek: Aes256Gcm::new_from_slice(key_encryption_key).expect("32-byte key"),
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn wrap_binding(key_id: &str) -> Vec<u8> {
        format!("mcp-platform token key v1|{key_id}").into_bytes()
    }

    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> anyhow::Result<Arc<Aes256Gcm>> {
        if let Some(cipher) = self.cache.read().expect("keyring lock").get(key_id) {
            return Ok(cipher.clone());
        }
        if wrapped.len() < NONCE_LEN + 16 {
            return Err(anyhow!("wrapped key {key_id} is malformed"));
        }
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce =
            Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| anyhow!("wrapped key {key_id} is malformed"))?;
        let aad = Self::wrap_binding(key_id);
        let raw = self
            .kek
            .decrypt(&nonce, Payload { msg: body, aad: &aad })
            .map_err(|_| anyhow!("token key {key_id} does not unwrap: is this the same secret key?"))?;
        let cipher = Arc::new(
            Aes256Gcm::new_from_slice(&raw).map_err(|_| anyhow!("token key {key_id} has a bad length"))?,
        );
        self.cache.write().expect("keyring lock").insert(key_id.to_owned(), cipher.clone());
        Ok(cipher)
    }

    /// Makes a new key the current one and returns its id.
    pub async fn add_key(&self, db: &Db, now: DateTime<Utc>) -> anyhow::Result<String> {
        let key_id = format!("k{}", Uuid::now_v7().simple());
        let raw = super::random_bytes::<32>();
        let nonce_bytes = super::random_bytes::<NONCE_LEN>();
        let aad = Self::wrap_binding(&key_id);
        let wrapped = self
            .kek
            .encrypt(&Nonce::<Aes256Gcm>::from(nonce_bytes), Payload { msg: &raw, aad: &aad })
            .map_err(|_| anyhow!("cannot wrap a new token key"))?;
        let mut stored = nonce_bytes.to_vec();
        stored.extend_from_slice(&wrapped);
        db::token_keys::insert(db.acquire().await?.conn(), &key_id, &stored, now).await?;
        Ok(key_id)
    }

    /// The current key, made on first use.
    pub async fn current(&self, db: &Db, now: DateTime<Utc>) -> anyhow::Result<(String, Arc<Aes256Gcm>)> {
        let found = db::token_keys::current(db.acquire().await?.conn()).await?;
        let (key_id, wrapped) = match found {
            Some(row) => row,
            None => {
                self.add_key(db, now).await?;
                db::token_keys::current(db.acquire().await?.conn())
                    .await?
                    .context("token key just added is missing")?
            }
        };
        let cipher = self.unwrap(&key_id, &wrapped)?;
        Ok((key_id, cipher))
    }

    pub async fn seal(
        &self,
        db: &Db,
        now: DateTime<Utc>,
        plaintext: &str,
        binding: impl Bound,
    ) -> anyhow::Result<Sealed> {
        let (key_id, cipher) = self.current(db, now).await?;
        let bytes = seal_with(&cipher, &key_id, plaintext.as_bytes(), binding);
        Ok(Sealed { key_id, bytes })
    }

    pub async fn open(&self, db: &Db, sealed: &[u8], binding: impl Bound) -> Result<SecretString, OpenError> {
        let key_id = key_id_of(sealed)?;
        let cached = self.cache.read().expect("keyring lock").get(key_id).cloned();
        let cipher = match cached {
            Some(cipher) => cipher,
            None => {
                let mut conn = db.acquire().await.map_err(anyhow::Error::from)?;
                let wrapped = db::token_keys::find(conn.conn(), key_id)
                    .await
                    .map_err(anyhow::Error::from)?
                    .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?;
                self.unwrap(key_id, &wrapped)?
            }
        };
        let plaintext = open_with(&cipher, sealed, binding)?;
        String::from_utf8(plaintext).map(SecretString::from).map_err(|_| OpenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Id;

    fn binding(service: &str) -> Binding<'_> {
        Binding {
            organization_id: OrgId::from_uuid(Uuid::from_u128(1)),
            user_id: UserId::from_uuid(Uuid::from_u128(2)),
            service_name: service,
        }
    }

    fn cipher() -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&[9u8; 32]).unwrap()
    }

    #[test]
    fn sealing_round_trips_and_names_its_key() {
        let sealed = seal_with(&cipher(), "k1", b"ghp_example", binding("github"));
        assert_eq!(key_id_of(&sealed).unwrap(), "k1");
        assert_eq!(open_with(&cipher(), &sealed, binding("github")).unwrap(), b"ghp_example");
    }

    #[test]
    fn the_same_plaintext_seals_differently_each_time() {
        let a = seal_with(&cipher(), "k1", b"ghp_example", binding("github"));
        let b = seal_with(&cipher(), "k1", b"ghp_example", binding("github"));
        assert_ne!(a, b);
    }

    #[test]
    fn tampering_with_any_byte_is_detected() {
        let sealed = seal_with(&cipher(), "k1", b"ghp_example", binding("github"));
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(open_with(&cipher(), &tampered, binding("github")).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let sealed = seal_with(&cipher(), "k1", b"ghp_example", binding("github"));
        assert!(matches!(open_with(&cipher(), &sealed, binding("gitlab")), Err(OpenError::Rejected)));
        let other_user = Binding { user_id: UserId::from_uuid(Uuid::from_u128(3)), ..binding("github") };
        assert!(matches!(open_with(&cipher(), &sealed, other_user), Err(OpenError::Rejected)));
        let other_org =
            Binding { organization_id: OrgId::from_uuid(Uuid::from_u128(4)), ..binding("github") };
        assert!(matches!(open_with(&cipher(), &sealed, other_org), Err(OpenError::Rejected)));
    }

    #[test]
    fn short_or_foreign_input_is_malformed() {
        assert!(matches!(key_id_of(&[]), Err(OpenError::Malformed)));
        assert!(matches!(key_id_of(&[2, 0, 0]), Err(OpenError::Malformed)));
        assert!(matches!(key_id_of(&[1, 200, 1, 2, 3]), Err(OpenError::Malformed)));
    }
}
