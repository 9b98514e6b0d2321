//! Garbage collection as the server schedules it (`berth.gc`) and as `berth gc` runs it.

use std::sync::Arc;
use std::time::Duration;

use registry_core::registry::gc::GcOptions;

use crate::api::App;
use crate::config::{GcSettings, UpstreamSettings};

/// A collector renews its lease every quarter of this; one that has not for this long has died
/// (a killed pod), and its lease is taken over (`berth.gc.leasettl` for the scheduled ones).
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// Options for one run by this process; the caches among `proxies` expire what nobody pulls.
pub fn options(
    grace: Duration,
    dry_run: bool,
    delete_untagged: bool,
    incremental: bool,
    verify_references: bool,
    lease_ttl: Duration,
    proxies: &[UpstreamSettings],
) -> GcOptions {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "berth".into());
    GcOptions {
        grace,
        dry_run,
        delete_untagged,
        holder: format!("{host}/{}", std::process::id()),
        lease_ttl,
        cache_expiry: crate::upstream::expiry_rules(proxies),
        incremental,
        verify_references,
    }
}

/// Collects on a schedule; with several replicas the lease lets one of them run at a time.
pub async fn schedule(app: Arc<App>, s: GcSettings) {
    loop {
        tokio::time::sleep(s.interval).await;
        // In incremental mode, the full run every `fullinterval` is the one that checks the
        // reference index.
        let incremental = match s.full_interval {
            Some(every) => match app.registry.references_complete_since().await {
                Ok(Some(last_full)) => last_full.elapsed().is_ok_and(|age| age < every),
                _ => false,
            },
            None => false,
        };
        match app
            .registry
            .collect_garbage(&options(
                s.grace,
                s.dry_run,
                s.delete_untagged,
                incremental,
                s.full_interval.is_some(),
                s.lease_ttl,
                &app.settings.proxies,
            ))
            .await
        {
            Ok(Some(r)) => {
                app.metrics.gc_run("ok");
                app.metrics
                    .add_gc(r.swept.len() as u64, r.bytes, r.expired.len() as u64);
                // The usage gauges, from the replica that just walked the store.
                match app.registry.usage().await {
                    Ok(u) => app.metrics.set_usage(&u),
                    Err(e) => tracing::warn!(error = %e, "usage gauges not refreshed"),
                }
                tracing::info!(
                    mode = %r.mode,
                    candidates = r.candidates,
                    swept = r.swept.len(),
                    bytes = r.bytes,
                    spared = r.spared,
                    marked = r.marked,
                    expired = r.expired.len(),
                    retention = r.retention.len(),
                    dry_run = s.dry_run,
                    "garbage collection finished"
                );
            }
            Ok(None) => {
                app.metrics.gc_run("skipped");
                tracing::info!("garbage collection skipped: another replica holds the lease")
            }
            Err(e) => {
                app.metrics.gc_run("failed");
                tracing::warn!(error = %e, "garbage collection failed")
            }
        }
    }
}
