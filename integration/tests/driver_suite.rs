//! The shared driver suite against real object stores on loopback: moto and s3s-fs (S3), Azurite
//! (Azure) and the GCS emulator.

use std::sync::Arc;

use integration::emulators::s3_options;
use integration::emulators::{
    AZURITE_ACCOUNT, AZURITE_KEY, Azurite, GcsEmulator, Moto, S3S_ACCESS_KEY, S3S_SECRET_KEY, S3sFs,
};
use registry_core::storage::suite::SuiteOptions;
use storage_drivers::azure::{AzureOptions, azure_driver};
use storage_drivers::s3::s3_driver;

/// moto accepts any keys.
const MOTO_KEYS: (&str, &str) = ("test", "test");

/// Both ring and aws-lc-rs are linked into this test binary: pick one, as berth's main does.
fn tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_moto_passes_the_suite() {
    tls();
    let moto = Moto::start();
    moto.create_bucket("suite");
    let driver = s3_driver(&s3_options(&moto.endpoint, MOTO_KEYS, "suite")).unwrap();
    // moto evaluates If-Match without a lock, so racing updates can both pass there; S3 itself
    // makes conditional writes atomic. Every sequential conditional rule is still checked.
    let options = SuiteOptions {
        atomic_conditional_update: false,
        conditional_puts: true,
    };
    let driver: Arc<dyn registry_core::StorageDriver> = Arc::new(driver);
    registry_core::storage::suite::run_with(driver.clone(), options).await;
    registry_core::registry::index_suite::run(driver, false).await;
}

/// The retrying wrapper every object store runs behind is a driver too: it keeps the contract,
/// on a store that fails one request in ten (the fault proxy, in front of moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrying_wrapper_passes_the_suite_on_a_failing_store() {
    use integration::fault_proxy::{FaultProxy, Faults};
    use storage_drivers::resilient::{Resilient, RetryPolicy};
    tls();
    let moto = Moto::start();
    moto.create_bucket("suite");
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Faults {
            unavailable: 0.04,
            server_error: 0.02,
            reset: 0.02,
            applied_then_error: 0.01,
            applied_then_reset: 0.01,
            ..Faults::default()
        },
    );
    let driver = s3_driver(&s3_options(&proxy.endpoint, MOTO_KEYS, "suite")).unwrap();
    let resilient = Resilient::new(Arc::new(driver), RetryPolicy::default());
    let options = SuiteOptions {
        atomic_conditional_update: false,
        conditional_puts: true,
    };
    let driver: Arc<dyn registry_core::StorageDriver> = Arc::new(resilient);
    registry_core::storage::suite::run_with(driver.clone(), options).await;
    // A conditional write applied but answered with an error is sent again and refused: the
    // index takes that as a lost race, reads again and finds its change in.
    registry_core::registry::index_suite::run(driver, false).await;
    assert!(proxy.faulted() > 0, "the proxy injected nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_s3s_fs_passes_the_suite() {
    tls();
    // s3s-fs checks every request's SigV4 signature, which moto does not.
    let s3 = S3sFs::start();
    s3.create_bucket("suite");
    let keys = (S3S_ACCESS_KEY, S3S_SECRET_KEY);
    let mut options = s3_options(&s3.endpoint, keys, "suite");
    // Every copy of 5 MiB or more through UploadPartCopy (below, one part would be a CopyObject
    // in disguise), and every short tail copied into a part, so that those requests'
    // signatures are checked too.
    options.copy_threshold = 0;
    let driver = s3_driver(&options).unwrap();
    // Like moto, s3s-fs checks If-Match and If-None-Match but not atomically (8 of 8 racing
    // updates of one version passed): the sequential conditional rules are checked here.
    let options = SuiteOptions {
        atomic_conditional_update: false,
        conditional_puts: true,
    };
    let driver: Arc<dyn registry_core::StorageDriver> = Arc::new(driver);
    registry_core::storage::suite::run_with(driver.clone(), options).await;
    registry_core::registry::index_suite::run(driver, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_part_copy_for_large_objects() {
    tls();
    // The UploadPartCopy path normally starts above 5 GiB; a low threshold exercises it here.
    let moto = Moto::start();
    moto.create_bucket("bigcopy");
    // Through a proxy that lists the requests, to see which copy was made.
    // A store that refuses CopyObject above 8 MiB stands in for S3's 5 GiB limit.
    let proxy = integration::fault_proxy::FaultProxy::start(
        &moto.endpoint,
        integration::fault_proxy::Faults {
            copy_object_limit: Some(8 << 20),
            ..Default::default()
        },
    );
    let mut o = s3_options(&proxy.endpoint, MOTO_KEYS, "bigcopy");
    o.copy_threshold = 1 << 20;
    o.copy_part_size = 5 << 20;
    let d = s3_driver(&o).unwrap();
    use registry_core::StorageDriver;
    let data: Vec<u8> = (0..(12 << 20) + 7).map(|i: u32| (i % 253) as u8).collect();
    let chunks = vec![Ok(bytes::Bytes::from(data.clone()))];
    d.put_stream("big/src", Box::pin(futures::stream::iter(chunks)))
        .await
        .unwrap();
    let before = proxy.requests_since(0).len();
    d.publish("big/src", "big/dst", data.len() as u64)
        .await
        .unwrap();
    let copies: Vec<String> = proxy
        .requests_since(before)
        .into_iter()
        .filter(|r| r.starts_with("PUT") && r.contains("big/dst?partNumber="))
        .collect();
    assert_eq!(copies.len(), 3, "12 MiB in 5 MiB parts: {copies:?}");
    let (got, _) = d.read_small("big/dst").await.unwrap();
    assert!(got.as_ref() == data.as_slice(), "copied object differs");
    // The stand-in limit holds: one CopyObject of the same object is refused.
    assert!(
        d.copy("big/src", "big/whole").await.is_err(),
        "the store took a CopyObject above its limit"
    );
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
        ..Default::default()
    })
    .unwrap();
    let driver: Arc<dyn registry_core::StorageDriver> = Arc::new(driver);
    registry_core::storage::suite::run_all(driver.clone()).await;
    registry_core::registry::index_suite::run(driver, true).await;
}

fn gcs_options(emu: &GcsEmulator, bucket: &str) -> storage_drivers::gcs::GcsOptions {
    storage_drivers::gcs::GcsOptions {
        bucket: bucket.into(),
        root: "registry".into(),
        endpoint: Some(emu.endpoint.clone()),
        service_account_key: Some(emu.service_account_key.clone()),
        anonymous: true,
        part_size: 5 << 20,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_on_the_emulator_passes_the_suite() {
    tls();
    let emu = GcsEmulator::start();
    emu.create_bucket("suite");
    let driver = storage_drivers::gcs::gcs_driver(&gcs_options(&emu, "suite")).unwrap();
    // The emulator ignores ifGenerationMatch; gcs_preconditions_are_sent_and_honoured covers it.
    let options = SuiteOptions {
        atomic_conditional_update: false,
        conditional_puts: false,
    };
    registry_core::storage::suite::run_with(Arc::new(driver), options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_preconditions_are_sent_and_honoured() {
    use bytes::Bytes;
    use integration::listener::{recording_listener, response};
    use registry_core::StorageDriver;
    use registry_core::storage::{ObjectVersion, PutCondition, StorageError};
    tls();
    let refused = response("412 Precondition Failed", "");
    let stored = response(
        "200 OK",
        r#"{"name":"registry/k","size":"1","generation":"43"}"#,
    );
    let (endpoint, requests) = recording_listener(vec![refused.clone(), refused, stored]);
    let emu_key = GcsEmulator::start();
    let mut o = gcs_options(&emu_key, "b");
    o.endpoint = Some(endpoint);
    let d = storage_drivers::gcs::gcs_driver(&o).unwrap();
    let create = d
        .put_bytes("k", Bytes::from_static(b"x"), PutCondition::CreateOnly)
        .await;
    assert!(
        matches!(create, Err(StorageError::AlreadyExists(_))),
        "{create:?}"
    );
    assert!(
        requests
            .recv()
            .unwrap()
            .first_line
            .contains("ifGenerationMatch=0"),
        "create-only sends ifGenerationMatch=0"
    );
    let stale = ObjectVersion {
        e_tag: None,
        version: Some("42".into()),
    };
    let update = d
        .put_bytes(
            "k",
            Bytes::from_static(b"x"),
            PutCondition::IfVersion(stale.clone()),
        )
        .await;
    assert!(
        matches!(update, Err(StorageError::Precondition(_))),
        "{update:?}"
    );
    assert!(
        requests
            .recv()
            .unwrap()
            .first_line
            .contains("ifGenerationMatch=42"),
        "update sends the generation"
    );
    let ok = d
        .put_bytes(
            "k",
            Bytes::from_static(b"x"),
            PutCondition::IfVersion(stale),
        )
        .await
        .unwrap();
    assert_eq!(
        ok.version.version.as_deref(),
        Some("43"),
        "the new generation is the new version"
    );
}
