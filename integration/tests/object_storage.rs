//! berth on object storage (moto and s3s-fs for S3, Azurite for Azure): skopeo round trips,
//! presigned redirects, chunked uploads of any chunk size, and uploads that move between replicas.

use std::time::Duration;

use integration::Berth;
use integration::emulators::{Azurite, Moto, S3sFs};
use integration::http::{Api, error_code, header};
use integration::layout::{random_bytes, sha256, write_image};
use integration::tools::{skopeo_copy, tree};
use reqwest::Method;

fn berth_on(storage_yaml: &str, extra: &str) -> Berth {
    Berth::with_config(
        &format!("version: 0.1\nstorage:\n  {storage_yaml}  delete:\n    enabled: true\n{extra}"),
        &[],
    )
}

fn round_trip(berth: &Berth, seed: u64) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", seed, &[3 << 20, 20 << 20]);
    let remote = format!("docker://{}/team/app:v1", berth.host);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &remote,
        &["--preserve-digests"],
    );
    let dst = work.path().join("dst");
    skopeo_copy(&remote, &format!("oci:{}:v1", dst.display()), &[]);
    assert_eq!(
        tree(&src.join("blobs")),
        tree(&dst.join("blobs")),
        "pulled blobs differ"
    );
}

/// GET answers 307 to a presigned URL that serves the exact bytes; HEAD is answered by berth.
async fn check_redirect(api: &Api, repo: &str, expect_host_of: &str) {
    let data = random_bytes(77, 1 << 20);
    let d = api.push_blob(repo, &data).await;
    let r = api
        .send(Method::GET, &format!("/v2/{repo}/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 307);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let location = header(&r, "location").unwrap();
    assert!(
        location.starts_with(expect_host_of),
        "{location} does not point at the store {expect_host_of}"
    );
    let direct = reqwest::get(&location).await.unwrap();
    assert_eq!(direct.status(), 200, "presigned URL refused");
    assert!(
        direct.bytes().await.unwrap().to_vec() == data,
        "presigned URL serves other bytes"
    );
    let r = api
        .send(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-length").unwrap(),
        data.len().to_string()
    );
}

#[test]
fn skopeo_round_trip_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("images");
    let berth = berth_on(&moto.storage_yaml("images"), "");
    round_trip(&berth, 11);
}

/// The same on a server that checks every request's signature: multipart uploads, server-side
/// copies and conditional writes all signed as S3 expects.
#[test]
fn skopeo_round_trip_on_s3s_fs() {
    let s3 = S3sFs::start();
    s3.create_bucket("images");
    let berth = berth_on(&s3.storage_yaml("images"), "");
    round_trip(&berth, 13);
}

#[test]
fn skopeo_round_trip_on_azure() {
    let azurite = Azurite::start();
    azurite.create_container("images");
    let berth = berth_on(&azurite.storage_yaml("images"), "");
    round_trip(&berth, 12);
}

#[tokio::test]
async fn blob_get_redirects_to_presigned_urls() {
    let moto = Moto::start();
    moto.create_bucket("redir");
    let s3 = berth_on(&moto.storage_yaml("redir"), "");
    check_redirect(&Api::new(&s3.url), "r/s3", &moto.endpoint).await;

    let azurite = Azurite::start();
    azurite.create_container("redir");
    let az = berth_on(&azurite.storage_yaml("redir"), "");
    // Azurite checks SAS signatures for real.
    check_redirect(&Api::new(&az.url), "r/azure", &azurite.endpoint).await;
    let api = Api::new(&az.url);
    let d = api.push_blob("r/azure", b"tamper").await;
    let r = api
        .send(Method::GET, &format!("/v2/r/azure/blobs/{d}"), &[], None)
        .await;
    let tampered = header(&r, "location").unwrap().replace("sig=", "sig=AAAA");
    assert_eq!(
        reqwest::get(&tampered).await.unwrap().status(),
        403,
        "Azurite accepted a tampered SAS"
    );
}

/// Presigned S3 URLs pass a real SigV4 check (s3s-fs verifies them; moto does not): the URL
/// serves the blob, and the same URL with its signature, its object or its lifetime changed is
/// refused.
#[tokio::test]
async fn presigned_s3_urls_pass_a_real_signature_check() {
    let s3 = S3sFs::start();
    s3.create_bucket("signed");
    let storage = s3.storage_yaml("signed");
    let berth = berth_on(&format!("{storage}  redirect:\n    expiry: 2\n"), "");
    let api = Api::new(&berth.url);
    check_redirect(&api, "r/signed", &s3.endpoint).await;

    let d = api.push_blob("r/signed", b"signed bytes").await;
    let other = api.push_blob("r/signed", b"other bytes").await;
    let r = api
        .send(Method::GET, &format!("/v2/r/signed/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 307);
    let url = header(&r, "location").unwrap();
    let status = |u: String| async move { reqwest::get(&u).await.unwrap().status() };
    assert_eq!(
        status(url.clone()).await,
        200,
        "presigned URL refused: {url}"
    );

    let sig = url
        .find("X-Amz-Signature=")
        .expect("no signature in the URL")
        + 16;
    let flipped = if &url[sig..sig + 1] == "0" { "1" } else { "0" };
    let forged = format!("{}{flipped}{}", &url[..sig], &url[sig + 1..]);
    assert_eq!(status(forged).await, 403, "a forged signature was accepted");

    let (hex, other_hex) = (
        d.split_once(':').unwrap().1,
        other.split_once(':').unwrap().1,
    );
    assert!(url.contains(hex), "{url} does not name the blob");
    let moved = url.replace(hex, other_hex);
    assert_eq!(
        status(moved).await,
        403,
        "the signature opened another object"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(url).await, 403, "an expired URL was accepted");
}

#[tokio::test]
async fn redirect_can_be_disabled_or_pointed_at_a_public_endpoint() {
    let moto = Moto::start();
    moto.create_bucket("noredir");
    let storage = moto.storage_yaml("noredir");
    let off = berth_on(&format!("{storage}  redirect:\n    disable: true\n"), "");
    let api = Api::new(&off.url);
    let d = api.push_blob("x", b"through berth").await;
    let r = api
        .send(Method::GET, &format!("/v2/x/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"through berth");
    drop(off);
    let public = berth_on(
        &format!(
            "{storage}  redirect:\n    publicendpoint: https://registry-cdn.example.com\n    expiry: 60\n"
        ),
        "",
    );
    let api = Api::new(&public.url);
    let r = api
        .send(Method::GET, &format!("/v2/x/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 307);
    let loc = header(&r, "location").unwrap();
    assert!(
        loc.starts_with(
            "https://registry-cdn.example.com/noredir/registry/docker/registry/v2/blobs/"
        ),
        "{loc}"
    );
    assert!(loc.contains("X-Amz-Expires=60"), "{loc}");

    let azurite = Azurite::start();
    azurite.create_container("public");
    let storage = azurite.storage_yaml("public");
    let az = berth_on(
        &format!("{storage}  redirect:\n    publicendpoint: https://blobs.example.com:8443\n"),
        "",
    );
    let api = Api::new(&az.url);
    let d = api.push_blob("x", b"via cdn").await;
    let r = api
        .send(Method::GET, &format!("/v2/x/blobs/{d}"), &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    assert!(
        loc.starts_with("https://blobs.example.com:8443/devstoreaccount1/public/registry/"),
        "{loc}"
    );
    assert!(loc.contains("sig="), "SAS kept: {loc}");
}

async fn fetch(api: &Api, repo: &str, d: &str) -> Vec<u8> {
    let r = api
        .send(Method::GET, &format!("/v2/{repo}/blobs/{d}"), &[], None)
        .await;
    let url = match r.status().as_u16() {
        307 => header(&r, "location").unwrap(),
        200 => return r.bytes().await.unwrap().to_vec(),
        s => panic!("GET blob: {s}"),
    };
    reqwest::get(url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn two_hundred_mib_in_seven_mib_patches_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("chunks");
    let berth = berth_on(&moto.storage_yaml("chunks"), "");
    let api = Api::new(&berth.url);
    let data = bytes::Bytes::from(random_bytes(200, 200 << 20));
    let r = api
        .send(Method::POST, "/v2/big/blobs/uploads/", &[], None)
        .await;
    assert_eq!(
        header(&r, "oci-chunk-min-length").as_deref(),
        Some("16777216"),
        "part size advertised"
    );
    let d = api.chunked_push(&[], "big", &data, 7 << 20).await;
    assert_eq!(sha256(&fetch(&api, "big", &d).await), d);
}

#[tokio::test]
async fn patches_alternate_between_two_replicas() {
    for backend in ["s3", "azure"] {
        let (moto, azurite);
        let storage = if backend == "s3" {
            moto = Moto::start();
            moto.create_bucket("shared");
            moto.storage_yaml("shared")
        } else {
            azurite = Azurite::start();
            azurite.create_container("shared");
            azurite.storage_yaml("shared")
        };
        let (a, b) = (berth_on(&storage, ""), berth_on(&storage, ""));
        let (api_a, api_b) = (Api::new(&a.url), Api::new(&b.url));
        let data = bytes::Bytes::from(random_bytes(300, 45 << 20));
        let d = api_a
            .chunked_push(&[&api_b], "team/app", &data, 6 << 20)
            .await;
        assert_eq!(sha256(&fetch(&api_a, "team/app", &d).await), d, "{backend}");
        assert_eq!(sha256(&fetch(&api_b, "team/app", &d).await), d, "{backend}");
    }
}

#[tokio::test]
async fn replica_killed_mid_patch_leaves_a_resumable_upload() {
    let moto = Moto::start();
    moto.create_bucket("crash");
    let storage = moto.storage_yaml("crash");
    let mut a = berth_on(&storage, "");
    let b = berth_on(&storage, "");
    let (api_a, api_b) = (Api::new(&a.url), Api::new(&b.url));
    let data = random_bytes(400, 60 << 20);
    let d = sha256(&data);
    let r = api_a
        .send(Method::POST, "/v2/crash/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();

    // Stream 40 MiB to replica A, then stall: the request stays open while A is killed.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let url = api_a.url(&loc);
    let client = api_a.client.clone();
    let patch = tokio::spawn(async move { client.patch(url).body(body).send().await });
    for piece in data[..40 << 20].chunks(1 << 20) {
        tx.send(Ok(piece.to_vec())).await.unwrap();
    }
    // Wait until A has committed at least two 16 MiB parts (up to 30 s: moto takes its time
    // when the whole suite runs beside it).
    let mut committed = 0u64;
    for _ in 0..600 {
        let r = api_b.send(Method::GET, &loc, &[], None).await;
        assert_eq!(r.status(), 204);
        let range = header(&r, "range").unwrap();
        committed = range.split('-').nth(1).unwrap().parse::<u64>().unwrap() + 1;
        if committed >= 32 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(committed >= 32 << 20, "replica A never committed its parts");
    a.kill();
    drop(tx);
    // The killed replica's request fails; what matters is what the other replica sees.
    let _ = patch.await;

    // Nothing is visible under the blob's digest yet.
    let r = api_b
        .send(Method::HEAD, &format!("/v2/crash/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
    // Replica B reports where to resume, refuses a chunk from elsewhere, and finishes the upload.
    let r = api_b.send(Method::GET, &loc, &[], None).await;
    let offset = header(&r, "range")
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        + 1;
    assert_eq!(
        offset % (16 << 20),
        0,
        "resumes at a part boundary: {offset}"
    );
    let r = api_b
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "0-9")],
            Some(data[..10].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").unwrap(), format!("0-{}", offset - 1));
    let rest = &data[offset..];
    let range = format!("{offset}-{}", data.len() - 1);
    let r = api_b
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", &range)],
            Some(rest.to_vec()),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = api_b
        .send(Method::PUT, &format!("{loc}?digest={d}"), &[], None)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(sha256(&fetch(&api_b, "crash", &d).await), d);
}

fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing_in_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("clean");
    let berth = berth_on(&moto.storage_yaml("clean"), "");
    let api = Api::new(&berth.url);
    let data = random_bytes(500, 20 << 20);
    let r = api
        .send(Method::POST, "/v2/m/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    let r = api.send(Method::PATCH, &loc, &[], Some(data.clone())).await;
    let loc = header(&r, "location").unwrap();
    let wrong = sha256(b"not these bytes");
    let r = api
        .send(Method::PUT, &format!("{loc}?digest={wrong}"), &[], None)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let listing = reqwest::get(format!("{}/clean?list-type=2", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listing.contains("<Key>"), "objects left behind: {listing}");
    let uploads = reqwest::get(format!("{}/clean?uploads", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !uploads.contains("<UploadId>"),
        "multipart uploads left behind: {uploads}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_aborts_multipart_uploads_no_session_names() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let moto = Moto::start();
    moto.create_bucket("purge");
    // Left by a crash: a multipart upload no state names, and a session with data but no
    // state (a monolithic push that never finished).
    let driver = moto.driver("purge");
    use registry_core::storage::{PutCondition, StorageDriver};
    let orphan = "docker/registry/v2/repositories/team/app/_uploads/7c9e6679-7425-40de-944b-e07fc1f90ae7/data";
    driver.create_multipart(orphan).await.unwrap();
    let stateless = "docker/registry/v2/repositories/team/app/_uploads/16fd2706-8baf-433b-82eb-8c7fada847da/staged/0";
    driver
        .put_bytes(
            stateless,
            bytes::Bytes::from_static(b"tail"),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    let far = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    assert_eq!(
        driver
            .dangling_multiparts("docker/", far)
            .await
            .unwrap()
            .len(),
        1
    );
    let berth = berth_on(
        &moto.storage_yaml("purge"),
        "  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1s\n      interval: 1s\n",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let open = driver.dangling_multiparts("docker/", far).await.unwrap();
        let staged = driver.stat(stateless).await.is_ok();
        if open.is_empty() && !staged {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {open:?}, staged {staged}: {}",
            berth.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Server-side copies the store was asked for since its `from`-th request, as
/// (destination request, whole-object copy?) pairs.
fn copies(proxy: &integration::fault_proxy::FaultProxy, from: usize) -> Vec<(String, bool)> {
    proxy
        .requests_since(from)
        .into_iter()
        .filter(|r| r.contains(" copy-of "))
        .map(|r| {
            let whole = !r.contains("partNumber=");
            (r, whole)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_above_the_copy_threshold_are_moved_part_by_part() {
    use integration::fault_proxy::{FaultProxy, Faults};
    let moto = Moto::start();
    moto.create_bucket("bigcopy");
    // A store whose CopyObject refuses sources above 8 MiB, as S3 refuses them above 5 GiB.
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Faults {
            copy_object_limit: Some(8 << 20),
            ..Faults::default()
        },
    );
    let storage = moto
        .storage_yaml("bigcopy")
        .replace(&moto.endpoint, &proxy.endpoint)
        + "    chunksize: 5242880\n    multipartcopythresholdsize: 8388608\n    multipartcopychunksize: 5242880\n";
    let berth = berth_on(&storage, "");
    let api = Api::new(&berth.url);
    // Chunked (a multipart write completed, then moved), monolithic (one staged object, then
    // moved) and one below the threshold (one CopyObject is right there).
    let big = bytes::Bytes::from(random_bytes(24, (20 << 20) + 3));
    let before = proxy.requests_since(0).len();
    let chunked = api.chunked_push(&[], "big/copy", &big, 6 << 20).await;
    let chunked_copies = copies(&proxy, before);
    let before = proxy.requests_since(0).len();
    let other = bytes::Bytes::from(random_bytes(25, (12 << 20) + 1));
    let monolithic = api.push_blob("big/copy", &other).await;
    let monolithic_copies = copies(&proxy, before);
    let before = proxy.requests_since(0).len();
    let small = random_bytes(26, 7 << 20);
    let small_digest = api.push_blob("big/copy", &small).await;
    let small_copies = copies(&proxy, before);
    for (what, found) in [
        ("chunked", &chunked_copies),
        ("monolithic", &monolithic_copies),
    ] {
        let to_blob: Vec<_> = found
            .iter()
            .filter(|(r, _)| r.contains("/blobs/"))
            .collect();
        assert!(
            to_blob.iter().all(|(_, whole)| !whole),
            "{what}: a CopyObject above the threshold: {found:#?}"
        );
        assert!(
            to_blob.len() >= 3,
            "{what}: 12-20 MiB in 5 MiB copied parts: {found:#?}"
        );
    }
    assert!(
        small_copies
            .iter()
            .filter(|(r, _)| r.contains("/blobs/"))
            .all(|(_, whole)| *whole),
        "below the threshold, one CopyObject: {small_copies:#?}"
    );
    assert_eq!(sha256(&fetch(&api, "big/copy", &chunked).await), chunked);
    assert_eq!(
        sha256(&fetch(&api, "big/copy", &monolithic).await),
        monolithic
    );
    assert_eq!(
        sha256(&fetch(&api, "big/copy", &small_digest).await),
        small_digest
    );
}
