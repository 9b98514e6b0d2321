//! What a blob's bytes look like in the store (size, time, version), remembered for a minute.
//!
//! The bytes of a digest never change, so knowing that they are stored spares a `HEAD` of the
//! blob on every check, pull and re-push. The one thing that changes is whether they are still
//! there: garbage collection removes unreferenced bytes (never younger than its grace window),
//! so an entry lives only a minute, and a removal in this process forgets it at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::storage::ObjectInfo;

/// How long an entry is trusted.
const TRUST: Duration = Duration::from_secs(60);
/// Entries kept before the table starts over.
const MAX_ENTRIES: usize = 100_000;

/// Stored blobs' metadata by digest.
#[derive(Default)]
pub(super) struct BlobSizes {
    known: Mutex<HashMap<Digest, (ObjectInfo, Instant)>>,
}

impl BlobSizes {
    /// The metadata of `d`'s bytes, if seen within the last minute.
    pub(super) fn get(&self, d: &Digest) -> Option<ObjectInfo> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .get(d)
            .filter(|(_, at)| at.elapsed() < TRUST)
            .map(|(info, _)| info.clone())
    }

    /// Remembers that `d`'s bytes are stored, as `info` describes them.
    pub(super) fn put(&self, d: &Digest, info: &ObjectInfo) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_ENTRIES {
            known.clear();
        }
        known.insert(d.clone(), (info.clone(), Instant::now()));
    }

    /// Forgets `d` (its bytes were removed).
    pub(super) fn forget(&self, d: &Digest) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(d);
    }
}
