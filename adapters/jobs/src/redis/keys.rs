//! The key layout and the names it is built from. See [`RedisKeys`].

use std::time::{SystemTime, UNIX_EPOCH};

use crate::errors::RedisSourceError;

/// The Redis keys a [`RedisSource`](crate::RedisSource) uses. All keys of one queue share the hash tag `{queue}`, so
/// its scripts touch a single slot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisKeys {
    /// The queue (a list): producers push at the tail, the pool fetches from the head.
    pub queue: String,
    /// This process's processing list: jobs fetched and not yet acked, failed or handed back.
    pub processing: String,
    /// The set of process ids that may hold a processing list for this queue.
    pub processes: String,
    /// This process's lease: while it exists, no one recovers this process's jobs.
    pub alive: String,
    /// Jobs that failed for good (a list, newest first).
    pub dead: String,
    /// This process's record of hand-backs that may not have been confirmed (a set of tokens),
    /// so a retried hand-back is applied once; emptied as hand-backs are confirmed, deleted at
    /// close and by recovery.
    pub requeued: String,
    base: String,
}

impl RedisKeys {
    pub(super) fn new(namespace: &str, queue: &str, process: &str) -> RedisKeys {
        let base = format!("{namespace}:{{{queue}}}");
        RedisKeys {
            queue: format!("{base}:queue"),
            processing: format!("{base}:processing:{process}"),
            processes: format!("{base}:processes"),
            alive: format!("{base}:alive:{process}"),
            dead: format!("{base}:dead"),
            requeued: format!("{base}:requeued:{process}"),
            base,
        }
    }

    pub(super) fn processing_of(&self, process: &str) -> String {
        format!("{}:processing:{process}", self.base)
    }

    pub(super) fn alive_of(&self, process: &str) -> String {
        format!("{}:alive:{process}", self.base)
    }

    pub(super) fn requeued_of(&self, process: &str) -> String {
        format!("{}:requeued:{process}", self.base)
    }
}

pub(super) fn check_name(what: &'static str, value: &str) -> Result<(), RedisSourceError> {
    let bad = |c: char| c == '{' || c == '}' || c == ':' || c.is_whitespace();
    if value.is_empty() || value.chars().any(bad) {
        return Err(RedisSourceError::InvalidName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Host name, process id and start time: unique per process, readable in `redis-cli`.
pub(super) fn default_process_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}-{}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_break_keys_are_rejected() {
        for bad in ["", "a b", "a{b", "a}b", "a:b"] {
            assert!(check_name("queue name", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("queue name", "emails-2.high_prio").is_ok());
        assert!(check_name("process id", &default_process_id()).is_ok());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = RedisKeys::new("lhj", "emails", "p1");
        for key in [
            &keys.queue,
            &keys.processing,
            &keys.processes,
            &keys.alive,
            &keys.dead,
            &keys.requeued,
        ] {
            assert!(key.starts_with("lhj:{emails}:"), "{key}");
        }
        assert_eq!(keys.processing_of("p1"), keys.processing);
        assert_eq!(keys.alive_of("p1"), keys.alive);
        assert_eq!(keys.requeued_of("p1"), keys.requeued);
    }
}
