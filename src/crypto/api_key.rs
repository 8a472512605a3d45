//! API keys: `mcp_sk_` + 43 random base62 characters (256 bits) + a 6-character base62 CRC32
//! of everything before it. The checksum lets a mistyped or made-up key be refused before any
//! database lookup; only the SHA-256 of a key is ever stored.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "mcp_sk_";
const RANDOM_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key that passed the format and checksum check.
pub struct ApiKey(SecretString);

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl ApiKey {
    pub fn generate() -> ApiKey {
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str(PREFIX);
        while key.len() < PREFIX.len() + RANDOM_LEN {
            // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
            for byte in super::random_bytes::<64>() {
                if byte < 248 && key.len() < PREFIX.len() + RANDOM_LEN {
                    key.push(BASE62[(byte % 62) as usize] as char);
                }
            }
        }
        key.push_str(&checksum(&key));
        ApiKey(SecretString::from(key))
    }

    /// Checks the shape and the checksum; no database is involved.
    pub fn parse(raw: &str) -> Result<ApiKey, Malformed> {
        let raw = raw.trim();
        if raw.len() != KEY_LEN || !raw.starts_with(PREFIX) {
            return Err(Malformed);
        }
        let body = &raw[PREFIX.len()..];
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Malformed);
        }
        let (head, sum) = raw.split_at(KEY_LEN - CHECKSUM_LEN);
        if checksum(head) != sum {
            return Err(Malformed);
        }
        Ok(ApiKey(SecretString::from(raw.to_owned())))
    }

    /// What is stored and looked up: SHA-256 of the whole key.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }

    /// The form shown in lists: prefix, first 4 and last 4 characters.
    pub fn display(&self) -> String {
        let key = self.0.expose_secret();
        let random = &key[PREFIX.len()..];
        format!("{PREFIX}{}...{}", &random[..4], &key[key.len() - 4..])
    }

    /// The full key, for the one page that shows it right after creation.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

fn checksum(text: &str) -> String {
    let mut n = crc32fast::hash(text.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_round_trip() {
        let key = ApiKey::generate();
        let raw = key.expose().to_owned();
        assert_eq!(raw.len(), 56);
        assert!(raw.starts_with("mcp_sk_"));
        assert!(raw[7..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let parsed = ApiKey::parse(&raw).unwrap();
        assert_eq!(parsed.hash(), key.hash());
        assert_eq!(parsed.display(), format!("mcp_sk_{}...{}", &raw[7..11], &raw[52..]));
        assert_ne!(ApiKey::generate().expose(), raw, "keys are random");
    }

    #[test]
    fn the_checksum_catches_any_one_character_change() {
        let raw = ApiKey::generate().expose().to_owned();
        for i in PREFIX.len()..raw.len() {
            let mut bytes = raw.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(ApiKey::parse(&changed).err(), Some(Malformed), "change at {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_shapes_are_malformed() {
        let raw = ApiKey::generate().expose().to_owned();
        for bad in [
            "",
            "mcp_sk_",
            &raw[..55],
            &format!("{raw}x"),
            &raw.replacen("mcp_sk_", "mcp_pk_", 1),
            &format!("mcp_sk_{}", "-".repeat(49)),
        ] {
            assert!(ApiKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base62_characters_are_evenly_used() {
        let mut counts = [0u32; 62];
        for _ in 0..400 {
            for b in ApiKey::generate().expose()[7..50].bytes() {
                counts[BASE62.iter().position(|c| *c == b).unwrap()] += 1;
            }
        }
        // 17200 draws, about 277 per character; a biased generator lands far outside this.
        assert!(counts.iter().all(|c| (180..380).contains(c)), "{counts:?}");
    }
}
