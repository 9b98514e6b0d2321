//! The store's lease and the replication queue it guards, on memory and local disk: one holder
//! at a time, a silent holder replaced, events read back oldest first across writers, and an
//! event set aside with its reason.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use registry_core::registry::{QueuedEvent, ReplicationAction, ReplicationEvent, StoreLease};
use registry_core::{Registry, RegistrySettings, StorageDriver};
use storage_drivers::{LocalDriver, memory_driver};

fn lease(holder: &str, ttl: Duration) -> StoreLease {
    StoreLease {
        key: "docker/registry/v2/berth/test-lease".into(),
        holder: holder.into(),
        ttl,
    }
}

async fn one_holder_at_a_time(store: Arc<dyn StorageDriver>) {
    let a = lease("a", Duration::from_millis(1200));
    let b = lease("b", Duration::from_millis(1200));
    let held = a.take(&store).await.unwrap().expect("free at first");
    assert!(b.take(&store).await.unwrap().is_none(), "a holds it");
    let holding = tokio::spawn({
        let (a, store) = (a.clone(), store.clone());
        async move { a.hold(&store, held).await }
    });
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(b.take(&store).await.unwrap().is_none(), "a renews it");
    holding.abort();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(b.take(&store).await.unwrap().is_some(), "a went silent");

    // A job under the lease keeps others out and gives it up when done.
    let _ = store.delete(&b.key).await;
    let (b2, s2) = (b.clone(), store.clone());
    let refused = a
        .run_while_held(&store, async move |_| b2.take(&s2).await.unwrap().is_none())
        .await
        .unwrap();
    assert_eq!(refused, Some(Some(true)), "b is refused while a runs");
    assert!(b.take(&store).await.unwrap().is_some(), "given up after");
}

/// The oldest `limit` events queued for `downstream`, read as the sender reads them, and how
/// many wait.
async fn backlog(r: &Registry, downstream: &str, limit: usize) -> (Vec<QueuedEvent>, usize) {
    let keys = r.replication_queue_keys(downstream).await.unwrap();
    let mut out = Vec::new();
    for k in keys.iter().take(limit) {
        out.extend(r.queued_event(k).await.unwrap());
    }
    (out, keys.len())
}

async fn queue_in_order(store: Arc<dyn StorageDriver>) {
    let r1 = Registry::new(store.clone(), RegistrySettings::default());
    let r2 = Registry::new(store.clone(), RegistrySettings::default());
    let mut sent = Vec::new();
    for i in 0..20 {
        // Two replicas queueing in turn: one order, the order of queueing.
        let r = if i % 2 == 0 { &r1 } else { &r2 };
        let e = ReplicationEvent::now(
            ReplicationAction::Push,
            "team/app",
            Some(&format!("t{i}")),
            None,
        );
        r.enqueue_replication("dr", &e).await.unwrap();
        sent.push(e);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    r1.enqueue_replication(
        "other",
        &ReplicationEvent::now(ReplicationAction::Delete, "x", None, Some("sha256:00")),
    )
    .await
    .unwrap();
    let (first, depth) = backlog(&r1, "dr", 5).await;
    assert_eq!(depth, 20);
    let got: Vec<_> = first.iter().map(|q| q.event.clone().unwrap()).collect();
    assert_eq!(got, sent[..5]);
    for q in &first[..4] {
        r2.settle_replication(q).await.unwrap();
    }
    r2.dead_letter_replication("dr", &first[4], "refused for good")
        .await
        .unwrap();
    let (rest, depth) = backlog(&r1, "dr", 100).await;
    assert_eq!(depth, 15);
    let got: Vec<_> = rest.iter().map(|q| q.event.clone().unwrap()).collect();
    assert_eq!(got, sent[5..]);
    let dead: Vec<String> = store
        .list_recursive(&registry_core::layout::replication_dead_letters("dr"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(backlog(&r1, "other", 10).await.1, 1);
}

#[tokio::test]
async fn leases_in_memory() {
    one_holder_at_a_time(Arc::new(memory_driver(5 << 20))).await;
}

#[tokio::test]
async fn leases_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    one_holder_at_a_time(Arc::new(LocalDriver::new(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn replication_queue_in_memory() {
    queue_in_order(Arc::new(memory_driver(5 << 20))).await;
}

#[tokio::test]
async fn replication_queue_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    queue_in_order(Arc::new(LocalDriver::new(dir.path()).unwrap())).await;
}
