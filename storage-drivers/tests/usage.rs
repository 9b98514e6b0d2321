//! Usage per repository, walked from the layout: bytes once per blob per repository, bytes no
//! other repository shares, tags, manifests; the registry's total counts each blob once.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, stream};
use registry_core::storage::{ByteStream, StorageError};
use registry_core::{Algorithm, Digest, Reference, Registry, RegistrySettings, RepositoryName};
use storage_drivers::memory_driver;

fn body(data: &[u8]) -> ByteStream {
    stream::iter(vec![Ok::<_, StorageError>(Bytes::copy_from_slice(data))]).boxed()
}

async fn push(r: &Registry, repo: &str, tag: &str, layer: &[u8]) -> u64 {
    let name: RepositoryName = repo.parse().unwrap();
    let config = b"{}";
    let (l, c) = (
        Digest::of(Algorithm::Sha256, layer),
        Digest::of(Algorithm::Sha256, config),
    );
    r.put_blob(&name, &l, body(layer)).await.unwrap();
    r.put_blob(&name, &c, body(config)).await.unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
    })
    .to_string();
    let len = manifest.len() as u64;
    r.put_manifest(
        &name,
        &Reference::Tag(tag.parse().unwrap()),
        Bytes::from(manifest),
        None,
        &[],
    )
    .await
    .unwrap();
    len
}

#[tokio::test]
async fn repositories_count_their_bytes_and_what_only_they_hold() {
    let r = Registry::new(
        Arc::new(memory_driver(1 << 20)),
        RegistrySettings::default(),
    );
    let a_manifest = push(&r, "team/a", "v1", &[1u8; 1000]).await;
    let b_manifest = push(&r, "team/b", "v1", &[2u8; 300]).await;
    // The same image under a second tag adds nothing.
    push(&r, "team/b", "v2", &[2u8; 300]).await;
    let u = r.usage().await.unwrap();
    let by = |name: &str| u.repositories.iter().find(|x| x.name == name).unwrap();
    let (a, b) = (by("team/a"), by("team/b"));
    assert_eq!(a.bytes, 1000 + 2 + a_manifest);
    assert_eq!(
        a.unique_bytes,
        1000 + a_manifest,
        "the shared config is not a's alone"
    );
    assert_eq!(b.bytes, 300 + 2 + b_manifest);
    assert_eq!((a.tags, a.manifests, b.tags, b.manifests), (1, 1, 2, 1));
    assert!(a.last_push.is_some());
    assert_eq!(u.total_bytes, 1000 + 300 + 2 + a_manifest + b_manifest);
    assert_eq!(u.repositories[0].name, "team/a", "the biggest first");
}

#[tokio::test]
async fn tags_push_times_and_pulls_are_told_per_tag() {
    let r = Registry::new(
        Arc::new(memory_driver(1 << 20)),
        RegistrySettings::default(),
    );
    push(&r, "team/a", "old", &[1u8; 10]).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    push(&r, "team/a", "new", &[2u8; 10]).await;
    let name: RepositoryName = "team/a".parse().unwrap();
    let mut all = r.all_tag_push_times(&name).await.unwrap();
    all.sort();
    assert_eq!(all.len(), 2);
    let (new, old) = (all[0].1.unwrap(), all[1].1.unwrap());
    assert!(new > old, "{all:?}");
    let some = r
        .tag_push_times(&name, &["old".into(), "gone".into()])
        .await
        .unwrap();
    assert_eq!(some, vec![Some(old), None]);
    // Pulls by tag and by digest, told apart, and not another repository's.
    r.note_repository_pull(&name, &Reference::Tag("old".parse().unwrap()));
    let other: RepositoryName = "team/ab".parse().unwrap();
    r.note_repository_pull(&other, &Reference::Tag("new".parse().unwrap()));
    let d = Digest::of(Algorithm::Sha256, b"x");
    r.note_repository_pull(&name, &Reference::Digest(d.clone()));
    r.flush_pull_times().await.unwrap();
    let pulls = r.reference_pull_times(&name).await.unwrap();
    let mut keys: Vec<&String> = pulls.keys().collect();
    keys.sort();
    assert_eq!(keys, vec![&format!("@{d}"), &"old".to_string()]);
}
