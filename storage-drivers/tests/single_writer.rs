//! A store that takes conditional puts and ignores them (as Garage does): the startup probe
//! tells it from one that honours them, and single-writer mode gives one process back every
//! conditional rule of the shared suite, racing writers included.

use std::sync::Arc;

use registry_core::StorageDriver;
use registry_core::storage::guarantees::{Presigning, probe};
use storage_drivers::memory_driver;
use storage_drivers::single_writer::SingleWriter;

mod common;
use common::Interposed;

fn ignoring() -> Arc<dyn StorageDriver> {
    Arc::new(
        Interposed::over(Arc::new(memory_driver(5 << 20)))
            // Reads that take a moment, so that racing writers interleave.
            .slow_reads(|_| true)
            .ignoring_conditions(),
    )
}

async fn never_fetched(url: String, _: bytes::Bytes) -> Presigning {
    panic!("the memory store presigned {url}")
}

#[tokio::test]
async fn the_probe_tells_an_ignoring_store_from_an_honouring_one() {
    let honouring = memory_driver(5 << 20);
    let found = probe(&honouring, "probe/a", never_fetched).await.unwrap();
    assert!(found.arbitrates_writers(), "{found:?}");
    assert_eq!(found.presigning, Presigning::Unsupported);
    let found = probe(ignoring().as_ref(), "probe/a", never_fetched)
        .await
        .unwrap();
    assert!(
        !found.conditional_create && !found.conditional_replace,
        "{found:?}"
    );
    let wrapped = SingleWriter::new(ignoring());
    let found = probe(&wrapped, "probe/a", never_fetched).await.unwrap();
    assert!(found.arbitrates_writers(), "{found:?}");
    // The scratch object is gone.
    assert!(honouring.stat("probe/a").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_writer_mode_keeps_every_conditional_rule_in_one_process() {
    let driver: Arc<dyn StorageDriver> = Arc::new(SingleWriter::new(ignoring()));
    registry_core::storage::suite::run_all(driver.clone()).await;
    // Six writers racing on the same index shards and splits lose nothing.
    registry_core::registry::index_suite::run(driver, true).await;
}
