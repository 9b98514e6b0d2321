//! Push mirroring: every push, tag move and delete in a repository a downstream wants is
//! queued in the store for it (`registry_core`'s replication queue) and sent by whichever
//! replica holds that downstream's lease, in order, retried with backoff until it is taken.
//! `berth replicate --once` (reconcile) compares and repairs what events could not carry.
//! Scheduled syncs copy chosen repositories in from upstream registries.

mod image_copy;
mod image_fetch;
pub(crate) mod reconcile;
pub(crate) mod scheduled_sync;
mod sender;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use registry_core::registry::{ReplicationAction, ReplicationEvent};
use registry_core::{Digest, Registry, RepositoryName};

use crate::config::{DownstreamSettings, ReplicationSettings};
use crate::observe::metrics::{label, write_family};
use crate::upstream::{UpstreamClient, UpstreamError};

/// One downstream registry: its settings, its client, what its sender is doing.
pub(crate) struct Downstream {
    pub(crate) settings: DownstreamSettings,
    pub(crate) client: UpstreamClient,
    /// Rung when this replica queues an event, so that its sender need not wait for a poll.
    wake: tokio::sync::Notify,
    stats: DownstreamStats,
}

/// What the sender of one downstream last saw and did (on the replica holding its lease).
#[derive(Default)]
struct DownstreamStats {
    /// Whether this replica holds the lease (only the holder knows the queue).
    sending: AtomicBool,
    /// Events waiting at the last look.
    depth: AtomicU64,
    /// Age in seconds of the oldest waiting event at the last look.
    lag_seconds: AtomicU64,
    /// Events sent.
    sent: AtomicU64,
    /// Attempts that failed and will be tried again.
    failures: AtomicU64,
    /// Events given up on (refused for good), kept in the store.
    dead_letters: AtomicU64,
    /// Events this replica could not queue (the store refused): only a reconcile sends them.
    unqueued: AtomicU64,
}

/// Every downstream, and the way pushes reach their queues.
pub struct Replication {
    downstreams: Vec<Arc<Downstream>>,
    syncs: Vec<Arc<scheduled_sync::SyncJob>>,
    poll: std::time::Duration,
    lease_ttl: std::time::Duration,
}

impl Replication {
    /// The downstreams of `settings`, with their clients.
    pub fn new(settings: &ReplicationSettings) -> Result<Replication, UpstreamError> {
        let downstreams = settings
            .downstreams
            .iter()
            .map(|d| {
                Ok(Arc::new(Downstream {
                    client: UpstreamClient::for_purpose(d.remote.clone(), "replication")?,
                    settings: d.clone(),
                    wake: tokio::sync::Notify::new(),
                    stats: DownstreamStats::default(),
                }))
            })
            .collect::<Result<_, UpstreamError>>()?;
        let syncs = settings
            .syncs
            .iter()
            .map(|s| Ok(Arc::new(scheduled_sync::SyncJob::new(s.clone())?)))
            .collect::<Result<_, UpstreamError>>()?;
        Ok(Replication {
            downstreams,
            syncs,
            poll: settings.poll,
            lease_ttl: settings.lease_ttl,
        })
    }

    /// Starts one sender per downstream and each sync's schedule (call inside the runtime).
    pub fn start(&self, registry: Arc<Registry>) {
        for j in &self.syncs {
            tokio::spawn(scheduled_sync::schedule(registry.clone(), j.clone()));
        }
        for d in &self.downstreams {
            tokio::spawn(sender::run(
                registry.clone(),
                d.clone(),
                self.poll,
                self.lease_ttl,
            ));
        }
    }

    /// Queues a change of `repository` (its `tags`, or the manifest `digest` alone when no
    /// tag changed) for every downstream that wants the repository. A queue the store
    /// refuses is logged and counted; the change itself stands.
    pub async fn record(
        &self,
        registry: &Registry,
        action: ReplicationAction,
        repository: &RepositoryName,
        tags: &[&str],
        digest: Option<&Digest>,
    ) {
        if tags.is_empty() && digest.is_none() {
            return;
        }
        let digest = digest.map(|d| d.to_string());
        let events: Vec<ReplicationEvent> = if tags.is_empty() {
            vec![ReplicationEvent::now(
                action,
                repository.as_str(),
                None,
                digest.as_deref(),
            )]
        } else {
            tags.iter()
                .map(|t| {
                    ReplicationEvent::now(action, repository.as_str(), Some(t), digest.as_deref())
                })
                .collect()
        };
        // Every downstream's queue at once: the push waits for one store write, not one per
        // downstream.
        let queued = self
            .downstreams
            .iter()
            .filter(|d| d.settings.wants(repository.as_str()))
            .map(|d| async {
                for e in &events {
                    if let Err(err) = registry.enqueue_replication(&d.settings.name, e).await {
                        d.stats.unqueued.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(downstream = %d.settings.name, repository = %repository, error = %err, "a change could not be queued for replication; `berth replicate --once` will send it");
                    }
                }
                d.wake.notify_one();
            });
        futures::future::join_all(queued).await;
    }

    /// The Prometheus exposition of the downstreams' queues.
    pub fn render_metrics(&self, out: &mut String) {
        type Read = fn(&DownstreamStats) -> u64;
        let families: [(&str, &str, &str, Read, bool); 6] = [
            (
                "berth_replication_queue_depth",
                "Events waiting to be sent (on the replica sending them).",
                "gauge",
                |s| s.depth.load(Ordering::Relaxed),
                true,
            ),
            (
                "berth_replication_lag_seconds",
                "Age of the oldest event waiting (on the replica sending them).",
                "gauge",
                |s| s.lag_seconds.load(Ordering::Relaxed),
                true,
            ),
            (
                "berth_replication_sent_total",
                "Events sent.",
                "counter",
                |s| s.sent.load(Ordering::Relaxed),
                false,
            ),
            (
                "berth_replication_failures_total",
                "Attempts to send an event that failed and are tried again.",
                "counter",
                |s| s.failures.load(Ordering::Relaxed),
                false,
            ),
            (
                "berth_replication_dead_letters_total",
                "Events the downstream refused for good (kept in the store).",
                "counter",
                |s| s.dead_letters.load(Ordering::Relaxed),
                false,
            ),
            (
                "berth_replication_unqueued_total",
                "Changes that could not be queued (the store refused).",
                "counter",
                |s| s.unqueued.load(Ordering::Relaxed),
                false,
            ),
        ];
        write_family(
            out,
            "berth_sync_runs_total",
            "counter",
            "Scheduled syncs run on this replica, by result (failed: some tag was not copied).",
            self.syncs.iter().flat_map(|j| {
                [("ok", &j.runs_ok), ("failed", &j.runs_failed)].map(|(result, n)| {
                    (
                        format!(
                            "{},{}",
                            label("sync", &j.settings.name),
                            label("result", result)
                        ),
                        n.load(Ordering::Relaxed),
                    )
                })
            }),
        );
        write_family(
            out,
            "berth_sync_tags_copied_total",
            "counter",
            "Tags scheduled syncs copied in.",
            self.syncs.iter().map(|j| {
                (
                    label("sync", &j.settings.name),
                    j.tags_copied.load(Ordering::Relaxed),
                )
            }),
        );
        for (name, help, kind, read, only_sender) in families {
            write_family(
                out,
                name,
                kind,
                help,
                self.downstreams
                    .iter()
                    .filter(|d| !only_sender || d.stats.sending.load(Ordering::Relaxed))
                    .map(|d| (label("downstream", &d.settings.name), read(&d.stats))),
            );
        }
    }

    /// Runs every scheduled sync (or only the one named `only`) once, now.
    pub async fn sync_now(
        &self,
        registry: &Registry,
        only: Option<&str>,
        dry_run: bool,
    ) -> Vec<scheduled_sync::SyncReport> {
        let mut out = Vec::new();
        for j in &self.syncs {
            if only.is_none_or(|n| n == j.settings.name) {
                out.push(j.run(registry, dry_run).await);
            }
        }
        out
    }

    /// Reconciles every downstream (or only the one named `only`) with this registry.
    pub async fn reconcile(
        &self,
        registry: &Registry,
        only: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<reconcile::ReconcileReport>, registry_core::RegistryError> {
        let mut out = Vec::new();
        for d in &self.downstreams {
            if only.is_some_and(|n| n != d.settings.name) {
                continue;
            }
            out.push(reconcile::reconcile(registry, d, dry_run).await?);
        }
        Ok(out)
    }
}
