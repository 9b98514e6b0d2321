//! What the last garbage collection removed and when, kept in the store for whoever asks
//! (the web UI), whichever replica or `berth gc` ran it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Registry;
use super::gc::GcReport;
use crate::error::Result;
use crate::layout;
use crate::storage::{PutCondition, StorageError};

/// One finished collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// When it started (unix seconds).
    pub started: u64,
    /// When it finished (unix seconds).
    pub finished: u64,
    /// Blobs it removed.
    pub blobs: usize,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Manifest revisions it removed (untagged ones, and those retention let go).
    pub manifests: usize,
    /// Tags retention let go.
    pub tags: usize,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CollectionRecord {
    fn of(started: SystemTime, report: &GcReport) -> CollectionRecord {
        let retained_tags = report
            .retention
            .iter()
            .filter(|r| !r.removed.contains('@'))
            .count();
        CollectionRecord {
            started: secs(started),
            finished: secs(SystemTime::now()),
            blobs: report.swept.len(),
            bytes: report.bytes,
            manifests: report.untagged.len() + report.retention.len() - retained_tags,
            tags: retained_tags,
        }
    }
}

impl Registry {
    /// Writes what a collection removed; a failure costs only the record, never the collection.
    pub(super) async fn record_collection(&self, started: SystemTime, report: &GcReport) {
        let record = CollectionRecord::of(started, report);
        let body = Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
        if let Err(e) = self
            .store
            .put_bytes(&layout::last_collection(), body, PutCondition::Overwrite)
            .await
        {
            tracing::warn!(error = %e, "could not record the collection");
        }
    }

    /// The last finished collection, if any ever finished here.
    pub async fn last_collection(&self) -> Result<Option<CollectionRecord>> {
        match self.store.read_small(&layout::last_collection()).await {
            Ok((body, _)) => Ok(serde_json::from_slice(&body).ok()),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
