//! Requests for the same thing at the same moment, answered by one call.
//!
//! A rollout starting fifty pods sends fifty pulls of one tag within milliseconds; each would
//! ask the upstream which digest the tag names. The first asks; the others that arrive while
//! it waits get its answer. Nothing outlives the call: a request that comes after it has
//! ended asks again, so no answer is ever older than the request that receives it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

/// Calls in flight, by key.
pub(crate) struct Joined<T> {
    calls: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T> Default for Joined<T> {
    fn default() -> Self {
        Joined {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Joined<T> {
    /// The answer of the call for `key` in flight, or of `call` made now.
    pub(crate) async fn run<F: Future<Output = T>>(
        &self,
        key: &str,
        call: impl FnOnce() -> F,
    ) -> T {
        let cell = self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone();
        let answer = cell.get_or_init(call).await.clone();
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if calls.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            calls.remove(key);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn overlapping_requests_share_one_call_and_later_ones_call_again() {
        let joined = Joined::<usize>::default();
        let calls = AtomicUsize::new(0);
        let call = || async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            calls.fetch_add(1, Ordering::SeqCst) + 1
        };
        let answers = futures::future::join_all((0..8).map(|_| joined.run("app:v1", call))).await;
        assert_eq!(answers, vec![1; 8]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            joined.run("app:v1", call).await,
            2,
            "a later request asks again"
        );
        assert_eq!(joined.run("app:v2", call).await, 3);
        assert!(joined.calls.lock().unwrap().is_empty());
    }
}
