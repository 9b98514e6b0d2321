//! When each repository, and each tag and manifest of it, was last pulled, for usage reports
//! and the web UI: noted in memory on every pull and written by each replica to its own
//! object in the store every few minutes, so a pull
//! costs no store request. Readers take the newest time over every replica's object; a
//! collection folds the objects of replicas that stopped writing into one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;

use super::Registry;
use crate::error::Result;
use crate::layout;
use crate::names::{Reference, RepositoryName};
use crate::storage::{PutCondition, StorageError};

/// Repository, `repository:tag` or `repository@digest` → last pull (unix seconds). A
/// repository name holds neither `:` nor `@`, so the three never collide.
type Times = BTreeMap<String, u64>;

/// This replica's pulls: those not yet written, and everything it wrote.
pub(super) struct PullTimes {
    replica: String,
    state: Mutex<(HashMap<String, u64>, Times)>,
}

/// A replica object untouched this long belongs to a replica that stopped: folded.
const FOLD_AFTER: Duration = Duration::from_secs(86_400);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for PullTimes {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "berth".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        PullTimes {
            replica: format!("{host}-{}-{started}", std::process::id()),
            state: Mutex::new((HashMap::new(), Times::new())),
        }
    }
}

fn parse(body: &[u8]) -> Times {
    serde_json::from_slice(body).unwrap_or_default()
}

fn merge(into: &mut Times, from: Times) {
    for (name, t) in from {
        let slot = into.entry(name).or_default();
        *slot = (*slot).max(t);
    }
}

impl Registry {
    /// Notes, in memory, that a client pulled `reference` of `name` now.
    pub fn note_repository_pull(&self, name: &RepositoryName, reference: &Reference) {
        let now = now_secs();
        let of_reference = match reference {
            Reference::Tag(t) => format!("{name}:{t}"),
            Reference::Digest(d) => format!("{name}@{d}"),
        };
        let mut state = self
            .pull_times
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0.insert(name.to_string(), now);
        state.0.insert(of_reference, now);
    }

    /// When each tag (`tag`) and manifest (`@digest`) of `name` was last pulled.
    pub async fn reference_pull_times(
        &self,
        name: &RepositoryName,
    ) -> Result<HashMap<String, u64>> {
        let all = self.pull_times().await?;
        let tags = format!("{name}:");
        let digests = format!("{name}@");
        Ok(all
            .range(name.to_string()..)
            .take_while(|(k, _)| k.starts_with(name.as_str()))
            .filter_map(|(k, t)| {
                k.strip_prefix(&tags)
                    .map(str::to_owned)
                    .or_else(|| k.strip_prefix(&digests).map(|d| format!("@{d}")))
                    .map(|k| (k, *t))
            })
            .collect())
    }

    /// Writes the pulls noted since the last write to this replica's object (nothing when
    /// there were none).
    pub async fn flush_pull_times(&self) -> Result<()> {
        let body = {
            let mut state = self
                .pull_times
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.0.is_empty() {
                return Ok(());
            }
            let pending: Vec<(String, u64)> = state.0.drain().collect();
            for (name, t) in pending {
                let slot = state.1.entry(name).or_default();
                *slot = (*slot).max(t);
            }
            Bytes::from(serde_json::to_vec(&state.1).unwrap_or_default())
        };
        self.store
            .put_bytes(
                &layout::pull_times(&self.pull_times.replica),
                body,
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }

    /// The last pull of every repository any replica wrote (this one's unwritten pulls too).
    pub(super) async fn pull_times(&self) -> Result<Times> {
        let mut all = Times::new();
        let keys: Vec<String> = self
            .store
            .list_recursive(&layout::pull_times_prefix())
            .try_collect()
            .await?;
        for key in keys {
            match self.store.read_small(&key).await {
                Ok((body, _)) => merge(&mut all, parse(&body)),
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let state = self
            .pull_times
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        merge(
            &mut all,
            state.0.iter().map(|(n, t)| (n.clone(), *t)).collect(),
        );
        Ok(all)
    }

    /// Folds the objects of replicas that wrote nothing for a day into one, so that their
    /// number stays that of live replicas. Run by collections.
    pub(super) async fn fold_pull_times(&self) -> Result<()> {
        let keys: Vec<String> = self
            .store
            .list_recursive(&layout::pull_times_prefix())
            .try_collect()
            .await?;
        let folded_key = layout::pull_times(layout::FOLDED_PULL_TIMES);
        let mut folded = Times::new();
        let mut stale = Vec::new();
        for key in keys {
            let Ok((body, info)) = self.store.read_small(&key).await else {
                continue;
            };
            let old = info
                .last_modified
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > FOLD_AFTER);
            if key == folded_key || old {
                merge(&mut folded, parse(&body));
                if key != folded_key {
                    stale.push(key);
                }
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        self.store
            .put_bytes(
                &folded_key,
                Bytes::from(serde_json::to_vec(&folded).unwrap_or_default()),
                PutCondition::Overwrite,
            )
            .await?;
        for key in stale {
            self.store.delete(&key).await?;
        }
        Ok(())
    }
}
