//! Garbage collection over memory and local disk: what is swept, what is spared, the lease.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use registry_core::registry::CacheExpiry;
use registry_core::registry::gc::GcOptions;
use registry_core::storage::{ByteStream, PutCondition, StorageError};
use registry_core::{
    Algorithm, Digest, Reference, Registry, RegistrySettings, RepositoryName, StorageDriver,
};
use storage_drivers::{LocalDriver, memory_driver};

fn body(data: &[u8]) -> ByteStream {
    stream::iter(vec![Ok::<_, StorageError>(Bytes::copy_from_slice(data))]).boxed()
}

fn opts(grace: Duration) -> GcOptions {
    GcOptions {
        grace,
        dry_run: false,
        holder: "test".into(),
        lease_ttl: Duration::from_secs(600),
        delete_untagged: false,
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

/// Pushes a config and a layer and tags an image manifest naming them `v1`.
/// Returns (layer, config, manifest) digests.
async fn push_image(r: &Registry, name: &RepositoryName) -> (Digest, Digest, Digest) {
    push_image_of(r, name, b"layer bytes").await
}

/// As [`push_image`], with a layer of its own.
async fn push_image_of(
    r: &Registry,
    name: &RepositoryName,
    layer: &[u8],
) -> (Digest, Digest, Digest) {
    let size = layer.len();
    let layer = push_blob(r, name, layer).await;
    let config = push_blob(r, name, b"{}").await;
    let body = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
    })
    .to_string();
    let out = r
        .put_manifest(
            name,
            &Reference::Tag("v1".parse().unwrap()),
            Bytes::from(body),
            None,
            &[],
        )
        .await
        .unwrap();
    (layer, config, out.digest)
}

async fn scenario(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store.clone(), RegistrySettings::default());
    let name: RepositoryName = "gc/app".parse().unwrap();
    let (layer, _config, manifest) = push_image(&r, &name).await;
    let orphan = push_blob(&r, &name, b"never referenced").await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Within the grace window nothing goes.
    let report = r
        .collect_garbage(&opts(Duration::from_secs(3600)))
        .await
        .unwrap()
        .unwrap();
    assert!(report.swept.is_empty(), "{report:?}");
    assert!(report.spared >= 1);

    // Without grace, only the orphan goes.
    let dry = r
        .collect_garbage(&GcOptions {
            dry_run: true,
            ..opts(Duration::ZERO)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dry.swept, vec![orphan.to_string()]);
    assert!(
        r.read_blob(&orphan, None).await.is_ok(),
        "a dry run removes nothing"
    );
    let report = r
        .collect_garbage(&opts(Duration::ZERO))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.swept, vec![orphan.to_string()]);
    assert_eq!(report.bytes, 16);
    assert!(r.read_blob(&orphan, None).await.is_err());
    assert!(r.read_blob(&layer, None).await.is_ok());
    assert_eq!(
        r.get_manifest(&name, &Reference::Tag("v1".parse().unwrap()))
            .await
            .unwrap()
            .digest,
        manifest
    );

    // Untagged manifests go only when asked: untag v1, keep it by default, then remove it.
    r.delete_manifest(&name, &Reference::Tag("v1".parse().unwrap()))
        .await
        .unwrap();
    let report = r
        .collect_garbage(&opts(Duration::ZERO))
        .await
        .unwrap()
        .unwrap();
    assert!(
        report.swept.is_empty() && report.untagged.is_empty(),
        "{report:?}"
    );
    let untagged = GcOptions {
        delete_untagged: true,
        ..opts(Duration::ZERO)
    };
    let report = r.collect_garbage(&untagged).await.unwrap().unwrap();
    assert_eq!(report.untagged, vec![format!("gc/app@{}", manifest)]);
    assert_eq!(
        report.swept.len(),
        3,
        "manifest, config and layer: {report:?}"
    );
    assert!(
        r.get_manifest(&name, &Reference::Digest(manifest.clone()))
            .await
            .is_err()
    );
    // Push it again and delete it by digest: the same space is reclaimed without the option.
    let (layer, config, manifest) = push_image(&r, &name).await;

    // Delete the manifest: its blobs become garbage and space is reclaimed.
    r.delete_manifest(&name, &Reference::Digest(manifest.clone()))
        .await
        .unwrap();
    let report = r
        .collect_garbage(&opts(Duration::ZERO))
        .await
        .unwrap()
        .unwrap();
    let mut swept = report.swept.clone();
    swept.sort();
    let mut expect = vec![layer.to_string(), config.to_string(), manifest.to_string()];
    expect.sort();
    assert_eq!(swept, expect);

    // Another collector holds the lease: this one does nothing.
    store
        .put_bytes(
            "docker/registry/v2/berth/gc-lease",
            Bytes::from_static(b"{\"holder\":\"other\"}"),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    assert!(
        r.collect_garbage(&opts(Duration::ZERO))
            .await
            .unwrap()
            .is_none()
    );
    // ...until the lease is stale.
    let stale = GcOptions {
        lease_ttl: Duration::ZERO,
        ..opts(Duration::ZERO)
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(r.collect_garbage(&stale).await.unwrap().is_some());
}

#[tokio::test]
async fn memory() {
    scenario(Arc::new(memory_driver(1 << 20))).await;
}

#[tokio::test]
async fn local_disk() {
    let dir = tempfile::tempdir().unwrap();
    scenario(Arc::new(LocalDriver::new(dir.path()).unwrap())).await;
}

/// Cached repositories lose what nobody pulled within their TTL; others keep everything.
async fn expiry_scenario(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store, RegistrySettings::default());
    let repo = |n: &str| n.parse::<RepositoryName>().unwrap();
    let (cold, hot, kept, mine) = (
        repo("hub/cold"),
        repo("hub/hot"),
        repo("keep/app"),
        repo("mine/app"),
    );
    let (cold_layer, _, cold_manifest) = push_image_of(&r, &cold, b"cold layer").await;
    let mut layers = Vec::new();
    for (name, bytes) in [(&hot, "hot"), (&kept, "kept"), (&mine, "mine")] {
        layers.push(push_image_of(&r, name, bytes.as_bytes()).await.0);
    }
    let ttl = Duration::from_millis(300);
    let o = GcOptions {
        cache_expiry: vec![
            CacheExpiry {
                prefix: Some("keep".into()),
                ttl: None,
            },
            CacheExpiry {
                prefix: Some("hub".into()),
                ttl: Some(ttl),
            },
        ],
        ..opts(Duration::ZERO)
    };
    let v1 = Reference::Tag("v1".parse().unwrap());

    // Content without a marker (cached before expiry existed) starts its clock now.
    let first = r.collect_garbage(&o).await.unwrap().unwrap();
    assert!(first.expired.is_empty(), "{first:?}");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    r.note_pull(&hot, &v1).await.unwrap();

    let dry = r
        .collect_garbage(&GcOptions {
            dry_run: true,
            ..o.clone()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        dry.expired,
        vec![
            "hub/cold:v1".to_owned(),
            format!("hub/cold@{cold_manifest}")
        ]
    );
    assert!(
        r.get_manifest(&cold, &v1).await.is_ok(),
        "a dry run removes nothing"
    );

    let report = r.collect_garbage(&o).await.unwrap().unwrap();
    assert_eq!(report.expired, dry.expired);
    assert!(
        report.swept.contains(&cold_layer.to_string()),
        "the expired image's layer goes in the same collection: {report:?}"
    );
    for l in &layers {
        assert!(!report.swept.contains(&l.to_string()), "{l} swept");
    }
    assert!(r.get_manifest(&cold, &v1).await.is_err());
    let by_digest = Reference::Digest(cold_manifest);
    assert!(r.get_manifest(&cold, &by_digest).await.is_err());
    for name in [&hot, &kept, &mine] {
        assert!(r.get_manifest(name, &v1).await.is_ok(), "{name} lost v1");
    }
}

#[tokio::test]
async fn cache_expiry_in_memory() {
    expiry_scenario(Arc::new(memory_driver(1 << 20))).await;
}

#[tokio::test]
async fn cache_expiry_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    expiry_scenario(Arc::new(LocalDriver::new(dir.path()).unwrap())).await;
}

/// Retention of the newest tag, and a 100-byte quota, everywhere.
struct EveryRepository;

impl registry_core::RepositoryRules for EveryRepository {
    fn immutable(&self, _: &RepositoryName, _: &registry_core::Tag) -> Option<String> {
        None
    }

    fn retention(&self, _: &RepositoryName) -> Option<registry_core::Retention> {
        Some(registry_core::Retention {
            name: "newest".into(),
            newest: Some(1),
            ..Default::default()
        })
    }

    fn quota(&self, _: &RepositoryName) -> Option<registry_core::Quota> {
        Some(registry_core::Quota {
            name: "small".into(),
            bytes: 10_000,
        })
    }
}

/// A collection removed the tag a push had just written (it looked at the tag before the
/// push): the push, finding the collection's mark, writes the tag again once it is gone.
#[tokio::test]
async fn a_push_that_meets_a_retiring_mark_writes_its_tag_again() {
    let store: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let r = Registry::new(store.clone(), RegistrySettings::default());
    r.set_rules(Arc::new(EveryRepository));
    let name: RepositoryName = "race/app".parse().unwrap();
    let tag: registry_core::Tag = "v1".parse().unwrap();
    let mark = registry_core::layout::retiring_marker(&name, &tag);
    store
        .put_bytes(&mark, Bytes::new(), PutCondition::Overwrite)
        .await
        .unwrap();
    let collector = {
        let (store, name, tag) = (store.clone(), name.clone(), tag.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store
                .delete_prefix(&registry_core::layout::tag_prefix(&name, &tag))
                .await
                .unwrap();
            store.delete(&mark).await.unwrap();
        })
    };
    let (_, _, manifest) = push_image(&r, &name).await;
    collector.await.unwrap();
    assert_eq!(
        r.resolve(&name, &Reference::Tag(tag)).await.unwrap(),
        manifest
    );
}

/// A revision reserved in the quota ledger and never linked (a crash between the two) counts
/// until the next collection, which lets it go; the usage then agrees with the layout.
#[tokio::test]
async fn a_collection_reconciles_the_quota_ledger_with_the_layout() {
    let store: Arc<dyn StorageDriver> = Arc::new(memory_driver(1 << 20));
    let r = Registry::new(store.clone(), RegistrySettings::default());
    r.set_rules(Arc::new(EveryRepository));
    let name: RepositoryName = "quota/app".parse().unwrap();
    let (_, _, manifest) = push_image(&r, &name).await;
    let (_, used) = r.quota_usage(&name).await.unwrap().unwrap();
    assert!(used > 0);
    // The crash: the revision is gone from the layout, the ledger never heard.
    store
        .delete(&registry_core::layout::manifest_revision_link(
            &name, &manifest,
        ))
        .await
        .unwrap();
    store
        .delete_prefix(&registry_core::layout::tags_prefix(&name))
        .await
        .unwrap();
    assert_eq!(r.quota_usage(&name).await.unwrap().unwrap().1, used);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        r.collect_garbage(&opts(Duration::ZERO))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(r.quota_usage(&name).await.unwrap().unwrap().1, 0);
    // Past the quota: refused with the numbers.
    let big = vec![1u8; 20_000];
    let err = r
        .check_blob_quota(&name, None, big.len() as u64)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("10000 bytes") && err.to_string().contains("adds 20000"),
        "{err}"
    );
}

/// An incremental run looks only at what changed (uploads, removed revisions) and decides
/// each blob from the reference index; a full run after it, and a full dry run beside it,
/// agree on what goes.
async fn incremental_scenario(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store.clone(), RegistrySettings::default());
    let incremental = GcOptions {
        incremental: true,
        ..opts(Duration::ZERO)
    };
    let dry = |o: &GcOptions| GcOptions {
        dry_run: true,
        ..o.clone()
    };
    let (a, b, c): (RepositoryName, RepositoryName, RepositoryName) = (
        "inc/a".parse().unwrap(),
        "inc/b".parse().unwrap(),
        "inc/c".parse().unwrap(),
    );
    let (old_layer, _, _) = push_image_of(&r, &a, b"before the first full run").await;
    for i in 0..20 {
        let name: RepositoryName = format!("inc/old{i}").parse().unwrap();
        push_image_of(&r, &name, format!("old layer {i}").as_bytes()).await;
    }
    // No full run has completed the reference index yet: asked for incremental, it is full.
    let first = r.collect_garbage(&incremental).await.unwrap().unwrap();
    assert!(first.mode.starts_with("full"), "{}", first.mode);
    assert!(r.references_complete_since().await.unwrap().is_some());

    // What changes after it.
    let (moved_from_layer, _, _) = push_image_of(&r, &a, b"a's first v1").await;
    let (_, _, _) = push_image_of(&r, &a, b"a's second v1").await;
    let (b_layer, _, b_manifest) = push_image_of(&r, &b, b"only b").await;
    let (shared, _, c_manifest) = push_image_of(&r, &c, b"a's second v1").await;
    let orphan = push_blob(&r, &a, b"never referenced").await;
    r.delete_manifest(&b, &Reference::Digest(b_manifest.clone()))
        .await
        .unwrap();
    r.delete_manifest(&c, &Reference::Digest(c_manifest.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let swept = |rep: &registry_core::registry::gc::GcReport| {
        let mut s = rep.swept.clone();
        s.sort();
        s
    };
    let inc = r
        .collect_garbage(&dry(&incremental))
        .await
        .unwrap()
        .unwrap();
    let verifying = GcOptions {
        verify_references: true,
        ..opts(Duration::ZERO)
    };
    let full = r.collect_garbage(&dry(&verifying)).await.unwrap().unwrap();
    assert_eq!(inc.mode, "incremental");
    // c's image is a's current one (same layer, same config, same manifest bytes): removing
    // c's revision leaves what a refers to.
    let mut expected = vec![
        orphan.to_string(),
        b_layer.to_string(),
        b_manifest.to_string(),
    ];
    expected.sort();
    assert_eq!(swept(&inc), expected, "incremental: {inc:?}");
    assert_eq!(swept(&full), expected, "full: {full:?}");
    assert_eq!(
        full.references.as_ref().map(|f| (f.added, f.removed)),
        Some((0, 0)),
        "the index matches the layout"
    );
    assert!(
        inc.candidates < full.marked,
        "only what changed is looked at: {} candidates",
        inc.candidates
    );

    let done = r.collect_garbage(&incremental).await.unwrap().unwrap();
    assert_eq!(swept(&done), expected);
    for kept in [&old_layer, &moved_from_layer, &shared, &c_manifest] {
        assert!(
            store
                .stat(&registry_core::layout::blob_data(kept))
                .await
                .is_ok(),
            "{kept} is still referenced"
        );
    }
    let after = r
        .collect_garbage(&dry(&opts(Duration::ZERO)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.swept.is_empty(),
        "a full run finds nothing more: {after:?}"
    );
    let again = r.collect_garbage(&incremental).await.unwrap().unwrap();
    assert_eq!(again.candidates, 0, "every candidate was decided");

    // Entries lost (a store written before the index) are written back by a verifying run,
    // and entries of a revision that is gone are removed.
    let lost = registry_core::layout::references_of(&old_layer);
    store.delete_prefix(&lost).await.unwrap();
    let gone_revision = Digest::of(Algorithm::Sha256, b"a revision that is not there");
    let stale = registry_core::layout::reference_entry(&old_layer, &a, &gone_revision);
    let body = registry_core::layout::reference_body(&a, &gone_revision);
    store
        .put_bytes(&stale, Bytes::from(body), PutCondition::Overwrite)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mended = r.collect_garbage(&verifying).await.unwrap().unwrap();
    assert_eq!(
        mended.references.as_ref().map(|f| (f.added, f.removed)),
        Some((1, 1)),
        "{mended:?}"
    );
    let entries: Vec<String> = store.list_recursive(&lost).try_collect().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_ne!(entries[0], stale);
}

#[tokio::test]
async fn incremental_runs_agree_with_full_runs_in_memory() {
    incremental_scenario(Arc::new(memory_driver(5 << 20))).await;
}

#[tokio::test]
async fn incremental_runs_agree_with_full_runs_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    incremental_scenario(Arc::new(LocalDriver::new(dir.path()).unwrap())).await;
}
