//! Pulls of cached content, noted in the store for expiry: at most once per reference per
//! interval in each process, so that a hot tag costs one small write an hour, not one a pull.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Entries kept before the table starts over (a few MiB; forgetting only costs a write).
const MAX_ENTRIES: usize = 100_000;

/// When this process last noted each reference.
#[derive(Default)]
pub(crate) struct RecentUses {
    noted: Mutex<HashMap<String, Instant>>,
}

/// How often a reference's marker is refreshed for a cache that keeps content `ttl` after its
/// last pull: a tenth of it, at most an hour.
pub(crate) fn refresh_every(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(3600))
}

impl RecentUses {
    /// Whether `key` is due to be noted again (and, if so, counts it as noted now).
    pub(crate) fn due(&self, key: &str, every: Duration) -> bool {
        let now = Instant::now();
        let mut noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
        if noted
            .get(key)
            .is_some_and(|t| now.duration_since(*t) < every)
        {
            return false;
        }
        if noted.len() >= MAX_ENTRIES {
            noted.clear();
        }
        noted.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noted_once_per_interval() {
        let uses = RecentUses::default();
        let every = Duration::from_millis(50);
        assert!(uses.due("a:v1", every));
        assert!(!uses.due("a:v1", every));
        assert!(uses.due("a:v2", every));
        std::thread::sleep(every);
        assert!(uses.due("a:v1", every));
        assert_eq!(
            refresh_every(Duration::from_secs(168 * 3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            refresh_every(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }
}
