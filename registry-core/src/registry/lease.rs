//! A lease object in the store that lets one process at a time do a job (collect garbage,
//! send a downstream its replication queue), whichever replica it runs on. Taken with a
//! create-only write, kept by rewriting it on its version, taken over once its holder stopped
//! rewriting it for a TTL; ages are the store's own clock, never this host's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::storage::{ObjectVersion, PutCondition, StorageDriver, StorageError};

/// What the lease object says (for operators reading it).
#[derive(Serialize, Deserialize)]
struct LeaseBody {
    holder: String,
}

/// One lease: where it lives, who asks for it, how long a silent holder keeps it.
#[derive(Debug, Clone)]
pub struct StoreLease {
    /// The lease object's key.
    pub key: String,
    /// Who holds it (written into it).
    pub holder: String,
    /// A lease not rewritten for this long is taken over.
    pub ttl: Duration,
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct HeldLease {
    /// The store's time when it was taken.
    pub taken_at: SystemTime,
    version: ObjectVersion,
}

impl StoreLease {
    fn body(&self) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&LeaseBody {
                holder: self.holder.clone(),
            })
            .unwrap_or_default(),
        )
    }

    /// Takes the lease; `None` while another live holder has it.
    pub async fn take(&self, store: &Arc<dyn StorageDriver>) -> Result<Option<HeldLease>> {
        let body = self.body();
        match store
            .put_bytes(&self.key, body.clone(), PutCondition::CreateOnly)
            .await
        {
            Ok(_) => {}
            Err(StorageError::AlreadyExists(_)) => {
                let current = store.stat(&self.key).await?;
                let stale = current
                    .last_modified
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > self.ttl);
                if !stale {
                    return Ok(None);
                }
                match store
                    .put_bytes(&self.key, body, PutCondition::IfVersion(current.version))
                    .await
                {
                    Ok(_) => {}
                    Err(StorageError::Precondition(_)) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let held = store.stat(&self.key).await?;
        Ok(Some(HeldLease {
            taken_at: held.last_modified.unwrap_or_else(SystemTime::now),
            version: held.version,
        }))
    }

    /// Rewrites the lease every quarter of its TTL, so that a holder that died (a killed pod)
    /// is replaced within the TTL and a live one never is. Returns when the lease is lost.
    pub async fn hold(&self, store: &Arc<dyn StorageDriver>, held: HeldLease) {
        let body = self.body();
        let mut version = held.version;
        loop {
            tokio::time::sleep(self.ttl / 4).await;
            match store
                .put_bytes(&self.key, body.clone(), PutCondition::IfVersion(version))
                .await
            {
                Ok(info) => version = info.version,
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "a lease could not be renewed");
                    return;
                }
            }
        }
    }

    /// Runs `job` while holding the lease, then gives the lease up; `None` when another holder
    /// has it. If the lease is lost meanwhile (the store refused a renewal), the job runs on:
    /// for jobs that only repeat work when two run at once (garbage collection).
    pub async fn run<T>(
        &self,
        store: &Arc<dyn StorageDriver>,
        job: impl AsyncFnOnce(&HeldLease) -> T,
    ) -> Result<Option<T>> {
        Ok(self.run_held(store, job, false).await?.flatten())
    }

    /// As [`StoreLease::run`], but the job is dropped the moment the lease is lost: for jobs
    /// that must not run twice at once (sending a queue in order). `Some(None)`: lost.
    pub async fn run_while_held<T>(
        &self,
        store: &Arc<dyn StorageDriver>,
        job: impl AsyncFnOnce(&HeldLease) -> T,
    ) -> Result<Option<Option<T>>> {
        self.run_held(store, job, true).await
    }

    async fn run_held<T>(
        &self,
        store: &Arc<dyn StorageDriver>,
        job: impl AsyncFnOnce(&HeldLease) -> T,
        stop_when_lost: bool,
    ) -> Result<Option<Option<T>>> {
        let Some(held) = self.take(store).await? else {
            return Ok(None);
        };
        let work = std::pin::pin!(job(&held));
        let hold = std::pin::pin!(async {
            self.hold(store, held.clone()).await;
            if !stop_when_lost {
                std::future::pending::<()>().await
            }
        });
        let out = match futures::future::select(work, hold).await {
            futures::future::Either::Left((out, _)) => Some(out),
            futures::future::Either::Right(((), _)) => return Ok(Some(None)),
        };
        let _ = store.delete(&self.key).await;
        Ok(Some(out))
    }
}
