//! Which blobs this process is copying from an upstream into the store right now.
//!
//! When a deployment starts fifty pods at once, fifty pulls ask for the same uncached layers at
//! the same moment. One of them copies each layer into the store; the others are passed
//! through from the upstream without a second copy. This is per process on purpose: another
//! replica copying the same blob is harmless (the last verified copy wins), only wasteful.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use registry_core::Digest;

/// The digests being copied; a claim is released when its [`CopyClaim`] is dropped.
#[derive(Default)]
pub(crate) struct BlobCopies {
    in_flight: Arc<Mutex<HashSet<Digest>>>,
}

/// The right to copy one blob into the store, held until the copy has ended either way.
pub(crate) struct CopyClaim {
    in_flight: Arc<Mutex<HashSet<Digest>>>,
    digest: Digest,
}

impl BlobCopies {
    /// The claim on `digest`, or `None` when another request of this process holds it.
    pub(crate) fn claim(&self, digest: &Digest) -> Option<CopyClaim> {
        let mut set = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set.insert(digest.clone()).then(|| CopyClaim {
            in_flight: self.in_flight.clone(),
            digest: digest.clone(),
        })
    }
}

impl Drop for CopyClaim {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_digest_until_it_is_dropped() {
        let copies = BlobCopies::default();
        let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let first = copies.claim(&a).expect("a free digest is claimed");
        assert!(copies.claim(&a).is_none(), "a held digest is not");
        assert!(copies.claim(&b).is_some(), "other digests are unaffected");
        drop(first);
        assert!(copies.claim(&a).is_some(), "released with its claim");
    }
}
