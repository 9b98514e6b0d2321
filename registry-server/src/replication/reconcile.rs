//! `berth replicate --once`: compares every tag of every repository a downstream wants with
//! what the downstream has, sends what is missing or differs, and reports it all. It repairs
//! what events cannot: changes made before the downstream was configured, or a change the
//! store refused to queue. Tags found only downstream are reported, never deleted.

use registry_core::{Registry, RegistryError, RepositoryName, Tag};
use serde::Serialize;

use super::Downstream;
use super::image_copy::{CopyError, ImageCopy};

/// What one downstream's reconciliation found and did.
#[derive(Debug, Default, Serialize)]
pub struct ReconcileReport {
    /// The downstream's name.
    pub downstream: String,
    /// Repositories compared.
    pub repositories: usize,
    /// Tags compared.
    pub tags: usize,
    /// Tags already the same there.
    pub in_sync: usize,
    /// `repository:tag` missing downstream (sent, unless a dry run).
    pub missing: Vec<String>,
    /// `repository:tag` naming another manifest downstream (sent, unless a dry run).
    pub differing: Vec<String>,
    /// `repository:tag` only downstream (left alone).
    pub only_downstream: Vec<String>,
    /// `repository:tag: why` that could not be compared or sent.
    pub failed: Vec<String>,
    /// Blobs sent.
    pub blobs_sent: usize,
    /// Bytes of those blobs.
    pub bytes_sent: u64,
    /// Manifests sent.
    pub manifests_sent: usize,
}

impl ReconcileReport {
    /// Whether the downstream now holds every tag as here.
    pub fn converged(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Reconciles one downstream; with `dry_run`, only compares.
pub(crate) async fn reconcile(
    registry: &Registry,
    d: &Downstream,
    dry_run: bool,
) -> Result<ReconcileReport, RegistryError> {
    let mut report = ReconcileReport {
        downstream: d.settings.name.clone(),
        ..ReconcileReport::default()
    };
    let names = registry.list_catalog(None, None).await?.items;
    for raw in names {
        if !d.settings.wants(&raw) {
            continue;
        }
        let Ok(name) = raw.parse::<RepositoryName>() else {
            continue;
        };
        report.repositories += 1;
        let tags = match registry.list_tags(&name, None, None).await {
            Ok(p) => p.items,
            Err(RegistryError::NameUnknown(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut copy = ImageCopy::new(registry, &d.client, &name);
        for tag in &tags {
            report.tags += 1;
            let at = format!("{name}:{tag}");
            if let Err(why) = reconcile_tag(registry, &mut copy, tag, dry_run, &mut report).await {
                report.failed.push(format!("{at}: {why}"));
            }
        }
        match d.client.all_tags(name.as_str()).await {
            Ok(there) => report.only_downstream.extend(
                there
                    .into_iter()
                    .filter(|t| tags.binary_search(t).is_err())
                    .map(|t| format!("{name}:{t}")),
            ),
            Err(why) => report
                .failed
                .push(format!("{name}: listing its tags: {why}")),
        }
        report.blobs_sent += copy.copied.blobs;
        report.bytes_sent += copy.copied.bytes;
        report.manifests_sent += copy.copied.manifests;
    }
    Ok(report)
}

async fn reconcile_tag(
    registry: &Registry,
    copy: &mut ImageCopy<'_>,
    tag: &str,
    dry_run: bool,
    report: &mut ReconcileReport,
) -> Result<(), CopyError> {
    let t: Tag = tag
        .parse()
        .map_err(|_| CopyError::Refused(format!("{tag:?} is not a tag")))?;
    let here = match registry.tag_target(copy.repository, &t).await {
        Ok((d, _)) => d,
        // Deleted since the listing.
        Err(RegistryError::ManifestUnknown(_)) => return Ok(()),
        Err(e) => return Err(CopyError::Transient(e.to_string())),
    };
    let at = format!("{}:{tag}", copy.repository);
    match copy.remote_tag(tag).await? {
        Some(there) if there == here => {
            report.in_sync += 1;
            return Ok(());
        }
        Some(_) => report.differing.push(at),
        None => report.missing.push(at),
    }
    if dry_run {
        return Ok(());
    }
    copy.tag(tag, &here).await
}
