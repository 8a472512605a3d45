//! Typed ids: an organization's id cannot be handed to a query that wants a user's, and a
//! handler gets the organization only from the signed-in user or the gateway's principal.

use uuid::Uuid;

/// Ids written in URLs: the typed ones below, and plain UUIDs for rows no query is scoped by.
pub trait Id: Sized {
    fn from_uuid(id: Uuid) -> Self;
}

impl Id for Uuid {
    fn from_uuid(id: Uuid) -> Uuid {
        id
    }
}

/// Defines an id type: a UUID (v7, time-ordered) that only says what it names.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, ordered by the time it is made.
            pub fn new() -> $name {
                $name(Uuid::now_v7())
            }

            /// An id written in a URL; `None` for anything that is not one.
            pub fn parse(raw: &str) -> Option<$name> {
                Uuid::parse_str(raw).ok().map($name)
            }

            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl Id for $name {
            fn from_uuid(id: Uuid) -> $name {
                $name(id)
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An organization (a tenant).
    OrgId
);
id_type!(
    /// A user, who belongs to one organization.
    UserId
);
id_type!(
    /// An API key.
    KeyId
);
id_type!(
    /// An MCP service, an organization's own or a system one.
    ServiceId
);
id_type!(
    /// A request-log row, which is also the correlation id its client received.
    LogId
);

/// Keeps the ids of calls that arrive within one millisecond in order, with the last
/// millisecond it gave out.
static LOG_ID_ORDER: std::sync::Mutex<(i64, uuid::ContextV7)> =
    std::sync::Mutex::new((i64::MIN, uuid::ContextV7::new()));

impl LogId {
    /// The id of a call that arrived at `at` (by the application's clock, so ids and times
    /// agree in tests that move it). Ids of calls in the same millisecond follow each other; an
    /// id for an earlier moment than the last one (rows written for the past) keeps its own
    /// time, with a random tail.
    pub fn at(at: chrono::DateTime<chrono::Utc>) -> LogId {
        let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
        let nanos = at.timestamp_subsec_nanos();
        let millis = at.timestamp_millis();
        let mut order = LOG_ID_ORDER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if millis < order.0 {
            return LogId(Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, nanos)));
        }
        order.0 = millis;
        LogId(Uuid::new_v7(uuid::Timestamp::from_unix(&order.1, seconds, nanos)))
    }

    /// The lowest id of a call that arrived at `at` or later: a bound for time ranges.
    pub fn floor(at: chrono::DateTime<chrono::Utc>) -> LogId {
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = 0x70;
        bytes[8] = 0x80;
        LogId(Uuid::from_bytes(bytes))
    }

    /// When the call arrived, to the millisecond.
    pub fn time(self) -> Option<chrono::DateTime<chrono::Utc>> {
        let (seconds, nanos) = self.0.get_timestamp()?.to_unix();
        chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn log_ids_follow_their_times_even_for_the_past() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let same_ms: Vec<LogId> = (0..100).map(|_| LogId::at(now)).collect();
        assert!(same_ms.windows(2).all(|w| w[0] < w[1]), "calls in one millisecond keep their order");
        let past = now - Duration::days(40);
        let old = LogId::at(past);
        assert_eq!(old.time(), Some(past), "an earlier moment keeps its own time");
        assert!(
            old < same_ms[0]
                && LogId::floor(past) <= old
                && old < LogId::floor(past + Duration::milliseconds(1))
        );
    }
}
