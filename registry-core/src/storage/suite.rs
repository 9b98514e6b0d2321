//! The shared driver test suite: one set of behaviours every backend must pass.
//!
//! Each driver's tests call [`run_all`] with a fresh, empty driver. Failures panic with the name
//! of the behaviour that broke.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::{ByteStream, MultipartHandle, PartSlot, PutCondition, StorageDriver, StorageError};

fn stream_of(chunks: Vec<&'static [u8]>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
}

async fn read_all(d: &dyn StorageDriver, key: &str) -> Vec<u8> {
    d.read_small(key)
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"))
        .0
        .to_vec()
}

/// What a test backend can prove beyond the sequential contract.
#[derive(Debug, Clone, Copy)]
pub struct SuiteOptions {
    /// Concurrent conditional updates of one version are checked to have exactly one winner.
    /// Real stores guarantee it; some emulators (moto) check If-Match without a lock.
    pub atomic_conditional_update: bool,
    /// Create-only and update-if-version puts are checked at all. Only an emulator that ignores
    /// preconditions (gcp-storage-emulator) turns this off; its driver must then prove the
    /// precondition requests another way.
    pub conditional_puts: bool,
}

/// Runs every behaviour against `driver`, which must be empty and not shared with other tests.
pub async fn run_all(driver: Arc<dyn StorageDriver>) {
    run_with(
        driver,
        SuiteOptions {
            atomic_conditional_update: true,
            conditional_puts: true,
        },
    )
    .await
}

/// [`run_all`] with options for emulators that cannot prove every guarantee.
pub async fn run_with(driver: Arc<dyn StorageDriver>, options: SuiteOptions) {
    let d = driver.as_ref();
    small_objects(d).await;
    ranges(d).await;
    if options.conditional_puts {
        conditional_puts(d).await;
    }
    if options.atomic_conditional_update && options.conditional_puts {
        conditional_update_race(driver.clone()).await;
    }
    streams(d).await;
    listing(d).await;
    copy_rename_delete(d).await;
    multipart(d).await;
    multipart_resume_and_rewrite(d).await;
    presign(d).await;
}

async fn small_objects(d: &dyn StorageDriver) {
    let k = "suite/small/a";
    let missing = d.stat(k).await;
    assert!(
        matches!(missing, Err(StorageError::NotFound(_))),
        "stat of missing is NotFound: {missing:?}"
    );
    assert!(
        matches!(d.get(k, None).await, Err(StorageError::NotFound(_))),
        "get of missing is NotFound"
    );
    d.put_bytes(k, Bytes::from_static(b"hello"), PutCondition::Overwrite)
        .await
        .unwrap();
    assert_eq!(read_all(d, k).await, b"hello");
    assert_eq!(d.stat(k).await.unwrap().size, 5);
    d.put_bytes(k, Bytes::from_static(b"bye"), PutCondition::Overwrite)
        .await
        .unwrap();
    assert_eq!(read_all(d, k).await, b"bye", "overwrite replaces");
    d.put_bytes("suite/small/empty", Bytes::new(), PutCondition::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        d.stat("suite/small/empty").await.unwrap().size,
        0,
        "empty objects exist"
    );
}

async fn ranges(d: &dyn StorageDriver) {
    let k = "suite/range/obj";
    d.put_bytes(
        k,
        Bytes::from_static(b"0123456789"),
        PutCondition::Overwrite,
    )
    .await
    .unwrap();
    let r = d.get(k, Some(2..5)).await.unwrap();
    assert_eq!(r.range, 2..5);
    assert_eq!(r.info.size, 10, "range read reports the whole size");
    let body: Vec<Bytes> = r.body.try_collect().await.unwrap();
    assert_eq!(body.concat(), b"234");
    let r = d.get(k, Some(8..100)).await.unwrap();
    assert_eq!(r.range, 8..10, "end is clamped to the size");
    assert!(
        matches!(
            d.get(k, Some(10..12)).await,
            Err(StorageError::RangeNotSatisfiable { size: 10 })
        ),
        "start at or past the end is not satisfiable"
    );
}

async fn conditional_puts(d: &dyn StorageDriver) {
    let k = "suite/cond/state";
    let v1 = d
        .put_bytes(k, Bytes::from_static(b"1"), PutCondition::CreateOnly)
        .await
        .unwrap();
    assert!(
        matches!(
            d.put_bytes(k, Bytes::from_static(b"x"), PutCondition::CreateOnly)
                .await,
            Err(StorageError::AlreadyExists(_))
        ),
        "create-only refuses an existing object"
    );
    let v2 = d
        .put_bytes(
            k,
            Bytes::from_static(b"2"),
            PutCondition::IfVersion(v1.version.clone()),
        )
        .await
        .unwrap();
    assert!(
        !v1.version.matches(&v2.version),
        "an update yields a new version"
    );
    assert!(
        matches!(
            d.put_bytes(
                k,
                Bytes::from_static(b"3"),
                PutCondition::IfVersion(v1.version)
            )
            .await,
            Err(StorageError::Precondition(_))
        ),
        "a stale version is refused"
    );
    assert_eq!(
        read_all(d, k).await,
        b"2",
        "the refused update changed nothing"
    );
    let (_, info) = d.read_small(k).await.unwrap();
    assert!(
        info.version.matches(&v2.version),
        "read reports the version that put returned: {:?} after {:?}",
        info.version,
        v2.version
    );
}

async fn conditional_update_race(d: Arc<dyn StorageDriver>) {
    let k = "suite/cond/race";
    let v = d
        .put_bytes(k, Bytes::from_static(b"0"), PutCondition::Overwrite)
        .await
        .unwrap()
        .version;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let d = d.clone();
            let v = v.clone();
            async move {
                // Bytes unlike the first's: where a version is the content's hash (an S3
                // ETag), a racer rewriting the same bytes would leave the version unchanged.
                d.put_bytes(
                    k,
                    Bytes::from(format!("racer {i}")),
                    PutCondition::IfVersion(v),
                )
                .await
                .is_ok()
            }
        })
        .collect();
    let wins = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(
        wins, 1,
        "exactly one of several racing updates of one version wins"
    );
}

async fn streams(d: &dyn StorageDriver) {
    let k = "suite/stream/blob";
    let n = d
        .put_stream(k, stream_of(vec![b"ab", b"", b"cde"]))
        .await
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(read_all(d, k).await, b"abcde");
    let failing: ByteStream = stream::iter(vec![
        Ok(Bytes::from_static(b"x")),
        Err(StorageError::Backend("client went away".into())),
    ])
    .boxed();
    assert!(d.put_stream("suite/stream/broken", failing).await.is_err());
    assert!(
        matches!(
            d.stat("suite/stream/broken").await,
            Err(StorageError::NotFound(_))
        ),
        "a failed stream leaves nothing visible"
    );
    let big: Vec<Bytes> = (0..40)
        .map(|i| Bytes::from(vec![i as u8; 256 * 1024]))
        .collect();
    let expect = big.concat();
    let n = d
        .put_stream(
            "suite/stream/big",
            stream::iter(big.into_iter().map(Ok)).boxed(),
        )
        .await
        .unwrap();
    assert_eq!(n, expect.len() as u64);
    assert!(
        read_all(d, "suite/stream/big").await == expect,
        "a 10 MiB stream round-trips"
    );
    // A large range at an offset that is not page-aligned (local disk maps large reads).
    let want = 4097..(3 << 20) + 5;
    let r = d
        .get("suite/stream/big", Some(want.start as u64..want.end as u64))
        .await
        .unwrap();
    let body: Vec<Bytes> = r.body.try_collect().await.unwrap();
    assert!(
        body.concat() == expect[want],
        "a 3 MiB range at an unaligned offset matches"
    );
}

async fn listing(d: &dyn StorageDriver) {
    for k in [
        "suite/list/a",
        "suite/list/b",
        "suite/list/sub1/x",
        "suite/list/sub2/y/z",
    ] {
        d.put_bytes(k, Bytes::from_static(b"."), PutCondition::Overwrite)
            .await
            .unwrap();
    }
    let mut l = d.list("suite/list/").await.unwrap();
    l.objects.sort();
    l.prefixes.sort();
    assert_eq!(l.objects, vec!["suite/list/a", "suite/list/b"]);
    assert_eq!(l.prefixes, vec!["sub1", "sub2"]);
    let empty = d.list("suite/nothing-here/").await.unwrap();
    assert!(
        empty.objects.is_empty() && empty.prefixes.is_empty(),
        "missing prefix lists empty"
    );
    let mut all: Vec<String> = d.list_recursive("suite/list/").try_collect().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            "suite/list/a",
            "suite/list/b",
            "suite/list/sub1/x",
            "suite/list/sub2/y/z"
        ]
    );
    // With sizes and times, as the listing or a stat has them.
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut with_info = d.list_with_info("suite/list/").await.unwrap();
    with_info.sort_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<&str> = with_info.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, all);
    for (k, info) in &with_info {
        assert_eq!(info.size, 1, "{k}");
        assert!(
            info.last_modified.is_some_and(|t| t > before),
            "{k}: {info:?}"
        );
    }
    assert!(
        d.list_with_info("suite/nothing-here/")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn copy_rename_delete(d: &dyn StorageDriver) {
    d.put_bytes(
        "suite/cp/src",
        Bytes::from_static(b"data"),
        PutCondition::Overwrite,
    )
    .await
    .unwrap();
    d.copy("suite/cp/src", "suite/cp/deep/dst").await.unwrap();
    assert_eq!(read_all(d, "suite/cp/deep/dst").await, b"data");
    d.rename("suite/cp/src", "suite/cp/moved/here")
        .await
        .unwrap();
    assert_eq!(read_all(d, "suite/cp/moved/here").await, b"data");
    assert!(
        matches!(d.stat("suite/cp/src").await, Err(StorageError::NotFound(_))),
        "rename removes the source"
    );
    d.delete("suite/cp/deep/dst").await.unwrap();
    d.delete("suite/cp/deep/dst")
        .await
        .expect("deleting a missing object succeeds");
    d.delete_prefix("suite/cp/").await.unwrap();
    let left: Vec<String> = d.list_recursive("suite/cp/").try_collect().await.unwrap();
    assert!(
        left.is_empty(),
        "delete_prefix removes everything under it: {left:?}"
    );
}

/// Part `index` at `offset`, written by one request throughout.
fn slot(index: usize, offset: u64) -> PartSlot {
    PartSlot {
        index,
        offset,
        writer: 1,
    }
}

fn part(policy_size: u64, fill: u8) -> Vec<Bytes> {
    // Two chunks per part, to prove drivers accept a rope.
    let half = (policy_size / 2) as usize;
    vec![
        Bytes::from(vec![fill; half]),
        Bytes::from(vec![fill; policy_size as usize - half]),
    ]
}

async fn multipart(d: &dyn StorageDriver) {
    let policy = d.part_policy();
    let k = "suite/mp/data";
    let h = d.create_multipart(k).await.unwrap();
    let p0 = d
        .put_part(k, &h, slot(0, 0), part(policy.part_size, 1))
        .await
        .unwrap();
    let p1 = d
        .put_part(k, &h, slot(1, policy.part_size), part(policy.part_size, 2))
        .await
        .unwrap();
    // The tail comes from an object of its own, copied into the last part.
    d.put_bytes(
        "suite/mp/tail",
        Bytes::from_static(b"tail"),
        PutCondition::Overwrite,
    )
    .await
    .unwrap();
    let p2 = d
        .put_part_copy(k, &h, slot(2, 2 * policy.part_size), "suite/mp/tail", 4)
        .await
        .unwrap();
    let size = 2 * policy.part_size + 4;
    d.complete_multipart(k, &h, &[p0, p1, p2], size)
        .await
        .unwrap();
    let got = read_all(d, k).await;
    assert_eq!(got.len() as u64, size);
    assert!(got[..policy.part_size as usize].iter().all(|&b| b == 1));
    assert!(
        got[policy.part_size as usize..2 * policy.part_size as usize]
            .iter()
            .all(|&b| b == 2)
    );
    assert_eq!(&got[2 * policy.part_size as usize..], b"tail");

    let k2 = "suite/mp/aborted";
    let h2 = d.create_multipart(k2).await.unwrap();
    d.put_part(k2, &h2, slot(0, 0), part(policy.part_size, 3))
        .await
        .unwrap();
    d.abort_multipart(k2, &h2).await.unwrap();
    assert!(
        matches!(d.stat(k2).await, Err(StorageError::NotFound(_))),
        "aborted multipart leaves nothing"
    );
}

async fn multipart_resume_and_rewrite(d: &dyn StorageDriver) {
    // A handle and part list survive serialization: another process can finish the write,
    // and a part rewritten after a crash replaces the first attempt.
    let policy = d.part_policy();
    let k = "suite/mp2/data";
    let h = d.create_multipart(k).await.unwrap();
    let p0 = d
        .put_part(k, &h, slot(0, 0), part(policy.part_size, 7))
        .await
        .unwrap();
    let _lost = d
        .put_part(
            k,
            &h,
            slot(1, policy.part_size),
            vec![Bytes::from_static(b"half-written")],
        )
        .await
        .unwrap();
    let saved = serde_json::to_string(&(h, vec![p0])).unwrap();
    let (h, mut parts): (MultipartHandle, Vec<super::WrittenPart>) =
        serde_json::from_str(&saved).unwrap();
    parts.push(
        d.put_part(
            k,
            &h,
            slot(1, policy.part_size),
            vec![Bytes::from_static(b"end")],
        )
        .await
        .unwrap(),
    );
    d.complete_multipart(k, &h, &parts, policy.part_size + 3)
        .await
        .unwrap();
    let got = read_all(d, k).await;
    assert_eq!(got.len() as u64, policy.part_size + 3);
    assert_eq!(&got[policy.part_size as usize..], b"end");
}

async fn presign(d: &dyn StorageDriver) {
    let k = "suite/presign/obj";
    d.put_bytes(k, Bytes::from_static(b"signed"), PutCondition::Overwrite)
        .await
        .unwrap();
    if let Some(url) = d.presign_get(k, Duration::from_secs(60)).await.unwrap() {
        assert!(url.starts_with("http"), "presigned URL is absolute: {url}");
    }
}
