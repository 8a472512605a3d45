//! Sealed service header values: each value sealed like a service token (AES-256-GCM under the
//! current token key), bound to its service and header name, stored as base64 with its last 4
//! characters for display. Opened only for the gateway's calls to the service.

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::keyring::{HeaderBinding, Keyring, OpenError, key_id_of, seal_with, visible_tail};
use crate::db::services::SealedHeader;
use crate::db::{self, Db};
use crate::ids::ServiceId;

/// Seals each value for the service's row.
pub async fn seal(
    keyring: &Keyring,
    db: &Db,
    now: DateTime<Utc>,
    service_id: ServiceId,
    values: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<SealedHeader>> {
    let mut sealed = Vec::with_capacity(values.len());
    for (name, value) in values {
        let binding = HeaderBinding { service_id, name };
        let bytes = keyring.seal(db, now, value, binding).await?.bytes;
        sealed.push(SealedHeader {
            name: name.clone(),
            sealed: STANDARD.encode(bytes),
            last4: visible_tail(value),
        });
    }
    Ok(sealed)
}

/// The service's header values, opened.
pub async fn open(
    keyring: &Keyring,
    db: &Db,
    service_id: ServiceId,
    headers: &[SealedHeader],
) -> Result<Vec<(String, SecretString)>, OpenError> {
    let mut opened = Vec::with_capacity(headers.len());
    for header in headers {
        let bytes = STANDARD.decode(&header.sealed).map_err(|_| OpenError::Malformed)?;
        let value = keyring.open(db, &bytes, HeaderBinding { service_id, name: &header.name }).await?;
        opened.push((header.name.clone(), value));
    }
    Ok(opened)
}

/// Seals the header values written in plain text before they were sealed; run at start.
pub async fn seal_plain(keyring: &Keyring, db: &Db, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let plain = db::services::with_plain_headers(db.acquire().await?.conn()).await?;
    for (id, values) in &plain {
        let sealed = seal(keyring, db, now, *id, values).await?;
        let mut conn = db.acquire().await?;
        db::services::replace_sealed_headers(conn.conn(), *id, &[], &sealed).await?;
    }
    Ok(plain.len())
}

/// Re-seals every service's header values that are under an older key with the current one;
/// how many services changed.
pub async fn reseal(keyring: &Keyring, db: &Db, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let (current, cipher) = keyring.current(db, now).await?;
    let services = db::services::with_sealed_headers(db.acquire().await?.conn()).await?;
    let mut resealed = 0;
    for (id, headers) in services {
        let stale = headers.iter().any(|h| {
            STANDARD
                .decode(&h.sealed)
                .ok()
                .is_none_or(|bytes| key_id_of(&bytes).ok() != Some(current.as_str()))
        });
        if !stale {
            continue;
        }
        let opened = open(keyring, db, id, &headers)
            .await
            .with_context(|| format!("cannot open the headers of service {id}"))?;
        let mut after = Vec::with_capacity(opened.len());
        for ((name, value), before) in opened.iter().zip(headers.iter()) {
            let bytes = seal_with(
                &cipher,
                &current,
                value.expose_secret().as_bytes(),
                HeaderBinding { service_id: id, name },
            );
            after.push(SealedHeader { sealed: STANDARD.encode(bytes), ..before.clone() });
        }
        let mut conn = db.acquire().await?;
        if db::services::replace_sealed_headers(conn.conn(), id, &headers, &after).await? {
            resealed += 1;
        }
    }
    Ok(resealed)
}
