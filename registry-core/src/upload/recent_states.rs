//! The state each session's last request left, kept by the replica that wrote it, under a
//! random tag that request's Location carries: the next request of the session that comes
//! back to this replica with that Location takes the state from memory instead of reading
//! it from the store (one store round trip less per chunk and per finish). Any other
//! request (another replica, an older Location, a URL without a tag) reads the store.
//! Each entry serves once: after it, the session's state is another one.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::names::RepositoryName;

/// Entries kept before the table starts over (forgetting costs one read each).
const MAX_ENTRIES: usize = 10_000;
/// Bytes the kept states may weigh together: a state carries small tails inline (up to 64
/// KiB of hex each), and many sessions left that way must not grow the process without end.
const MAX_BYTES: usize = 64 << 20;

/// A session's kept state: its tag, its weight, the state.
type Kept<T> = (u32, usize, T);
/// Kept states by repository and id, and what they weigh together.
type Table<T> = (HashMap<(RepositoryName, String), Kept<T>>, usize);

/// Sessions' last states.
pub(crate) struct RecentStates<T> {
    entries: Mutex<Table<T>>,
}

impl<T> Default for RecentStates<T> {
    fn default() -> Self {
        RecentStates {
            entries: Mutex::new((HashMap::new(), 0)),
        }
    }
}

impl<T> RecentStates<T> {
    /// Keeps `state` (about `weight` bytes) for the session; returns the tag its next
    /// request's URL must carry.
    pub(crate) fn keep(&self, name: &RepositoryName, id: &str, state: T, weight: usize) -> u32 {
        let tag = (uuid::Uuid::new_v4().as_u64_pair().0 >> 32) as u32;
        let mut guard = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (entries, total) = &mut *guard;
        if let Some((_, w, _)) = entries.remove(&(name.clone(), id.to_owned())) {
            *total -= w;
        }
        if entries.len() >= MAX_ENTRIES || *total + weight > MAX_BYTES {
            entries.clear();
            *total = 0;
        }
        entries.insert((name.clone(), id.to_owned()), (tag, weight, state));
        *total += weight;
        tag
    }

    /// The state kept under `tag` for the session, if this replica kept it; forgotten either
    /// way (a request with another tag found the session moved on).
    pub(crate) fn take(&self, name: &RepositoryName, id: &str, tag: u32) -> Option<T> {
        let (kept, state) = self.remove(name, id)?;
        (kept == tag).then_some(state)
    }

    fn remove(&self, name: &RepositoryName, id: &str) -> Option<(u32, T)> {
        let mut guard = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (entries, total) = &mut *guard;
        let (tag, weight, state) = entries.remove(&(name.clone(), id.to_owned()))?;
        *total -= weight;
        Some((tag, state))
    }

    /// Forgets the session (ended or cancelled).
    pub(crate) fn forget(&self, name: &RepositoryName, id: &str) {
        self.remove(name, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_serves_once_and_only_under_its_tag() {
        let states = RecentStates::default();
        let name: RepositoryName = "a/b".parse().unwrap();
        let tag = states.keep(&name, "id", 1, 10);
        assert_eq!(states.take(&name, "id", tag.wrapping_add(1)), None);
        assert_eq!(
            states.take(&name, "id", tag),
            None,
            "a wrong tag forgets it"
        );
        let tag = states.keep(&name, "id", 2, 10);
        let newer = states.keep(&name, "id", 3, 10);
        assert_eq!(
            states.take(&name, "id", tag),
            None,
            "replaced by the newer state"
        );
        let newer2 = states.keep(&name, "id", 4, 10);
        assert_ne!(newer, newer2);
        assert_eq!(states.take(&name, "id", newer2), Some(4));
        assert_eq!(states.take(&name, "id", newer2), None, "served once");
        assert_eq!(
            states.entries.lock().unwrap().1,
            0,
            "nothing weighs once taken"
        );
    }

    #[test]
    fn heavy_states_never_pass_the_byte_bound() {
        let states = RecentStates::default();
        let name: RepositoryName = "a/b".parse().unwrap();
        let each = MAX_BYTES / 4 + 1;
        let first = states.keep(&name, "s0", 0, each);
        for i in 1..8 {
            states.keep(&name, &format!("s{i}"), i, each);
            assert!(states.entries.lock().unwrap().1 <= MAX_BYTES);
        }
        assert_eq!(
            states.take(&name, "s0", first),
            None,
            "dropped to stay under the bound"
        );
    }
}
