//! Secrets at rest and in transit: the API key format, sealed service tokens and service
//! header values.
//! No plaintext secret leaves this module except to the caller that asked for it.

pub mod api_key;
pub mod flash;
pub mod headers;
pub mod keyring;
pub mod rotation;

/// Fills a buffer from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A random 256-bit token, URL-safe base64: session ids and similar bearer secrets.
pub fn random_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What is stored of a link's bearer token (an invitation, a password reset): its SHA-256.
pub fn link_token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}
