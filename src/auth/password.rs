//! Password hashing with argon2id (m=19456 KiB, t=2, p=1), always off the async threads.

use anyhow::Context;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub enum Verification {
    Valid { needs_rehash: bool },
    Invalid,
}

/// Hashes and checks passwords. Holds a hash of a random password so that checking an
/// unknown account costs the same as checking a real one.
pub struct Passwords {
    dummy_hash: String,
}

impl Passwords {
    pub fn new() -> anyhow::Result<Passwords> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).context("random source failed")?;
        Ok(Passwords { dummy_hash: hash_blocking(&random)? })
    }

    pub async fn hash(&self, password: SecretString) -> anyhow::Result<String> {
        tokio::task::spawn_blocking(move || hash_blocking(password.expose_secret().as_bytes()))
            .await
            .context("password hashing task failed")?
    }

    /// Checks `candidate` against `stored`, or against the dummy hash when there is no account,
    /// so both cases take the same time and give the same answer.
    pub async fn verify(
        &self,
        candidate: SecretString,
        stored: Option<String>,
    ) -> anyhow::Result<Verification> {
        let is_real = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).context("stored password hash is malformed")?;
            let matches = argon2().verify_password(candidate.expose_secret().as_bytes(), &parsed).is_ok();
            Ok(if matches && is_real {
                Verification::Valid { needs_rehash: !uses_current_params(&parsed) }
            } else {
                Verification::Invalid
            })
        })
        .await
        .context("password verification task failed")?
    }
}

fn hash_blocking(password: &[u8]) -> anyhow::Result<String> {
    let hash =
        argon2().hash_password(password).map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))?;
    Ok(hash.to_string())
}

fn uses_current_params(hash: &PasswordHash) -> bool {
    let current = argon2();
    hash.algorithm.as_str() == "argon2id"
        && Params::try_from(hash).is_ok_and(|p| {
            p.m_cost() == current.params().m_cost()
                && p.t_cost() == current.params().t_cost()
                && p.p_cost() == current.params().p_cost()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let passwords = Passwords::new().unwrap();
        let hash = passwords.hash(SecretString::from("correct horse battery")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        let ok = passwords.verify(SecretString::from("correct horse battery"), Some(hash.clone())).await;
        assert!(matches!(ok.unwrap(), Verification::Valid { needs_rehash: false }));
        let wrong = passwords.verify(SecretString::from("wrong horse battery"), Some(hash)).await;
        assert!(matches!(wrong.unwrap(), Verification::Invalid));
        let unknown = passwords.verify(SecretString::from("anything"), None).await;
        assert!(matches!(unknown.unwrap(), Verification::Invalid));
    }

    #[tokio::test]
    async fn weaker_hashes_are_flagged_for_rehash() {
        let weak =
            Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap())
                .hash_password(b"correct horse battery")
                .unwrap()
                .to_string();
        let passwords = Passwords::new().unwrap();
        let result = passwords.verify(SecretString::from("correct horse battery"), Some(weak)).await;
        assert!(matches!(result.unwrap(), Verification::Valid { needs_rehash: true }));
    }
}
