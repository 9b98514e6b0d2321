//! Berth on a real distributed S3 store: a 3-node Garage cluster (replication factor 3) behind a
//! balancer. The shared driver suite (with the conditional rules Garage does not honour marked
//! so, then all of them through single-writer mode), skopeo round trips with copies above the
//! multipart-copy threshold, and a node killed during pushes and pulls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::Berth;
use integration::emulators::s3_options;
use integration::garage::{GARAGE_ACCESS_KEY, GARAGE_SECRET_KEY, GarageCluster};
use integration::layout::write_image;
use integration::tools::{skopeo_attempt, tree};
use registry_core::StorageDriver;
use registry_core::storage::guarantees::{Presigning, probe};
use registry_core::storage::suite::SuiteOptions;
use storage_drivers::s3::s3_driver;
use storage_drivers::single_writer::SingleWriter;

fn driver(garage: &GarageCluster, bucket: &str) -> Arc<dyn StorageDriver> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut options = s3_options(
        &garage.endpoint,
        (GARAGE_ACCESS_KEY, GARAGE_SECRET_KEY),
        bucket,
    );
    // Every copy of 5 MiB or more through UploadPartCopy, and short tails copied into parts
    // (which Garage refuses: they are sent as bytes instead).
    options.copy_threshold = 0;
    options.copy_part_size = 5 << 20;
    Arc::new(s3_driver(&options).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_suite_on_a_three_node_garage_cluster() {
    let garage = GarageCluster::start();
    garage.create_bucket("suite");
    let store = driver(&garage, "suite");
    // What Garage honours, as Berth's startup probe sees it: presigned GETs with a real
    // signature check, and neither conditional put.
    let found = probe(store.as_ref(), "probe/suite", |url, expected| async move {
        match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(b) if b == expected => Presigning::Served,
                other => Presigning::Refused(format!("{other:?}")),
            },
            Ok(r) if r.status().is_client_error() => Presigning::Refused(r.status().to_string()),
            Ok(r) => Presigning::Unchecked(r.status().to_string()),
            Err(e) => Presigning::Unchecked(e.to_string()),
        }
    })
    .await
    .unwrap();
    assert_eq!(found.presigning, Presigning::Served, "{found:?}");
    assert!(
        !found.conditional_create && !found.conditional_replace,
        "Garage honours conditional puts now: mark it so in the README's table ({found:?})"
    );
    // Every rule but the conditional ones on the store itself...
    registry_core::storage::suite::run_with(
        store.clone(),
        SuiteOptions {
            atomic_conditional_update: false,
            conditional_puts: false,
        },
    )
    .await;
    // ... and all of them, racing writers included, in single-writer mode.
    garage.create_bucket("single");
    let single: Arc<dyn StorageDriver> = Arc::new(SingleWriter::new(driver(&garage, "single")));
    registry_core::storage::suite::run_all(single.clone()).await;
    registry_core::registry::index_suite::run(single, true).await;
}

/// A Berth on `bucket`, in single-writer mode (Garage ignores conditional writes), copying
/// blobs above 8 MiB part by part.
fn berth_on(garage: &GarageCluster, bucket: &str) -> Berth {
    Berth::with_config(
        &format!(
            "version: 0.1\nstorage:\n  {}    chunksize: 5242880\n    multipartcopythresholdsize: 8388608\n    multipartcopychunksize: 5242880\n  delete:\n    enabled: true\nberth:\n  storage:\n    singlewriter: true\n    retrybudget: 20s\n",
            garage.storage_yaml(bucket)
        ),
        &[],
    )
}

/// Pushes the image at `src` to `remote` and pulls it back into `dst`; panics if the bytes
/// differ.
fn round_trip(src: &std::path::Path, dst: &std::path::Path, remote: &str) -> Result<(), String> {
    let (ok, err) = skopeo_attempt(&format!("oci:{}:v1", src.display()), remote);
    if !ok {
        return Err(format!("push: {err}"));
    }
    let (ok, err) = skopeo_attempt(remote, &format!("oci:{}:v1", dst.display()));
    if !ok {
        return Err(format!("pull: {err}"));
    }
    assert_eq!(
        tree(&src.join("blobs")),
        tree(&dst.join("blobs")),
        "{remote}: pulled other bytes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_round_trips_on_garage() {
    let garage = GarageCluster::start();
    garage.create_bucket("images");
    let berth = berth_on(&garage, "images");
    // Chunks that do not fall on part boundaries: the short tail left at the end is copied
    // into the last part with UploadPartCopy.
    let api = integration::http::Api::new(&berth.url);
    let data = bytes::Bytes::from(integration::layout::random_bytes(9, (13 << 20) + 5));
    let digest = api.chunked_push(&[], "team/chunked", &data, 7 << 20).await;
    let r = api
        .send(
            reqwest::Method::GET,
            &format!("/v2/team/chunked/blobs/{digest}"),
            &[],
            None,
        )
        .await;
    let url = integration::http::header(&r, "location").expect("a redirect to Garage");
    let pulled = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert!(pulled == data, "the chunked blob differs");
    let work = tempfile::tempdir().unwrap();
    for (i, layers) in [vec![3 << 20, 20 << 20], vec![10 << 10, 6 << 20]]
        .iter()
        .enumerate()
    {
        let (src, dst) = (
            work.path().join(format!("src{i}")),
            work.path().join(format!("dst{i}")),
        );
        write_image(&src, "v1", 40 + i as u64, layers);
        let remote = format!("docker://{}/team/app:v{i}", berth.host);
        round_trip(&src, &dst, &remote).unwrap();
    }
}

#[test]
fn a_garage_node_killed_during_pushes_and_pulls_loses_nothing_acknowledged() {
    let mut garage = GarageCluster::start();
    garage.create_bucket("nodeloss");
    let berth = berth_on(&garage, "nodeloss");
    let work = tempfile::tempdir().unwrap();
    let rounds = 9;
    let started = Instant::now();
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for i in 0..rounds {
        // Down for the middle third of the rounds, then back on its data.
        if i == rounds / 3 {
            garage.kill(2);
        }
        if i == 2 * rounds / 3 {
            garage.restart(2);
        }
        let src = work.path().join(format!("src{i}"));
        write_image(&src, "v1", 700 + i as u64, &[7 << 20, 1 << 20, 10 << 10]);
        let remote = format!("docker://{}/team/app:r{i}", berth.host);
        match round_trip(&src, &work.path().join(format!("dst{i}")), &remote) {
            Ok(()) => acknowledged.push((i, src, remote)),
            Err(e) => failed.push(format!("round {i}: {e}")),
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "rounds take too long"
        );
    }
    eprintln!(
        "{} of {rounds} round trips with node 3 down for a third of them; failed: {failed:#?}",
        acknowledged.len()
    );
    // Two nodes of three hold a quorum: every round, during the loss too, goes through.
    assert!(failed.is_empty(), "{failed:#?}");
    // Everything acknowledged is still there, the node that was down included in the reads
    // (the balancer sends requests to it again).
    for (i, src, remote) in &acknowledged {
        let dst = work.path().join(format!("again{i}"));
        round_trip(src, &dst, remote).unwrap();
    }
    // And with another node down, what was written while the first was gone is read from
    // the two that hold it.
    garage.kill(0);
    for (i, src, remote) in &acknowledged {
        let dst = work.path().join(format!("without0-{i}"));
        let (ok, err) = skopeo_attempt(remote, &format!("oci:{}:v1", dst.display()));
        assert!(ok, "round {i} unreadable with node 1 down: {err}");
        assert_eq!(tree(&src.join("blobs")), tree(&dst.join("blobs")));
    }
}
