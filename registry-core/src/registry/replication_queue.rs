//! What is still to be sent to each downstream registry, kept in the store: one object per
//! event, named by the time it was queued, so that a crash or a restart of any replica loses
//! nothing and whichever replica holds the downstream's lease sends them in order.
//!
//! An event names what changed (a tag, or a manifest by digest), not the content: the sender
//! looks up what the tag names when it sends, so a tag moved twice while the downstream was
//! down ends where it ends here (last writer wins), and sending an event twice is harmless.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Registry, StoreLease};
use crate::error::Result;
use crate::layout;
use crate::storage::{PutCondition, StorageError};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationAction {
    /// Pushed (or a tag moved).
    Push,
    /// Deleted.
    Delete,
}

/// One change to send downstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationEvent {
    /// Pushed or deleted.
    pub action: ReplicationAction,
    /// The repository, by its name here.
    pub repository: String,
    /// The tag that changed, if the change was to a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The manifest's digest (for a tag: what it named when the event was queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When it happened, in milliseconds since the epoch.
    pub at_ms: u64,
}

/// An event as it waits in the queue.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    /// Its key in the store.
    pub key: String,
    /// The event; `None` when its object could not be read as one.
    pub event: Option<ReplicationEvent>,
}

/// Why an event was given up on, kept beside it.
#[derive(Serialize)]
struct DeadLetter<'a> {
    event: &'a Option<ReplicationEvent>,
    reason: &'a str,
    failed_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// Queues `event` for `downstream`; durable once this returns.
    pub async fn enqueue_replication(
        &self,
        downstream: &str,
        event: &ReplicationEvent,
    ) -> Result<()> {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        // Zero-padded so that keys sort as times; the random part keeps two events of one
        // microsecond (or of two replicas) apart.
        let key = format!(
            "{}{micros:020}-{}.json",
            layout::replication_queue(downstream),
            uuid::Uuid::new_v4().simple()
        );
        let body = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
        self.store
            .put_bytes(&key, body, PutCondition::CreateOnly)
            .await?;
        Ok(())
    }

    /// The keys of every event queued for `downstream`, oldest first (one listing).
    pub async fn replication_queue_keys(&self, downstream: &str) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .store
            .list_recursive(&layout::replication_queue(downstream))
            .try_collect()
            .await?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// The event queued at `key`; `None` when it is gone (sent by another holder meanwhile).
    pub async fn queued_event(&self, key: &str) -> Result<Option<QueuedEvent>> {
        match self.store.read_small(key).await {
            Ok((body, _)) => Ok(Some(QueuedEvent {
                event: serde_json::from_slice(&body).ok(),
                key: key.to_owned(),
            })),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a sent event from the queue.
    pub async fn settle_replication(&self, queued: &QueuedEvent) -> Result<()> {
        match self.store.delete(&queued.key).await {
            Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves an event the downstream refused for good out of the queue, with the reason, so
    /// that the events behind it go on and an operator can see what was not sent.
    pub async fn dead_letter_replication(
        &self,
        downstream: &str,
        queued: &QueuedEvent,
        reason: &str,
    ) -> Result<()> {
        let name = queued.key.rsplit('/').next().unwrap_or("event.json");
        let body = serde_json::to_vec(&DeadLetter {
            event: &queued.event,
            reason,
            failed_at_ms: now_ms(),
        })
        .unwrap_or_default();
        self.store
            .put_bytes(
                &format!("{}{name}", layout::replication_dead_letters(downstream)),
                Bytes::from(body),
                PutCondition::Overwrite,
            )
            .await?;
        self.settle_replication(queued).await
    }

    /// The lease a replica holds while it sends `downstream` its queue.
    pub fn replication_lease(&self, downstream: &str, holder: &str, ttl: Duration) -> StoreLease {
        StoreLease {
            key: layout::replication_lease(downstream),
            holder: holder.to_owned(),
            ttl,
        }
    }
}

impl Registry {
    /// The lease a replica holds while it runs the scheduled sync `name`.
    pub fn sync_lease(&self, name: &str, holder: &str, ttl: Duration) -> StoreLease {
        StoreLease {
            key: layout::replication_sync(name, "lease"),
            holder: holder.to_owned(),
            ttl,
        }
    }

    /// How long ago (by the store's clock) the sync `name` last finished, if it ever did.
    pub async fn sync_finished_ago(&self, name: &str) -> Result<Option<Duration>> {
        match self
            .store
            .stat(&layout::replication_sync(name, "last"))
            .await
        {
            Ok(info) => Ok(info.last_modified.map(|t| t.elapsed().unwrap_or_default())),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks that the sync `name` finished now, with what it says (for operators).
    pub async fn note_sync_finished(&self, name: &str, summary: Bytes) -> Result<()> {
        self.store
            .put_bytes(
                &layout::replication_sync(name, "last"),
                summary,
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }
}

impl ReplicationEvent {
    /// An event of now.
    pub fn now(
        action: ReplicationAction,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ReplicationEvent {
        ReplicationEvent {
            action,
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
            at_ms: now_ms(),
        }
    }
}
