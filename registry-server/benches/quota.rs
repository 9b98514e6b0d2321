//! What quota accounting adds to a manifest push in CPU: the same pushes into a repository of
//! N revisions over an in-memory store, with and without a quota covering it (the store
//! requests it adds are counted on S3 by `berth-bench --only quotacost`).
//! `cargo bench -p registry-server --bench quota`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use registry_core::{
    Algorithm, Digest, Quota, Reference, Registry, RegistrySettings, RepositoryName,
    RepositoryRules, Retention, StorageDriver, Tag,
};

struct QuotaEverywhere;

impl RepositoryRules for QuotaEverywhere {
    fn immutable(&self, _: &RepositoryName, _: &Tag) -> Option<String> {
        None
    }
    fn retention(&self, _: &RepositoryName) -> Option<Retention> {
        None
    }
    fn quota(&self, _: &RepositoryName) -> Option<Quota> {
        Some(Quota {
            name: "bench".into(),
            bytes: u64::MAX / 2,
        })
    }
}

/// A manifest naming a config and a layer of its own, their blobs stored.
async fn image(r: &Registry, name: &RepositoryName, i: usize) -> Bytes {
    let mut digests = Vec::new();
    for part in ["config", "layer"] {
        let data = Bytes::from(format!("{part} {i}"));
        let d = Digest::of(Algorithm::Sha256, &data);
        let body = futures::stream::iter(vec![Ok(data)]).boxed();
        r.put_blob(name, &d, body).await.unwrap();
        digests.push(d);
    }
    Bytes::from(
        serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0], "size": 9},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[1], "size": 8}],
        })
        .to_string(),
    )
}

/// Time per manifest push into a repository that holds `held` revisions.
async fn per_push(held: usize, with_quota: bool) -> Duration {
    let store: Arc<dyn StorageDriver> = Arc::new(storage_drivers::memory_driver(1 << 30));
    let r = Registry::new(store, RegistrySettings::default());
    if with_quota {
        r.set_rules(Arc::new(QuotaEverywhere));
    }
    let name: RepositoryName = "bench/app".parse().unwrap();
    for i in 0..held {
        let m = image(&r, &name, i).await;
        let tag = Reference::Tag(format!("t{i}").parse().unwrap());
        r.put_manifest(&name, &tag, m, None, &[]).await.unwrap();
    }
    let pushes = 200;
    let mut manifests = Vec::new();
    for i in held..held + pushes {
        manifests.push(image(&r, &name, i).await);
    }
    let started = Instant::now();
    for (i, m) in manifests.into_iter().enumerate() {
        let tag = Reference::Tag(format!("n{i}").parse().unwrap());
        r.put_manifest(&name, &tag, m, None, &[]).await.unwrap();
    }
    started.elapsed() / pushes as u32
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for held in [10, 1_000] {
        // Alternated, medians of 5: the machine is shared.
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            without.push(rt.block_on(per_push(held, false)));
            with.push(rt.block_on(per_push(held, true)));
        }
        with.sort();
        without.sort();
        let (w, wo) = (with[2], without[2]);
        println!(
            "manifest push into a repository of {held} revisions: {:.1} µs with a quota, {:.1} µs without: +{:.1} µs",
            w.as_secs_f64() * 1e6,
            wo.as_secs_f64() * 1e6,
            (w.as_secs_f64() - wo.as_secs_f64()) * 1e6
        );
    }
}
