//! Device cookies (OWASP): a browser that signed in to an account gets a signed, expiring cookie
//! naming the account. Its later sign-ins to that account are throttled on their own failures
//! only, so failures elsewhere cannot lock the owner out of their usual browser.
//!
//! Value: `{user id}.{device id}.{expiry, unix seconds}.{HMAC-SHA256 of the rest}`; nothing in
//! it is secret, and it is worth nothing for another account or after it expires.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ids::UserId;

pub const COOKIE: &str = "mcp_device";
/// How long a browser stays known after its last successful sign-in.
pub const LIFETIME: Duration = Duration::days(90);

pub struct DeviceKey([u8; 32]);

/// A browser that signed in to `user_id` before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub user_id: UserId,
    pub id: String,
}

impl DeviceKey {
    pub fn new(bytes: [u8; 32]) -> DeviceKey {
        DeviceKey(bytes)
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"device:");
        mac.update(body.as_bytes());
        mac
    }

    /// The cookie value for `device`, valid for `LIFETIME` from `now`.
    pub fn issue(&self, device: &Device, now: DateTime<Utc>) -> String {
        let body =
            format!("{}.{}.{}", device.user_id.as_uuid().simple(), device.id, (now + LIFETIME).timestamp());
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The device a cookie names, if it is ours, untouched and not expired.
    pub fn verify(&self, value: &str, now: DateTime<Utc>) -> Option<Device> {
        let (body, tag) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(body).verify_slice(&tag).ok()?;
        let mut parts = body.split('.');
        let (user, id, expires) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || expires.parse::<i64>().ok()? <= now.timestamp() {
            return None;
        }
        Some(Device { user_id: UserId::parse(user)?, id: id.to_owned() })
    }
}

/// A new device id for a browser signing in for the first time.
pub fn new_device(user_id: UserId) -> Device {
    Device { user_id, id: URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<16>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_names_its_account_until_it_expires_and_cannot_be_forged() {
        let key = DeviceKey::new([3; 32]);
        let now = Utc::now();
        let device = new_device(UserId::new());
        let cookie = key.issue(&device, now);
        assert_eq!(key.verify(&cookie, now), Some(device.clone()));
        assert_eq!(key.verify(&cookie, now + LIFETIME), None, "expired");
        assert_eq!(DeviceKey::new([4; 32]).verify(&cookie, now), None, "another key");
        let other_user = cookie.replacen(
            &device.user_id.as_uuid().simple().to_string(),
            &UserId::new().as_uuid().simple().to_string(),
            1,
        );
        assert_eq!(key.verify(&other_user, now), None, "another account");
        assert_eq!(key.verify("garbage", now), None);
    }
}
