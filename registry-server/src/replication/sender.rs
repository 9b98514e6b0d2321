//! Sends one downstream its queue: on the replica holding the downstream's lease, oldest event
//! first, each until the downstream takes it. A downstream that is down holds its events
//! back (retried with a growing pause, up to a minute) and gets them in order when it returns;
//! one that refuses an event for good (the content itself, not the moment) has it moved aside
//! and counted, so that the events behind it go on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use registry_core::{Reference, Registry, RegistryError, RepositoryName, Tag};

use registry_core::registry::{QueuedEvent, ReplicationAction};

use super::Downstream;
use super::image_copy::{CopyError, ImageCopy, local};

/// Longest pause between attempts at an event a downstream did not take.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First pause after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Sends the queue of `d` whenever this replica holds its lease; tries for the lease again
/// when another replica holds it.
pub(super) async fn run(
    registry: Arc<Registry>,
    d: Arc<Downstream>,
    poll: Duration,
    lease_ttl: Duration,
) {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "berth".into());
    let holder = format!("{host}/{}", std::process::id());
    let lease = registry.replication_lease(&d.settings.name, &holder, lease_ttl);
    loop {
        let outcome = lease
            .run_while_held(registry.store(), async |_| {
                d.stats.sending.store(true, Ordering::Relaxed);
                drain(&registry, &d, poll).await
            })
            .await;
        d.stats.sending.store(false, Ordering::Relaxed);
        match outcome {
            Ok(Some(_)) => {}
            Ok(None) => tokio::time::sleep((lease_ttl / 2).min(poll)).await,
            Err(e) => {
                tracing::warn!(downstream = %d.settings.name, error = %e, "the replication lease could not be taken");
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// Sends events as they come; never returns. Each pass lists the queue once and sends
/// every event of that listing in order (reading each just before it is sent), so a backlog
/// of n events costs one listing per pass, not one per batch.
async fn drain(registry: &Registry, d: &Downstream, poll: Duration) {
    loop {
        let keys = match registry.replication_queue_keys(&d.settings.name).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(downstream = %d.settings.name, error = %e, "the replication queue could not be read");
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        d.stats.depth.store(keys.len() as u64, Ordering::Relaxed);
        if keys.is_empty() {
            note_lag(d, None);
            tokio::select! {
                _ = d.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        let total = keys.len();
        for (i, key) in keys.iter().enumerate() {
            let queued = match registry.queued_event(key).await {
                Ok(Some(q)) => q,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(downstream = %d.settings.name, error = %e, "a queued event could not be read");
                    tokio::time::sleep(poll).await;
                    break;
                }
            };
            note_lag(d, Some(&queued));
            d.stats
                .depth
                .store(total.saturating_sub(i) as u64, Ordering::Relaxed);
            deliver(registry, d, &queued).await;
        }
    }
}

fn note_lag(d: &Downstream, oldest: Option<&QueuedEvent>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64);
    let lag = oldest
        .and_then(|q| q.event.as_ref())
        .map_or(0, |e| now_ms.saturating_sub(e.at_ms) / 1000);
    d.stats.lag_seconds.store(lag, Ordering::Relaxed);
}

/// Sends one event until the downstream takes it or refuses it for good.
async fn deliver(registry: &Registry, d: &Downstream, queued: &QueuedEvent) {
    let mut pause = FIRST_BACKOFF;
    loop {
        match send(registry, d, queued).await {
            Ok(()) => {
                d.stats.sent.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(CopyError::Transient(why)) => {
                d.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(downstream = %d.settings.name, error = %why, retry_in = ?pause, "replication will be tried again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(CopyError::Refused(why)) => {
                d.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                tracing::error!(downstream = %d.settings.name, error = %why, event = ?queued.event, "the downstream refused an event for good; it is kept under the queue's failed/");
                if let Err(e) = registry
                    .dead_letter_replication(&d.settings.name, queued, &why)
                    .await
                {
                    tracing::warn!(downstream = %d.settings.name, error = %e, "a refused event could not be moved aside");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                    continue;
                }
                return;
            }
        }
    }
    // Taken: out of the queue. If this fails the event is sent again, which is harmless.
    if let Err(e) = registry.settle_replication(queued).await {
        tracing::warn!(downstream = %d.settings.name, error = %e, "a sent event could not be removed from the queue");
    }
}

/// Brings the downstream to what this registry holds now for the event's tag or digest.
async fn send(registry: &Registry, d: &Downstream, queued: &QueuedEvent) -> Result<(), CopyError> {
    let e = queued
        .event
        .as_ref()
        .ok_or_else(|| CopyError::Refused("the queued event cannot be read".into()))?;
    let name: RepositoryName = e
        .repository
        .parse()
        .map_err(|_| CopyError::Refused(format!("{:?} is not a repository", e.repository)))?;
    let mut copy = ImageCopy::new(registry, &d.client, &name);
    if let Some(tag) = &e.tag {
        let t: Tag = tag
            .parse()
            .map_err(|_| CopyError::Refused(format!("{tag:?} is not a tag")))?;
        // What the tag names now, whichever event this is: the last writer wins.
        return match registry.tag_target(&name, &t).await {
            Ok((digest, _)) => copy.tag(tag, &digest).await,
            Err(RegistryError::ManifestUnknown(_)) => copy.delete(tag).await,
            Err(e) => Err(local(e)),
        };
    }
    let digest = e
        .digest
        .as_deref()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| CopyError::Refused("an event without a tag or a digest".into()))?;
    let here = match registry.resolve(&name, &Reference::Digest(digest)).await {
        Ok(d) => Some(d),
        Err(RegistryError::ManifestUnknown(_)) => None,
        Err(e) => return Err(local(e)),
    };
    match (e.action, here) {
        (_, Some(d)) => copy.digest(&d).await,
        // Pushed, then deleted before it could be sent: the delete event follows.
        (ReplicationAction::Push, None) => Ok(()),
        (ReplicationAction::Delete, None) => {
            let digest = e.digest.as_deref().unwrap_or_default();
            copy.delete(digest).await
        }
    }
}
