//! The ordered, sharded index behind the catalog and large tag lists, on memory and local disk:
//! pages that match a sorted list across splits and removals, writers on two replicas that lose
//! nothing, a split a dead writer left half done finished by the next one, and the catalog and
//! tag indexes kept by pushes and deletes and filled from a layout that has none.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use registry_core::digest::{Algorithm, Digest};
use registry_core::registry::SortedIndex;
use registry_core::registry::sorted_index::SHARD_MAX;
use registry_core::storage::PutCondition;
use registry_core::{Reference, Registry, RegistrySettings, StorageDriver, layout};
use storage_drivers::{LocalDriver, memory_driver};

mod common;
use common::Interposed;

const PREFIX: &str = "docker/registry/v2/berth/test-index/";

fn name(i: usize) -> String {
    // Not in insertion order, and of different lengths.
    format!("n{:x}/r{}", (i * 7919) % 100_003, i % 13)
}

async fn shard_count(store: &Arc<dyn StorageDriver>) -> usize {
    let keys: Vec<String> = store
        .list_recursive(&format!("{PREFIX}shards/"))
        .try_collect()
        .await
        .unwrap();
    keys.len()
}

/// Every page of `n` after `last`, walked as a client follows `Link` headers.
async fn walk(index: &SortedIndex<'_>, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = index
            .page(Some(n), out.last().map(String::as_str))
            .await
            .unwrap()
            .expect("a complete index");
        assert!(page.items.len() <= n);
        out.extend(page.items.iter().cloned());
        if !page.more {
            return out;
        }
        assert_eq!(
            page.items.len(),
            n,
            "a page short of n says there is no more"
        );
    }
}

async fn pages_match_a_sorted_list(store: Arc<dyn StorageDriver>) {
    let index = SortedIndex::new(&store, PREFIX.into());
    assert!(
        !index.insert(["x".to_string()]).await.unwrap(),
        "no index yet"
    );
    assert!(index.page(Some(10), None).await.unwrap().is_none());
    assert!(!index.create(Vec::new()).await.unwrap());
    assert!(
        index.page(Some(10), None).await.unwrap().is_none(),
        "not complete"
    );
    let mut expected = BTreeSet::new();
    for batch in 0..7 {
        let names: Vec<String> = (batch * 500..(batch + 1) * 500).map(name).collect();
        expected.extend(names.iter().cloned());
        assert!(index.insert(names).await.unwrap());
    }
    index.mark_complete().await.unwrap();
    let expected: Vec<String> = expected.into_iter().collect();
    assert!(
        shard_count(&store).await >= expected.len() / SHARD_MAX,
        "split into shards"
    );
    assert_eq!(walk(&index, 100).await, expected);
    assert_eq!(walk(&index, 1).await.len(), expected.len());
    assert_eq!(index.all().await.unwrap().unwrap(), expected);
    let all = index.page(None, None).await.unwrap().unwrap();
    assert_eq!((all.items.len(), all.more), (expected.len(), false));
    // After a name that is not there, and past the end.
    let mid = format!("{}0", expected[1234]);
    let page = index.page(Some(3), Some(&mid)).await.unwrap().unwrap();
    assert_eq!(page.items, expected[1235..1238].to_vec());
    let end = index.page(Some(3), Some("zzz")).await.unwrap().unwrap();
    assert!(end.items.is_empty() && !end.more);
    let zero = index.page(Some(0), None).await.unwrap().unwrap();
    assert!(zero.items.is_empty() && zero.more);
    assert_eq!(index.contains(&expected[77]).await.unwrap(), Some(true));
    assert_eq!(index.contains("absent").await.unwrap(), Some(false));

    // Removing most names leaves shards nearly empty: they merge into their neighbours.
    let shards = shard_count(&store).await;
    let every = |keep: bool| -> Vec<String> {
        let picked = expected
            .iter()
            .enumerate()
            .filter(|(i, _)| (i % 50 == 0) == keep);
        picked.map(|(_, x)| x.clone()).collect()
    };
    let (gone, kept) = (every(false), every(true));
    index.remove(gone[..2000].to_vec()).await.unwrap();
    index.remove(gone[2000..].to_vec()).await.unwrap();
    assert_eq!(walk(&index, 7).await, kept);
    assert!(
        shard_count(&store).await < shards,
        "nearly empty shards merged"
    );
    index.remove(kept.clone()).await.unwrap();
    assert!(walk(&index, 10).await.is_empty());
    index.insert(kept.clone()).await.unwrap();
    assert_eq!(walk(&index, 10).await, kept);
}

async fn concurrent_writers_lose_nothing(store: Arc<dyn StorageDriver>) {
    let store: Arc<dyn StorageDriver> =
        Arc::new(Interposed::over(store).slow_reads(|k| k.contains("/shards/")));
    SortedIndex::new(&store, PREFIX.into())
        .create(Vec::new())
        .await
        .unwrap();
    // Six replicas adding names one at a time over the same ranges (so they race on shards
    // and on splits), and removing some.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let index = SortedIndex::new(&store, PREFIX.into());
                for i in (w..2600).step_by(6) {
                    index.insert([name(i)]).await.unwrap();
                    if i % 10 == 3 {
                        index.remove([name(i)]).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let index = SortedIndex::new(&store, PREFIX.into());
    index.mark_complete().await.unwrap();
    let expected: Vec<String> = (0..2600)
        .filter(|i| i % 10 != 3)
        .map(name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(walk(&index, 100).await, expected);
}

async fn a_split_left_half_done_is_finished(store: Arc<dyn StorageDriver>) {
    let index = SortedIndex::new(&store, PREFIX.into());
    index.create(Vec::new()).await.unwrap();
    let names: Vec<String> = (0..900).map(name).collect();
    index.insert(names.clone()).await.unwrap();
    index.mark_complete().await.unwrap();
    // A writer sealed the only shard with more than a shard may hold, then died before it
    // replaced the shard in the root.
    let keys: Vec<String> = store
        .list_recursive(&format!("{PREFIX}shards/"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let mut full: Vec<String> = (0..SHARD_MAX + 200).map(name).collect();
    full.sort();
    let sealed = serde_json::json!({ "sealed": true, "names": full });
    store
        .put_bytes(
            &keys[0],
            Bytes::from(sealed.to_string()),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    // Readers read through the seal; the next writer finishes the split.
    assert_eq!(walk(&index, 100).await, full);
    index.insert([name(5000)]).await.unwrap();
    assert!(shard_count(&store).await >= 2, "split");
    assert!(
        store.stat(&keys[0]).await.is_err(),
        "the sealed shard is gone once replaced"
    );
    full.push(name(5000));
    full.sort();
    assert_eq!(walk(&index, 100).await, full);
}

fn manifest(i: usize) -> (Bytes, Digest) {
    let body = Bytes::from(format!("{{\"schemaVersion\":2,\"n\":{i}}}"));
    let d = Digest::of(Algorithm::Sha256, &body);
    (body, d)
}

async fn catalog_and_tags_follow_pushes(store: Arc<dyn StorageDriver>) {
    // A store written by distribution: repositories in the layout, no index.
    for i in 0..30 {
        let repo = format!("old/r{i:02}").parse().unwrap();
        let (_, d) = manifest(i);
        store
            .put_bytes(
                &layout::manifest_revision_link(&repo, &d),
                Bytes::from(d.to_string()),
                PutCondition::Overwrite,
            )
            .await
            .unwrap();
    }
    // And the flat index of an earlier Berth, which kept a repository with nothing left.
    store
        .put_bytes(
            &format!("{}emptied+repo", layout::legacy_catalog_prefix()),
            Bytes::new(),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    let a = Registry::new(store.clone(), RegistrySettings::default());
    let b = Registry::new(store.clone(), RegistrySettings::default());
    // A push before the first catalog request creates the (incomplete) index.
    let (body, d) = manifest(100);
    let app = "team/app".parse().unwrap();
    a.cache_manifest(&app, &d, body, Some(&"v0".parse().unwrap()))
        .await
        .unwrap();
    let page = b.list_catalog(Some(10), None).await.unwrap();
    assert_eq!(page.items[0], "emptied/repo");
    assert_eq!(page.items[1], "old/r00");
    let all = b.list_catalog(None, None).await.unwrap().items;
    assert_eq!(all.len(), 32);
    assert_eq!(all.last().unwrap(), "team/app");

    // Tags: past the threshold, the first listing builds the index; then puts and deletes
    // through either replica keep it right.
    let many = registry_core::registry::TAG_INDEX_AFTER + 50;
    let mut expected = BTreeSet::new();
    for i in 0..many {
        let r = if i % 2 == 0 { &a } else { &b };
        let tag = format!("t{i:05}");
        let (body, d) = manifest(1000 + i);
        r.cache_manifest(&app, &d, body, Some(&tag.parse().unwrap()))
            .await
            .unwrap();
        expected.insert(tag);
    }
    expected.insert("v0".into());
    assert!(!a.has_tag_index(&app).await.unwrap());
    let first = a.list_tags(&app, Some(5), None).await.unwrap();
    assert_eq!(first.items[0], "t00000");
    assert!(a.has_tag_index(&app).await.unwrap(), "built by the listing");
    let (body, d) = manifest(99_999);
    b.cache_manifest(&app, &d, body, Some(&"zz-new".parse().unwrap()))
        .await
        .unwrap();
    expected.insert("zz-new".into());
    a.delete_manifest(&app, &Reference::Tag("t00003".parse().unwrap()))
        .await
        .unwrap();
    expected.remove("t00003");
    let mut walked: Vec<String> = Vec::new();
    loop {
        let page = b
            .list_tags(&app, Some(100), walked.last().map(String::as_str))
            .await
            .unwrap();
        walked.extend(page.items);
        if !page.more {
            break;
        }
    }
    assert_eq!(walked, expected.into_iter().collect::<Vec<_>>());

    // A rebuild removes what the layout lost by hand and keeps the rest.
    store
        .delete_prefix(&format!("{}old/r05/", layout::repositories_prefix()))
        .await
        .unwrap();
    let report = a.fill_catalog(true).await.unwrap();
    assert_eq!((report.added, report.removed), (0, 2), "{report:?}");
    let all = a.list_catalog(None, None).await.unwrap().items;
    assert!(!all.contains(&"old/r05".to_string()) && !all.contains(&"emptied/repo".to_string()));
    assert_eq!(all.len(), 30);
}

async fn on_every_store(f: impl AsyncFn(Arc<dyn StorageDriver>)) {
    f(Arc::new(memory_driver(5 << 20))).await;
    let dir = tempfile::tempdir().unwrap();
    f(Arc::new(LocalDriver::new(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn pages_match_a_sorted_list_across_splits_and_removals() {
    on_every_store(pages_match_a_sorted_list).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_writers_lose_nothing() {
    on_every_store(concurrent_writers_lose_nothing).await;
}

#[tokio::test]
async fn a_split_a_dead_writer_left_is_finished() {
    on_every_store(a_split_left_half_done_is_finished).await;
}

#[tokio::test]
async fn the_catalog_and_tag_indexes_follow_pushes_and_deletes() {
    on_every_store(catalog_and_tags_follow_pushes).await;
}
