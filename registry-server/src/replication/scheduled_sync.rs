//! Scheduled copies from upstream registries (`berth.replication.sync`): on each interval, the
//! chosen repositories' matching tags that differ from what they name here are copied in, for
//! air-gapped or disaster-recovery copies that must not wait for a first pull. One replica at
//! a time runs a job (a lease in the store), and a job another replica finished less than an
//! interval ago is not run again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use registry_core::{Registry, RegistryError, Tag};
use serde::Serialize;

use super::image_copy::CopyError;
use super::image_fetch::ImageFetch;
use crate::config::SyncSettings;
use crate::upstream::{UpstreamClient, UpstreamError};

/// A sync that stops renewing its lease is taken over after this long.
const LEASE_TTL: Duration = Duration::from_secs(60);

/// One scheduled copy: its settings, its client, its counts.
pub(crate) struct SyncJob {
    pub(crate) settings: SyncSettings,
    client: UpstreamClient,
    pub(crate) runs_ok: AtomicU64,
    pub(crate) runs_failed: AtomicU64,
    pub(crate) tags_copied: AtomicU64,
}

/// What one run found and did.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// The job's name.
    pub sync: String,
    /// Tags upstream that the job's patterns take.
    pub tags: usize,
    /// Already the same here.
    pub in_sync: usize,
    /// `repository:tag` (the local name) copied in, or with a dry run, that would be.
    pub copied: Vec<String>,
    /// `repository:tag: why` that could not be compared or copied.
    pub failed: Vec<String>,
    /// Blobs fetched (the store did not hold them).
    pub blobs_fetched: usize,
    /// Their bytes.
    pub bytes_fetched: u64,
}

impl SyncJob {
    /// A job for `settings`.
    pub(crate) fn new(settings: SyncSettings) -> Result<SyncJob, UpstreamError> {
        Ok(SyncJob {
            client: UpstreamClient::for_purpose(settings.remote.clone(), "scheduled sync")?,
            settings,
            runs_ok: AtomicU64::new(0),
            runs_failed: AtomicU64::new(0),
            tags_copied: AtomicU64::new(0),
        })
    }

    /// Runs the job now, here (no lease: `berth replicate --once`, or under the schedule's).
    pub(crate) async fn run(&self, registry: &Registry, dry_run: bool) -> SyncReport {
        let s = &self.settings;
        let mut report = SyncReport {
            sync: s.name.clone(),
            ..SyncReport::default()
        };
        for repo in &s.repositories {
            let tags = match self.client.all_tags(&repo.from).await {
                Ok(t) => t,
                Err(e) => {
                    report
                        .failed
                        .push(format!("{}: listing its tags: {e}", repo.from));
                    continue;
                }
            };
            let mut fetch = ImageFetch {
                registry,
                client: &self.client,
                from: &repo.from,
                to: &repo.to,
                max_blob_bytes: s.remote.max_blob_bytes,
                fetched: (0, 0),
            };
            for tag in tags.iter().filter(|t| repo.wants(t)) {
                report.tags += 1;
                let at = format!("{}:{tag}", repo.to);
                match sync_tag(registry, &mut fetch, tag, dry_run).await {
                    Ok(false) => report.in_sync += 1,
                    Ok(true) => report.copied.push(at),
                    Err(why) => report.failed.push(format!("{at}: {why}")),
                }
            }
            report.blobs_fetched += fetch.fetched.0;
            report.bytes_fetched += fetch.fetched.1;
        }
        if !dry_run {
            self.tags_copied
                .fetch_add(report.copied.len() as u64, Ordering::Relaxed);
        }
        report
    }
}

/// Copies `tag` unless it names the same manifest here; whether it was (or would be) copied.
async fn sync_tag(
    registry: &Registry,
    fetch: &mut ImageFetch<'_>,
    tag: &str,
    dry_run: bool,
) -> Result<bool, CopyError> {
    let t: Tag = tag
        .parse()
        .map_err(|_| CopyError::Refused(format!("{tag:?} is not a tag")))?;
    let there = fetch.remote_tag(tag).await?;
    let here = match registry.tag_target(fetch.to, &t).await {
        Ok((d, _)) => Some(d),
        Err(RegistryError::ManifestUnknown(_)) => None,
        Err(e) => return Err(CopyError::Transient(e.to_string())),
    };
    if there.is_some() && there == here {
        return Ok(false);
    }
    if !dry_run {
        fetch.tag(&t).await?;
    }
    Ok(true)
}

/// Runs `job` every interval on whichever replica takes its lease first.
pub(super) async fn schedule(registry: Arc<Registry>, job: Arc<SyncJob>) {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "berth".into());
    let holder = format!("{host}/{}", std::process::id());
    let name = job.settings.name.clone();
    let interval = job.settings.interval;
    let lease = registry.sync_lease(&name, &holder, LEASE_TTL);
    loop {
        let due = match registry.sync_finished_ago(&name).await {
            Ok(Some(ago)) if ago < interval => Some(interval - ago),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(sync = %name, error = %e, "when the sync last ran cannot be read");
                Some(interval.min(Duration::from_secs(60)))
            }
        };
        if let Some(wait) = due {
            tokio::time::sleep(wait).await;
            continue;
        }
        let ran = lease
            .run(registry.store(), async |_| job.run(&registry, false).await)
            .await;
        match ran {
            Ok(Some(report)) => {
                let failed = !report.failed.is_empty();
                if failed {
                    job.runs_failed.fetch_add(1, Ordering::Relaxed);
                } else {
                    job.runs_ok.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(sync = %name, tags = report.tags, in_sync = report.in_sync, copied = report.copied.len(), failed = report.failed.len(), bytes = report.bytes_fetched, "scheduled sync finished");
                for f in &report.failed {
                    tracing::warn!(sync = %name, failure = %f, "scheduled sync could not copy a tag");
                }
                let summary = serde_json::to_vec(&report).unwrap_or_default();
                if let Err(e) = registry.note_sync_finished(&name, summary.into()).await {
                    tracing::warn!(sync = %name, error = %e, "the sync's finish could not be recorded");
                    // Without the mark the next look would find it due at once: a store
                    // that refuses writes must not turn the schedule into a loop against
                    // the upstream.
                    tokio::time::sleep(interval).await;
                }
            }
            // Another replica is running it; look again when it may have finished.
            Ok(None) => tokio::time::sleep(LEASE_TTL / 4).await,
            Err(e) => {
                job.runs_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sync = %name, error = %e, "the sync's lease could not be taken");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}
