//! A bounded in-process cache of manifest bodies by digest. Content-addressed data never changes,
//! so every replica may keep its own copy without coordination (DESIGN.md section 7).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::digest::Digest;

/// Manifest bodies and media types, at most `capacity` bytes of bodies.
pub struct ManifestCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

/// The cached manifests and the bytes their bodies hold.
#[derive(Default)]
struct Entries {
    by_digest: HashMap<Digest, (Bytes, String)>,
    bytes: usize,
}

impl ManifestCache {
    /// An empty cache holding up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        ManifestCache {
            capacity,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The cached body and media type of `d`.
    pub fn get(&self, d: &Digest) -> Option<(Bytes, String)> {
        self.inner.lock().ok()?.by_digest.get(d).cloned()
    }

    /// Remembers a body; when full, starts over (simple, and the working set refills at once).
    pub fn put(&self, d: Digest, body: Bytes, media_type: String) {
        if body.len() > self.capacity / 16 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            if g.bytes + body.len() > self.capacity {
                g.by_digest.clear();
                g.bytes = 0;
            }
            g.bytes += body.len();
            // A manifest put twice (a re-push) must not be counted twice.
            if let Some((old, _)) = g.by_digest.insert(d, (body, media_type)) {
                g.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn bounded() {
        let c = ManifestCache::new(64);
        let (a, b) = (
            Digest::of(Algorithm::Sha256, b"a"),
            Digest::of(Algorithm::Sha256, b"b"),
        );
        c.put(a.clone(), Bytes::from_static(b"1234"), "t".into());
        assert_eq!(c.get(&a).unwrap().0.as_ref(), b"1234");
        c.put(b.clone(), Bytes::from(vec![0; 100]), "t".into());
        assert!(c.get(&b).is_none(), "too large to cache");
        for i in 0..20u8 {
            c.put(
                Digest::of(Algorithm::Sha256, &[i]),
                Bytes::from_static(b"xxxx"),
                "t".into(),
            );
        }
        assert!(c.inner.lock().unwrap().bytes <= 64);
    }

    #[test]
    fn a_body_put_again_is_counted_once() {
        let c = ManifestCache::new(64);
        let a = Digest::of(Algorithm::Sha256, b"a");
        for _ in 0..10 {
            c.put(a.clone(), Bytes::from_static(b"1234"), "t".into());
        }
        assert_eq!(c.inner.lock().unwrap().bytes, 4);
    }
}
