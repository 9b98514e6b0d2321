//! A bounded in-process cache of manifest bodies by digest. Content-addressed data never changes,
//! so every replica may keep its own copy without coordination (DESIGN.md section 7).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::digest::Digest;

/// Manifest bodies and media types, at most `capacity` bytes of bodies.
pub struct ManifestCache {
    capacity: usize,
    inner: Mutex<(HashMap<Digest, (Bytes, String)>, usize)>,
}

impl ManifestCache {
    /// An empty cache holding up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        ManifestCache {
            capacity,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The cached body and media type of `d`.
    pub fn get(&self, d: &Digest) -> Option<(Bytes, String)> {
        self.inner.lock().ok()?.0.get(d).cloned()
    }

    /// Remembers a body; when full, starts over (simple, and the working set refills at once).
    pub fn put(&self, d: Digest, body: Bytes, media_type: String) {
        if body.len() > self.capacity / 16 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            if g.1 + body.len() > self.capacity {
                g.0.clear();
                g.1 = 0;
            }
            g.1 += body.len();
            g.0.insert(d, (body, media_type));
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
        assert!(c.inner.lock().unwrap().1 <= 64);
    }
}
