//! The upload state machine over each backend: chunk sizes that do not match parts, sessions
//! continued by another replica, racing writers, resumption after a lost request.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, stream};
use registry_core::storage::{ByteStream, StorageError};
use registry_core::upload::ChunkRange;
use registry_core::{
    Algorithm, Digest, Registry, RegistryError, RegistrySettings, RepositoryName, StorageDriver,
};
use storage_drivers::{LocalDriver, memory_driver};

mod common;

fn body(data: &[u8]) -> ByteStream {
    // Odd-sized chunks, so part boundaries fall inside chunks.
    let chunks: Vec<Result<Bytes, StorageError>> = data
        .chunks(77_777)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks).boxed()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn read_blob(r: &Registry, d: &Digest) -> Vec<u8> {
    let got = r.read_blob(d, None).await.unwrap();
    let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(got.body).await.unwrap();
    chunks.concat()
}

fn range(start: usize, len: usize) -> Option<ChunkRange> {
    Some(ChunkRange {
        start: start as u64,
        end: (start + len - 1) as u64,
    })
}

async fn chunked_upload_across_replicas(store: Arc<dyn StorageDriver>) {
    // Two registries over one store stand for two replicas: neither holds session state.
    let a = Registry::new(store.clone(), RegistrySettings::default());
    let b = Registry::new(store.clone(), RegistrySettings::default());
    let name: RepositoryName = "team/app".parse().unwrap();
    let blob = data(3 * 1024 * 1024 + 12345);
    let started = a.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    let mut offset = 0;
    // Chunk sizes around and across the 1 MiB part size.
    for (i, len) in [700_000usize, 1_500_000, 1, 300_000, 2_000]
        .into_iter()
        .enumerate()
    {
        let r = if i % 2 == 0 { &a } else { &b };
        let chunk = &blob[offset..offset + len];
        let new = r
            .uploads()
            .append(&name, &id, i == 0 && fresh, range(offset, len), body(chunk))
            .await
            .unwrap();
        offset += len;
        assert_eq!(new, offset as u64);
        assert_eq!(
            b.uploads().status(&name, &id, false).await.unwrap(),
            offset as u64
        );
    }
    let digest = Digest::of(Algorithm::Sha256, &blob);
    b.finish_upload(
        &name,
        &id,
        false,
        &digest,
        range(offset, blob.len() - offset),
        body(&blob[offset..]),
    )
    .await
    .unwrap();
    assert_eq!(
        a.stat_blob(&name, &digest).await.unwrap().size,
        blob.len() as u64
    );
    assert!(
        read_blob(&a, &digest).await == blob,
        "assembled blob differs"
    );
    assert!(matches!(
        a.uploads().status(&name, &id, false).await,
        Err(RegistryError::BlobUploadUnknown)
    ));
}

async fn out_of_order_and_sha512(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store, RegistrySettings::default());
    let name: RepositoryName = "x".parse().unwrap();
    let blob = data(2_500_000);
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    r.uploads()
        .append(
            &name,
            &id,
            fresh,
            range(0, 1_000_000),
            body(&blob[..1_000_000]),
        )
        .await
        .unwrap();
    let err = r
        .uploads()
        .append(&name, &id, false, range(5, 10), body(&blob[5..15]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::UploadRangeInvalid { offset: 1_000_000 }),
        "{err:?}"
    );
    r.uploads()
        .append(&name, &id, false, None, body(&blob[1_000_000..]))
        .await
        .unwrap();
    let sha512 = Digest::of(Algorithm::Sha512, &blob);
    r.finish_upload(&name, &id, false, &sha512, None, body(&[]))
        .await
        .unwrap();
    assert!(read_blob(&r, &sha512).await == blob);
}

async fn racing_appends_cannot_both_win(store: Arc<dyn StorageDriver>) {
    let r = Arc::new(Registry::new(store, RegistrySettings::default()));
    let name: RepositoryName = "race".parse().unwrap();
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    let blob = data(400_000);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (r, name, id, blob) = (r.clone(), name.clone(), id.clone(), blob.clone());
            tokio::spawn(async move {
                r.uploads()
                    .append(&name, &id, fresh, range(0, blob.len()), body(&blob))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(RegistryError::Conflict(_)) | Err(RegistryError::UploadRangeInvalid { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(ok >= 1, "one writer must succeed");
    let offset = r.uploads().status(&name, &id, false).await.unwrap();
    assert_eq!(
        offset,
        blob.len() as u64,
        "exactly one chunk's worth was accepted"
    );
    let digest = Digest::of(Algorithm::Sha256, &blob);
    r.finish_upload(&name, &id, false, &digest, None, body(&[]))
        .await
        .unwrap();
    assert!(read_blob(&r, &digest).await == blob);
}

/// A request still streaming after a newer one took the session over (a client's retry while
/// its first attempt lingers) must not change the bytes the newer one hashed.
async fn superseded_request_cannot_change_the_bytes(store: Arc<dyn StorageDriver>) {
    let r = Arc::new(Registry::new(store, RegistrySettings::default()));
    let name: RepositoryName = "race/late".parse().unwrap();
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    // A first request commits 1 MiB, so the session has its data file (local disk) or
    // multipart upload from here on.
    let ee = |n: usize| vec![0xEE; n];
    r.uploads()
        .append(&name, &id, fresh, range(0, 1 << 20), body(&ee(1 << 20)))
        .await
        .unwrap();
    let (mut late_tx, late_rx) = futures::channel::mpsc::channel::<Result<Bytes, StorageError>>(1);
    let late = {
        let (r, name, id) = (r.clone(), name.clone(), id.clone());
        tokio::spawn(async move {
            r.uploads()
                .append(&name, &id, false, None, late_rx.boxed())
                .await
        })
    };
    use futures::SinkExt;
    // The lingering request streams 3 MiB more into the same file or upload; on local disk
    // that stays uncommitted (it commits every 64 MiB), elsewhere every part commits.
    for _ in 0..3 {
        late_tx.send(Ok(Bytes::from(ee(1 << 20)))).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The retry resumes from the committed offset and brings the blob to 5 MiB.
    let mut blob = ee(4 << 20);
    blob.extend(data(1 << 20));
    let committed = r.uploads().status(&name, &id, false).await.unwrap() as usize;
    r.uploads()
        .append(
            &name,
            &id,
            false,
            range(committed, blob.len() - committed),
            body(&blob[committed..]),
        )
        .await
        .unwrap();
    // The lingering request goes on writing; it must be refused, not land over the retry's bytes.
    for _ in 0..3 {
        if late_tx
            .send(Ok(Bytes::from(vec![0xEE; 1 << 20])))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(late_tx);
    assert!(
        late.await.unwrap().is_err(),
        "the superseded request failed"
    );
    let digest = Digest::of(Algorithm::Sha256, &blob);
    r.finish_upload(&name, &id, false, &digest, None, body(&[]))
        .await
        .unwrap();
    assert!(
        read_blob(&r, &digest).await == blob,
        "the stored blob holds exactly the bytes its digest names"
    );
}

async fn failed_request_keeps_what_arrived(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store, RegistrySettings::default());
    let name: RepositoryName = "resume".parse().unwrap();
    let blob = data(2_200_000);
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    // The client goes away after 1.6 MB of its body.
    let partial: ByteStream = stream::iter(vec![
        Ok(Bytes::copy_from_slice(&blob[..1_600_000])),
        Err(StorageError::Backend("connection reset".into())),
    ])
    .boxed();
    assert!(
        r.uploads()
            .append(&name, &id, fresh, None, partial)
            .await
            .is_err()
    );
    let offset = r.uploads().status(&name, &id, false).await.unwrap() as usize;
    assert_eq!(
        offset, 1_600_000,
        "bytes received before the failure are kept"
    );
    resume_and_finish(&r, &name, &id, &blob, offset).await;
}

/// Sends `blob` from `offset` on, finishes the session and checks the stored blob.
async fn resume_and_finish(
    r: &Registry,
    name: &RepositoryName,
    id: &str,
    blob: &[u8],
    offset: usize,
) {
    if offset < blob.len() {
        r.uploads()
            .append(
                name,
                id,
                false,
                range(offset, blob.len() - offset),
                body(&blob[offset..]),
            )
            .await
            .unwrap();
    }
    let digest = Digest::of(Algorithm::Sha256, blob);
    r.finish_upload(name, id, false, &digest, None, body(&[]))
        .await
        .unwrap();
    assert!(read_blob(r, &digest).await == blob);
}

async fn mismatch_leaves_nothing(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store.clone(), RegistrySettings::default());
    let name: RepositoryName = "mismatch".parse().unwrap();
    let blob = data(1_300_000);
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    r.uploads()
        .append(&name, &id, fresh, None, body(&blob))
        .await
        .unwrap();
    let wrong = Digest::of(Algorithm::Sha256, b"something else");
    let err = r
        .finish_upload(&name, &id, false, &wrong, None, body(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)));
    let left: Vec<String> = futures::TryStreamExt::try_collect(store.list_recursive("docker/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "a refused upload leaves nothing: {left:?}");
}

async fn purging_removes_only_old_sessions(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store.clone(), RegistrySettings::default());
    let name: RepositoryName = "purge/me".parse().unwrap();
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    r.uploads()
        .append(&name, &id, fresh, None, body(&data(1_500_000)))
        .await
        .unwrap();
    assert!(
        r.uploads()
            .purge_older_than(&name, 0, false)
            .await
            .unwrap()
            .is_empty(),
        "a new session is kept"
    );
    assert_eq!(
        r.uploads()
            .purge_older_than(&name, u64::MAX, true)
            .await
            .unwrap(),
        vec![id.clone()]
    );
    assert_eq!(
        r.uploads().status(&name, &id, false).await.unwrap(),
        1_500_000,
        "a dry run removes nothing"
    );
    assert_eq!(
        r.uploads()
            .purge_older_than(&name, u64::MAX, false)
            .await
            .unwrap(),
        vec![id.clone()]
    );
    assert!(matches!(
        r.uploads().status(&name, &id, false).await,
        Err(RegistryError::BlobUploadUnknown)
    ));
    let left: Vec<String> = futures::TryStreamExt::try_collect(store.list_recursive("docker/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "purging leaves nothing: {left:?}");
}

/// A session whose start wrote nothing: its start URL (`fresh`) reads as new until the first
/// chunk, a cancel ends it for that URL too, and the purge removes the mark a cancel leaves.
async fn sessions_started_without_state(store: Arc<dyn StorageDriver>) {
    let r = Registry::new(store.clone(), RegistrySettings::default());
    let name: RepositoryName = "deferred".parse().unwrap();
    let started = r.uploads().start(&name).await.unwrap();
    let id = started.id.clone();
    assert_eq!(r.uploads().status(&name, &id, true).await.unwrap(), 0);
    if started.deferred {
        assert!(matches!(
            r.uploads().status(&name, &id, false).await,
            Err(RegistryError::BlobUploadUnknown)
        ));
    }
    // An empty chunk stores nothing, and the session stays usable.
    assert_eq!(
        r.uploads()
            .append(&name, &id, true, None, body(&[]))
            .await
            .unwrap(),
        0
    );
    r.uploads().cancel(&name, &id, true).await.unwrap();
    for fresh in [true, false] {
        assert!(matches!(
            r.uploads().status(&name, &id, fresh).await,
            Err(RegistryError::BlobUploadUnknown)
        ));
    }
    assert!(
        r.uploads()
            .append(&name, &id, true, None, body(&data(10)))
            .await
            .is_err(),
        "a cancelled session took a chunk"
    );
    r.uploads()
        .purge_older_than(&name, u64::MAX, false)
        .await
        .unwrap();
    let left: Vec<String> = futures::TryStreamExt::try_collect(store.list_recursive("docker/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "purging leaves nothing: {left:?}");

    // A whole blob in the request that ends a session nothing was stored for.
    let started = r.uploads().start(&name).await.unwrap();
    let blob = data(1_100_000);
    let digest = Digest::of(Algorithm::Sha256, &blob);
    r.finish_upload(
        &name,
        &started.id,
        started.deferred,
        &digest,
        None,
        body(&blob),
    )
    .await
    .unwrap();
    assert!(read_blob(&r, &digest).await == blob);
}

/// A chunk whose tail could not be stored (its staged object's write failed, beside the
/// commit that names it) leaves the session where it was, and the client resumes from there.
async fn a_tail_that_was_not_stored_is_not_counted(store: Arc<dyn StorageDriver>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let store = common::Interposed::over(store)
        .failing(move |key| key.contains("/staged/") && f.load(Ordering::SeqCst));
    let r = Registry::new(Arc::new(store), RegistrySettings::default());
    let name: RepositoryName = "tail".parse().unwrap();
    let blob = data(1_500_000);
    let started = r.uploads().start(&name).await.unwrap();
    let (id, fresh) = (started.id.clone(), started.deferred);
    r.uploads()
        .append(
            &name,
            &id,
            fresh,
            range(0, 1_000_000),
            body(&blob[..1_000_000]),
        )
        .await
        .unwrap();
    // 1 MiB parts: the next chunk fills the first part and leaves a 0.4 MB tail to stage.
    failing.store(true, Ordering::SeqCst);
    let err = r
        .uploads()
        .append(&name, &id, false, None, body(&blob[1_000_000..]))
        .await;
    let at = r.uploads().status(&name, &id, false).await.unwrap() as usize;
    if r.store().part_policy().fixed_size {
        assert!(
            err.is_err(),
            "the tail's write failed but the chunk was accepted"
        );
        assert!(
            at < blob.len(),
            "the offset counts a tail that is not stored"
        );
    }
    failing.store(false, Ordering::SeqCst);
    resume_and_finish(&r, &name, &id, &blob, at).await;
}

async fn all(store: impl Fn() -> Arc<dyn StorageDriver>) {
    a_tail_that_was_not_stored_is_not_counted(store()).await;
    sessions_started_without_state(store()).await;
    chunked_upload_across_replicas(store()).await;
    out_of_order_and_sha512(store()).await;
    racing_appends_cannot_both_win(store()).await;
    superseded_request_cannot_change_the_bytes(store()).await;
    failed_request_keeps_what_arrived(store()).await;
    mismatch_leaves_nothing(store()).await;
    purging_removes_only_old_sessions(store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_with_fixed_one_mib_parts() {
    all(|| Arc::new(memory_driver(1 << 20))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_disk() {
    let dirs: std::sync::Mutex<Vec<tempfile::TempDir>> = Default::default();
    all(|| {
        let d = tempfile::tempdir().unwrap();
        let driver = LocalDriver::new(d.path()).unwrap();
        dirs.lock().unwrap().push(d);
        Arc::new(driver)
    })
    .await;
}

/// A store that ignores conditional writes (as Garage does), in single-writer mode: racing
/// appends in one process still cannot both win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_writer_over_a_store_ignoring_conditions() {
    use storage_drivers::single_writer::SingleWriter;
    all(|| {
        let ignoring = common::Interposed::over(Arc::new(memory_driver(1 << 20)))
            .slow_reads(|_| true)
            .ignoring_conditions();
        Arc::new(SingleWriter::new(Arc::new(ignoring)))
    })
    .await;
}
