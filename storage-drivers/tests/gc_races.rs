//! Garbage collection racing pushes on other replicas: a push that relies on an old blob while
//! a collection removes it, and what one replica remembers of bytes another one removed.
//!
//! Two `Registry` values on one store are two replicas. The collector's store is wrapped so
//! that another replica's push runs at the exact moment the collection removes something.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use registry_core::registry::gc::GcOptions;
use registry_core::storage::{ByteStream, PutCondition, StorageError};
use registry_core::{
    Algorithm, Digest, Reference, Registry, RegistryError, RegistrySettings, RepositoryName,
    StorageDriver, layout,
};
use storage_drivers::{LocalDriver, memory_driver};

mod common;
use common::{Interjection, Interposed};

fn body(data: &[u8]) -> ByteStream {
    stream::iter(vec![Ok::<_, StorageError>(Bytes::copy_from_slice(data))]).boxed()
}

fn collect_now(delete_untagged: bool) -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        dry_run: false,
        holder: "test".into(),
        lease_ttl: Duration::from_secs(600),
        delete_untagged,
        cache_expiry: Vec::new(),
        incremental: false,
        verify_references: false,
    }
}

async fn push_blob(r: &Registry, name: &RepositoryName, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    r.put_blob(name, &d, body(data)).await.unwrap();
    d
}

fn image_manifest(config: &Digest, layer: &Digest, layer_len: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
        })
        .to_string(),
    )
}

fn tag(t: &str) -> Reference {
    Reference::Tag(t.parse().unwrap())
}

async fn stored(store: &dyn StorageDriver, d: &Digest) -> bool {
    store.stat(&layout::blob_data(d)).await.is_ok()
}

async fn assert_nothing_held(store: &dyn StorageDriver) {
    let held: Vec<_> = store
        .list_recursive(&layout::gc_quarantine_prefix())
        .collect()
        .await;
    assert!(held.is_empty(), "bytes left moved aside: {held:?}");
}

/// A collection removes an old, unreferenced layer and config; right as the first one's bytes
/// are moved aside, another replica pushes a manifest naming both (and finds them stored).
/// Their bytes must stay.
/// With `incremental`, the collection is an incremental one, which finds the blobs among the
/// candidates their uploads recorded.
async fn a_blob_relied_on_while_it_is_removed_stays(
    inner: Arc<dyn StorageDriver>,
    incremental: bool,
) {
    let other = Arc::new(Registry::new(inner.clone(), RegistrySettings::default()));
    if incremental {
        // A verifying full run completes the (empty) reference index first.
        let verifying = GcOptions {
            verify_references: true,
            ..collect_now(false)
        };
        other.collect_garbage(&verifying).await.unwrap();
    }
    let name: RepositoryName = "race/app".parse().unwrap();
    let layer = push_blob(&other, &name, b"an old layer").await;
    let config = push_blob(&other, &name, b"{}").await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let manifest = image_manifest(&config, &layer, 12);
    let pushed = Arc::new(Mutex::new(None));
    let push = {
        let (other, name, manifest, pushed) = (
            other.clone(),
            name.clone(),
            manifest.clone(),
            pushed.clone(),
        );
        Box::new(move || {
            Box::pin(async move {
                let r = other
                    .put_manifest(&name, &tag("v1"), manifest, None, &[])
                    .await;
                *pushed.lock().unwrap() = Some(r.map(|o| o.digest));
            }) as BoxFuture<'static, ()>
        }) as Interjection
    };
    // At the first blob moved aside, whichever the listing gives first.
    let collector_store = Interposed::over(inner.clone())
        .interjecting(|key| key.starts_with(&layout::gc_quarantine_prefix()), push);
    let collector = Registry::new(Arc::new(collector_store), RegistrySettings::default());
    let options = GcOptions {
        incremental,
        ..collect_now(false)
    };
    let report = collector.collect_garbage(&options).await.unwrap().unwrap();
    if incremental {
        assert_eq!(report.mode, "incremental");
    }

    let pushed = pushed.lock().unwrap().take();
    let manifest_digest = pushed
        .expect("the collection never began removing the layer")
        .expect("the push during the collection was refused");
    assert!(report.swept.is_empty(), "removed: {:?}", report.swept);
    assert!(
        stored(inner.as_ref(), &layer).await,
        "the layer's bytes are gone"
    );
    assert!(
        stored(inner.as_ref(), &config).await,
        "the config's bytes are gone"
    );
    let got = other.get_manifest(&name, &tag("v1")).await.unwrap();
    assert_eq!(got.digest, manifest_digest);
    assert_nothing_held(inner.as_ref()).await;
}

#[tokio::test]
async fn relied_on_during_removal_in_memory() {
    for incremental in [false, true] {
        a_blob_relied_on_while_it_is_removed_stays(Arc::new(memory_driver(1 << 20)), incremental)
            .await;
    }
}

#[tokio::test]
async fn relied_on_during_removal_on_local_disk() {
    for incremental in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalDriver::new(dir.path()).unwrap());
        a_blob_relied_on_while_it_is_removed_stays(store, incremental).await;
    }
}

/// A collection removes an untagged revision; right then another replica pushes an index
/// naming it. The revision must stay.
#[tokio::test]
async fn an_untagged_revision_named_during_its_removal_stays() {
    let inner: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let other = Arc::new(Registry::new(inner.clone(), RegistrySettings::default()));
    let name: RepositoryName = "race/multi".parse().unwrap();
    let layer = push_blob(&other, &name, b"layer").await;
    let config = push_blob(&other, &name, b"{}").await;
    let child = image_manifest(&config, &layer, 5);
    let child_digest = Digest::of(Algorithm::Sha256, &child);
    other
        .put_manifest(
            &name,
            &Reference::Digest(child_digest.clone()),
            child.clone(),
            None,
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let index = Bytes::from(
        serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child_digest, "size": child.len()}],
        })
        .to_string(),
    );
    let pushed = Arc::new(Mutex::new(None));
    let push = {
        let (other, name, pushed) = (other.clone(), name.clone(), pushed.clone());
        Box::new(move || {
            Box::pin(async move {
                let r = other
                    .put_manifest(&name, &tag("multi"), index, None, &[])
                    .await;
                *pushed.lock().unwrap() = Some(r.map(|o| o.digest));
            }) as BoxFuture<'static, ()>
        }) as Interjection
    };
    let revision = layout::manifest_revision_link(&name, &child_digest);
    let collector_store =
        Interposed::over(inner.clone()).interjecting(move |key| key == revision, push);
    let collector = Registry::new(Arc::new(collector_store), RegistrySettings::default());
    let report = collector
        .collect_garbage(&collect_now(true))
        .await
        .unwrap()
        .unwrap();

    pushed
        .lock()
        .unwrap()
        .take()
        .expect("the collection never began removing the revision")
        .expect("the index pushed during the collection was refused");
    assert!(report.untagged.is_empty(), "removed: {:?}", report.untagged);
    other
        .get_manifest(&name, &Reference::Digest(child_digest))
        .await
        .expect("the index names a revision that is gone");
    assert!(stored(inner.as_ref(), &layer).await);
}

/// One replica pushed a blob and remembers it; another replica's collection removed its
/// bytes. A manifest naming it must be refused, not stored pointing at nothing.
#[tokio::test]
async fn a_manifest_naming_bytes_another_replica_removed_is_refused() {
    let inner: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let r = Registry::new(inner.clone(), RegistrySettings::default());
    let name: RepositoryName = "race/stale".parse().unwrap();
    let layer = push_blob(&r, &name, b"layer").await;
    let config = push_blob(&r, &name, b"{}").await;
    // What a collection elsewhere does to bytes nothing referenced (links stay, as in
    // distribution).
    inner.delete(&layout::blob_data(&layer)).await.unwrap();

    let v1 = tag("v1");
    let push_v1 = || r.put_manifest(&name, &v1, image_manifest(&config, &layer, 5), None, &[]);
    let refused = push_v1().await;
    assert!(
        matches!(&refused, Err(RegistryError::ManifestBlobUnknown(d)) if *d == layer),
        "{refused:?}"
    );
    // The client learns the layer is missing and sends it again; then the push goes through.
    assert!(matches!(
        r.stat_blob(&name, &layer).await,
        Err(RegistryError::BlobUnknown(_))
    ));
    push_blob(&r, &name, b"layer").await;
    push_v1().await.unwrap();
    assert!(stored(inner.as_ref(), &layer).await);
}

/// A blob uploaded again whose bytes this replica remembers but another replica's collection
/// removed: the upload stores them.
#[tokio::test]
async fn an_upload_stores_bytes_another_replica_removed() {
    let inner: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let r = Registry::new(inner.clone(), RegistrySettings::default());
    let name: RepositoryName = "race/again".parse().unwrap();
    let layer = push_blob(&r, &name, b"layer").await;
    inner.delete(&layout::blob_data(&layer)).await.unwrap();
    push_blob(&r, &name, b"layer").await;
    assert!(
        stored(inner.as_ref(), &layer).await,
        "the upload was skipped"
    );
}

/// A collector killed while it held bytes aside: the next collection puts back what a
/// manifest names and removes the rest.
#[tokio::test]
async fn bytes_a_killed_collector_held_are_settled() {
    let inner: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let r = Registry::new(inner.clone(), RegistrySettings::default());
    let name: RepositoryName = "race/killed".parse().unwrap();
    let layer = push_blob(&r, &name, b"layer").await;
    let config = push_blob(&r, &name, b"{}").await;
    r.put_manifest(
        &name,
        &tag("v1"),
        image_manifest(&config, &layer, 5),
        None,
        &[],
    )
    .await
    .unwrap();
    let orphan = Digest::of(Algorithm::Sha256, b"nobody's");
    // The layer was moved aside (and relied on meanwhile); the orphan too.
    inner
        .rename(&layout::blob_data(&layer), &layout::gc_quarantine(&layer))
        .await
        .unwrap();
    inner
        .put_bytes(
            &layout::gc_quarantine(&orphan),
            Bytes::from_static(b"nobody's"),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_lease = GcOptions {
        lease_ttl: Duration::ZERO,
        ..collect_now(false)
    };
    r.collect_garbage(&after_lease).await.unwrap().unwrap();
    assert!(
        stored(inner.as_ref(), &layer).await,
        "the layer was not put back"
    );
    assert!(!stored(inner.as_ref(), &orphan).await);
    assert_nothing_held(inner.as_ref()).await;
}

/// A collector that cannot read the marker again once the bytes are moved aside puts them
/// back: a push may have relied on them. The collection fails (and the next one sweeps).
#[tokio::test]
async fn bytes_go_back_when_the_marker_cannot_be_read_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let inner: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let other = Registry::new(inner.clone(), RegistrySettings::default());
    let name: RepositoryName = "race/unreadable".parse().unwrap();
    let layer = push_blob(&other, &name, b"an old layer").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The first look at the marker (before the move) works; the one after it fails.
    let looks = AtomicUsize::new(0);
    let marker = layout::touched_marker(&layer);
    let collector_store = Interposed::over(inner.clone())
        .failing_stats(move |key| key == marker && looks.fetch_add(1, Ordering::SeqCst) >= 1);
    let collector = Registry::new(Arc::new(collector_store), RegistrySettings::default());
    assert!(
        collector
            .collect_garbage(&collect_now(false))
            .await
            .is_err()
    );
    assert!(
        stored(inner.as_ref(), &layer).await,
        "the bytes were not put back"
    );
    assert_nothing_held(inner.as_ref()).await;
}
