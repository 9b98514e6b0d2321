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

/// Sessions' last states, by repository and id, with their tags.
pub(crate) struct RecentStates<T> {
    entries: Mutex<HashMap<(RepositoryName, String), (u32, T)>>,
}

impl<T> Default for RecentStates<T> {
    fn default() -> Self {
        RecentStates {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> RecentStates<T> {
    /// Keeps `state` for the session; returns the tag its next request's URL must carry.
    pub(crate) fn keep(&self, name: &RepositoryName, id: &str, state: T) -> u32 {
        let tag = (uuid::Uuid::new_v4().as_u64_pair().0 >> 32) as u32;
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert((name.clone(), id.to_owned()), (tag, state));
        tag
    }

    /// The state kept under `tag` for the session, if this replica kept it; forgotten either
    /// way (a request with another tag found the session moved on).
    pub(crate) fn take(&self, name: &RepositoryName, id: &str, tag: u32) -> Option<T> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.remove(&(name.clone(), id.to_owned())) {
            Some((kept, state)) if kept == tag => Some(state),
            _ => None,
        }
    }

    /// Forgets the session (ended or cancelled).
    pub(crate) fn forget(&self, name: &RepositoryName, id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(name.clone(), id.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_serves_once_and_only_under_its_tag() {
        let states = RecentStates::default();
        let name: RepositoryName = "a/b".parse().unwrap();
        let tag = states.keep(&name, "id", 1);
        assert_eq!(states.take(&name, "id", tag.wrapping_add(1)), None);
        assert_eq!(
            states.take(&name, "id", tag),
            None,
            "a wrong tag forgets it"
        );
        let tag = states.keep(&name, "id", 2);
        let newer = states.keep(&name, "id", 3);
        assert_eq!(
            states.take(&name, "id", tag),
            None,
            "replaced by the newer state"
        );
        let newer2 = states.keep(&name, "id", 4);
        assert_ne!(newer, newer2);
        assert_eq!(states.take(&name, "id", newer2), Some(4));
        assert_eq!(states.take(&name, "id", newer2), None, "served once");
    }
}
