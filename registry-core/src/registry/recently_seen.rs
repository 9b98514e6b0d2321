//! Facts about the store this process wrote or saw moments ago, trusted for a while.
//!
//! A push checks that every blob its manifest names is linked into the repository, and a pull
//! checks each blob it fetches: one store request per blob, for a link this process usually
//! wrote or checked seconds before. Layer links go away only by a blob delete in the
//! repository, which forgets the entry here at once; another replica's delete is seen within
//! the minute an entry is trusted (the bytes themselves stay until garbage collection). Catalog
//! entries are never removed, so they are trusted longer.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::names::RepositoryName;

/// Entries kept before the table starts over.
const MAX_ENTRIES: usize = 100_000;

/// Keys seen within `trust`.
pub(super) struct RecentlySeen<K> {
    trust: Duration,
    seen: Mutex<HashMap<K, Instant>>,
}

/// Layer links known to exist, by repository and digest.
pub(super) type RecentLinks = RecentlySeen<(RepositoryName, Digest)>;

impl<K: Hash + Eq> RecentlySeen<K> {
    /// A table that trusts an entry for `trust`.
    pub(super) fn new(trust: Duration) -> Self {
        RecentlySeen {
            trust,
            seen: Mutex::default(),
        }
    }

    /// Whether `key` was seen within the trusted time.
    pub(super) fn knows(&self, key: &K) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(key).is_some_and(|at| at.elapsed() < self.trust)
    }

    /// Remembers `key` as seen now.
    pub(super) fn remember(&self, key: K) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_ENTRIES {
            seen.clear();
        }
        seen.insert(key, Instant::now());
    }

    /// Forgets `key` (what it stood for was removed).
    pub(super) fn forget(&self, key: &K) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_known_until_forgotten_and_only_in_its_repository() {
        let links = RecentLinks::new(Duration::from_secs(60));
        let a: RepositoryName = "team/a".parse().unwrap();
        let b: RepositoryName = "team/b".parse().unwrap();
        let d = Digest::of(crate::digest::Algorithm::Sha256, b"layer");
        assert!(!links.knows(&(a.clone(), d.clone())));
        links.remember((a.clone(), d.clone()));
        assert!(links.knows(&(a.clone(), d.clone())));
        assert!(
            !links.knows(&(b, d.clone())),
            "another repository does not link it"
        );
        links.forget(&(a.clone(), d.clone()));
        assert!(!links.knows(&(a, d)));
    }

    #[test]
    fn an_entry_is_trusted_only_for_its_time() {
        let seen = RecentlySeen::new(Duration::from_millis(20));
        seen.remember("x");
        assert!(seen.knows(&"x"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!seen.knows(&"x"));
    }
}
