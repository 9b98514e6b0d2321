//! The shared driver suite against real object stores on loopback: moto (S3) and Azurite.

use std::sync::Arc;

use integration::emulators::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto};
use registry_core::storage::suite::SuiteOptions;
use storage_drivers::azure::{AzureOptions, azure_driver};
use storage_drivers::s3::{S3Options, s3_driver};

/// Both ring and aws-lc-rs are linked into this test binary: pick one, as berth's main does.
fn tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn s3_options(moto: &Moto, bucket: &str) -> S3Options {
    S3Options {
        bucket: bucket.into(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.endpoint.clone()),
        access_key: Some("test".into()),
        secret_key: Some("test".into()),
        force_path_style: true,
        root: "registry".into(),
        part_size: 5 << 20,
        copy_threshold: 5 << 30,
        copy_part_size: 1 << 30,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_moto_passes_the_suite() {
    tls();
    let moto = Moto::start();
    moto.create_bucket("suite");
    let driver = s3_driver(&s3_options(&moto, "suite")).unwrap();
    // moto evaluates If-Match without a lock, so racing updates can both pass there; S3 itself
    // makes conditional writes atomic. Every sequential conditional rule is still checked.
    let options = SuiteOptions {
        atomic_conditional_update: false,
    };
    registry_core::storage::suite::run_with(Arc::new(driver), options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_part_copy_for_large_objects() {
    tls();
    // The UploadPartCopy path normally starts above 5 GiB; a low threshold exercises it here.
    let moto = Moto::start();
    moto.create_bucket("bigcopy");
    let mut o = s3_options(&moto, "bigcopy");
    o.copy_threshold = 1 << 20;
    o.copy_part_size = 5 << 20;
    let d = s3_driver(&o).unwrap();
    use registry_core::StorageDriver;
    let data: Vec<u8> = (0..(12 << 20) + 7).map(|i: u32| (i % 253) as u8).collect();
    let chunks = vec![Ok(bytes::Bytes::from(data.clone()))];
    d.put_stream("big/src", Box::pin(futures::stream::iter(chunks)))
        .await
        .unwrap();
    d.copy("big/src", "big/dst").await.unwrap();
    let (got, _) = d.read_small("big/dst").await.unwrap();
    assert!(got.as_ref() == data.as_slice(), "copied object differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_on_azurite_passes_the_suite() {
    tls();
    let azurite = Azurite::start();
    azurite.create_container("suite");
    let driver = azure_driver(&AzureOptions {
        account: AZURITE_ACCOUNT.into(),
        account_key: Some(AZURITE_KEY.into()),
        container: "suite".into(),
        endpoint: Some(azurite.endpoint.clone()),
        root: "registry".into(),
        part_size: 5 << 20,
    })
    .unwrap();
    registry_core::storage::suite::run_all(Arc::new(driver)).await;
}
