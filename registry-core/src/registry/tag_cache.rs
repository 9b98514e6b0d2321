//! What tags named moments ago, per replica, for `berth.storage.tagcachettl` (off by default).
//!
//! A manifest GET by tag costs one store request, to read the tag's link. A registry serving
//! the same tags to many clients (a CI fleet pulling `app:latest`) can answer them from memory
//! for a few seconds instead. A tag moved or deleted through this replica is seen at once;
//! through another replica, within the TTL: that is the price, and why it is off by default.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::names::{RepositoryName, Tag};

/// Entries kept before the table starts over.
const MAX_ENTRIES: usize = 100_000;

/// Tag targets by repository and tag, each trusted for the TTL.
pub(super) struct TagCache {
    ttl: Duration,
    targets: Mutex<HashMap<(RepositoryName, Tag), (Digest, Instant)>>,
}

impl TagCache {
    /// A cache trusting an entry for `ttl` (zero: off).
    pub(super) fn new(ttl: Duration) -> Self {
        TagCache {
            ttl,
            targets: Mutex::default(),
        }
    }

    /// What `tag` named within the TTL.
    pub(super) fn get(&self, name: &RepositoryName, tag: &Tag) -> Option<Digest> {
        if self.ttl.is_zero() {
            return None;
        }
        let targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        targets
            .get(&(name.clone(), tag.clone()))
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(d, _)| d.clone())
    }

    /// Remembers that `tag` names `digest` now.
    pub(super) fn put(&self, name: &RepositoryName, tag: &Tag, digest: &Digest) {
        if self.ttl.is_zero() {
            return;
        }
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        if targets.len() >= MAX_ENTRIES {
            targets.clear();
        }
        targets.insert(
            (name.clone(), tag.clone()),
            (digest.clone(), Instant::now()),
        );
    }

    /// Forgets `tag` (deleted here).
    pub(super) fn forget(&self, name: &RepositoryName, tag: &Tag) {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(name.clone(), tag.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_trusted_only_for_the_ttl() {
        let (name, tag): (RepositoryName, Tag) =
            ("team/app".parse().unwrap(), "v1".parse().unwrap());
        let d = Digest::of(crate::digest::Algorithm::Sha256, b"manifest");
        let off = TagCache::new(Duration::ZERO);
        off.put(&name, &tag, &d);
        assert_eq!(off.get(&name, &tag), None);
        let on = TagCache::new(Duration::from_millis(30));
        on.put(&name, &tag, &d);
        assert_eq!(on.get(&name, &tag), Some(d.clone()));
        on.forget(&name, &tag);
        assert_eq!(on.get(&name, &tag), None);
        on.put(&name, &tag, &d);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(on.get(&name, &tag), None);
    }
}
