//! Pull-through caching end to end: Berth in front of a real upstream (CNCF distribution 2.8,
//! or another Berth with token auth), pulled with skopeo; cached objects served from the store
//! when the upstream is gone; pushes to cached repositories refused, others accepted.

use std::path::Path;

use integration::Berth;
use integration::credentials::TokenIssuer;
use integration::distribution::Distribution;
use integration::http::{Api, error_code, header};
use integration::layout::{Image, write_image};
use integration::tools::{skopeo_copy, tree};
use reqwest::Method;

/// A Berth on local disk under `root` with `extra` configuration appended.
fn berth(root: &Path, extra: &str) -> Berth {
    Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{extra}",
            root.display()
        ),
        &[],
    )
}

/// Where distribution's layout keeps a blob's bytes under `root` (Berth's and the upstream's).
fn blob_file(root: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

/// Whether the blob's bytes are in Berth's store under `root`.
fn stored(root: &Path, digest: &str) -> bool {
    blob_file(root, digest).is_file()
}

/// Whether the blob's bytes reach the store within a few seconds: a blob is kept once its
/// last byte has been verified, which may be just after the client has it.
fn kept(root: &Path, digest: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if stored(root, digest) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// The blobs (by digest) of an OCI layout.
type Blobs = std::collections::BTreeSet<String>;

/// Pulls `reference` from `host` into a fresh OCI layout under `dir` and names its blobs.
fn pull(host: &str, reference: &str, dir: &Path, extra: &[&str]) -> Blobs {
    let dst = tempfile::tempdir_in(dir).unwrap();
    skopeo_copy(
        &format!("docker://{host}/{reference}"),
        &format!("oci:{}:x", dst.path().display()),
        extra,
    );
    tree(&dst.path().join("blobs")).into_keys().collect()
}

/// Pushes a two-layer image to `host/repo:tag` and returns it with its source layout's blobs.
fn push_image(host: &str, repo: &str, dir: &Path, seed: u64, extra: &[&str]) -> (Image, Blobs) {
    let src = dir.join(format!("src-{seed}"));
    let image = write_image(&src, "v1", seed, &[1 << 20, 300_000]);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{host}/{repo}:v1"),
        extra,
    );
    (image, tree(&src.join("blobs")).into_keys().collect())
}

#[tokio::test]
async fn caches_distribution_and_serves_the_cache_when_the_upstream_is_down() {
    let work = tempfile::tempdir().unwrap();
    let upstream = Distribution::filesystem(&work.path().join("upstream"));
    let (image, source_blobs) = push_image(&upstream.host, "library/app", work.path(), 1, &[]);
    let root = work.path().join("cache");
    let (hook, events) = integration::listener::recording_listener(
        (0..50)
            .map(|_| integration::listener::response("200 OK", ""))
            .collect(),
    );
    let cache = berth(
        &root,
        &format!(
            "proxy:\n  remoteurl: http://{}\nnotifications:\n  endpoints:\n    - name: hook\n      url: {hook}/events\n      timeout: 500ms\n      backoff: 100ms\n",
            upstream.host
        ),
    );

    let pulled = pull(&cache.host, "library/app:v1", work.path(), &[]);
    assert_eq!(pulled, source_blobs, "pulled through the cache");
    for d in image.layer_digests.iter().chain([&image.manifest_digest]) {
        assert!(kept(&root, d), "{d} was not kept");
    }
    // Pulls served straight from the upstream are pulls to webhook listeners too.
    let mut pulled_digests = std::collections::BTreeSet::new();
    while !image
        .layer_digests
        .iter()
        .all(|d| pulled_digests.contains(d))
    {
        let req = events
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("no pull event for every layer");
        let envelope: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        for e in envelope["events"].as_array().unwrap() {
            if e["action"] == "pull" {
                pulled_digests.insert(e["target"]["digest"].as_str().unwrap().to_owned());
            }
        }
    }
    let api = Api::new(&cache.url);
    let r = api
        .send(Method::GET, "/v2/library/app/tags/list", &[], None)
        .await;
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        list,
        serde_json::json!({"name": "library/app", "tags": ["v1"]})
    );

    // A cache is read-only: pushes go to the upstream.
    let r = api
        .send(Method::POST, "/v2/library/app/blobs/uploads/", &[], None)
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");

    // A tag the upstream moves is followed on the next pull.
    let (moved, moved_blobs) = push_image(&upstream.host, "library/app", work.path(), 2, &[]);
    assert_eq!(
        pull(&cache.host, "library/app:v1", work.path(), &[]),
        moved_blobs
    );
    assert!(kept(&root, &moved.manifest_digest));

    // Upstream gone: what was cached is still served, by tag and by digest.
    drop(upstream);
    assert_eq!(
        pull(&cache.host, "library/app:v1", work.path(), &[]),
        moved_blobs
    );
    let by_digest = format!("library/app@{}", image.manifest_digest);
    assert_eq!(
        pull(&cache.host, &by_digest, work.path(), &[]),
        source_blobs
    );
    // What was never cached cannot be: a 502 that says why, not a 404 or a 500.
    let r = api
        .send(Method::GET, "/v2/library/other/manifests/v1", &[], None)
        .await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("upstream registry is unreachable"), "{body}");
}

#[tokio::test]
async fn prefixed_upstreams_with_token_auth_beside_ordinary_repositories() {
    let work = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::new(
        work.path(),
        &[("mirror", "mirror-pass"), ("dev", "dev-pass")],
    );
    let upstream = berth(
        &work.path().join("upstream"),
        &issuer.config_yaml(
            "      - account: dev
        repository: '*'
        actions: ['*']
      - account: mirror
        repository: team/*
        actions: [pull]
",
        ),
    );
    let (image, source_blobs) = push_image(
        &upstream.host,
        "team/app",
        work.path(),
        3,
        &["--dest-creds", "dev:dev-pass"],
    );
    let second = Distribution::filesystem(&work.path().join("second"));
    let (_, second_blobs) = push_image(&second.host, "tools/cli", work.path(), 4, &[]);

    let root = work.path().join("cache");
    let cache = berth(
        &root,
        &format!(
            "berth:\n  proxies:\n    - prefix: corp\n      remoteurl: http://{}\n      username: mirror\n      password: mirror-pass\n    - prefix: hub\n      remoteurl: http://{}\n",
            upstream.host, second.host
        ),
    );
    // The upstream's token realm, scope and account are what skopeo would have used.
    assert_eq!(
        pull(&cache.host, "corp/team/app:v1", work.path(), &[]),
        source_blobs
    );
    assert_eq!(
        pull(&cache.host, "hub/tools/cli:v1", work.path(), &[]),
        second_blobs
    );
    for d in &image.layer_digests {
        assert!(kept(&root, d), "{d} was not kept");
    }

    let api = Api::new(&cache.url);
    // Outside every prefix the registry is an ordinary one.
    let (_, own_blobs) = push_image(&cache.host, "mine/app", work.path(), 5, &[]);
    assert_eq!(
        pull(&cache.host, "mine/app:v1", work.path(), &[]),
        own_blobs
    );
    let r = api
        .send(Method::POST, "/v2/hub/tools/cli/blobs/uploads/", &[], None)
        .await;
    assert_eq!(r.status(), 405);

    // A repository the mirror account may not read: the upstream refuses Berth, and the client
    // learns that it is the upstream that failed.
    let (_, _) = push_image(
        &upstream.host,
        "secret/app",
        work.path(),
        6,
        &["--dest-creds", "dev:dev-pass"],
    );
    let r = api
        .send(Method::GET, "/v2/corp/secret/app/manifests/v1", &[], None)
        .await;
    assert_eq!(r.status(), 502);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("refused the configured credentials")
    );
    // Blobs not cached yet: a HEAD is passed through without keeping anything; a range could
    // not be verified, so the whole blob is served (as HTTP allows), checked, and kept.
    let (other, other_blobs) = push_image(&second.host, "tools/other", work.path(), 7, &[]);
    let layer = &other.layer_digests[0];
    assert!(other_blobs.contains(&layer.replacen(':', "/", 1)));
    let size = std::fs::metadata(
        work.path()
            .join("src-7/blobs")
            .join(layer.replacen(':', "/", 1)),
    )
    .unwrap()
    .len();
    let path = format!("/v2/hub/tools/other/blobs/{layer}");
    let r = api.send(Method::HEAD, &path, &[], None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), Some(size.to_string()));
    assert!(!stored(&root, layer), "a HEAD cached the blob");
    let r = api
        .send(Method::GET, &path, &[("range", "bytes=0-9")], None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(layer.as_str())
    );
    assert_eq!(r.bytes().await.unwrap().len() as u64, size);
    assert!(kept(&root, layer));
    // Once kept, ranges are served from the store.
    let r = api
        .send(Method::GET, &path, &[("range", "bytes=0-9")], None)
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 10);
    let missing = integration::layout::sha256(b"nowhere");
    let r = api
        .send(
            Method::HEAD,
            &format!("/v2/hub/tools/other/blobs/{missing}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 404, "a blob the upstream lacks");
}

/// Flips the first byte of a blob in a distribution-layout store under `root` (same size).
fn tamper(root: &Path, digest: &str) {
    let path = blob_file(root, digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test]
async fn bytes_that_do_not_match_their_digest_are_never_kept() {
    let work = tempfile::tempdir().unwrap();
    let upstream_root = work.path().join("upstream");
    let upstream = Distribution::filesystem(&upstream_root);
    let (image, _) = push_image(&upstream.host, "team/app", work.path(), 8, &[]);
    // The upstream's disk goes bad under a layer and under the manifest.
    let layer = &image.layer_digests[0];
    tamper(&upstream_root, layer);
    tamper(&upstream_root, &image.manifest_digest);
    let root = work.path().join("cache");
    let cache = berth(
        &root,
        &format!("proxy:\n  remoteurl: http://{}\n", upstream.host),
    );
    let api = Api::new(&cache.url);

    let r = api
        .send(
            Method::GET,
            &format!("/v2/team/app/manifests/{}", image.manifest_digest),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 502, "a manifest that is not its digest");
    assert!(!stored(&root, &image.manifest_digest));

    // The client's transfer fails before it completes, every time; the store keeps nothing.
    let path = format!("/v2/team/app/blobs/{layer}");
    for _ in 0..2 {
        let r = api.send(Method::GET, &path, &[], None).await;
        assert_eq!(
            r.status(),
            200,
            "the status goes before the bytes are checked"
        );
        let announced = r.content_length();
        assert!(
            r.bytes().await.is_err(),
            "a complete transfer of bytes that are not {layer} ({announced:?} bytes announced)"
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!stored(&root, layer), "corrupt bytes were kept");
    let r = api.send(Method::HEAD, &path, &[], None).await;
    assert_eq!(r.status(), 200, "still answered from the upstream");
    assert!(!stored(&root, layer));
}

#[tokio::test]
async fn many_clients_of_one_uncached_blob_make_one_copy_in_the_store() {
    let work = tempfile::tempdir().unwrap();
    let upstream = Distribution::filesystem(&work.path().join("upstream"));
    // Larger than every socket and queue buffer in between, so a client that reads nothing
    // holds the copy in the middle.
    let data: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = Api::new(&format!("http://{}", upstream.host))
        .push_blob("team/big", &data)
        .await;
    let root = work.path().join("cache");
    let cache = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nproxy:\n  remoteurl: http://{}\n",
            root.display(),
            upstream.host
        ),
        &[("RUST_LOG", "info")],
    );
    let url = format!("{}/v2/team/big/blobs/{digest}", cache.url);
    let client = reqwest::Client::new();

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!stored(&root, &digest), "the first copy cannot be done yet");
    // Meanwhile two more pulls of it: passed through, whole and correct, with no copy of
    // their own.
    for _ in 0..2 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert_eq!(integration::layout::sha256(&body), digest);
    }
    let body = first.bytes().await.unwrap();
    assert_eq!(integration::layout::sha256(&body), digest);
    assert!(kept(&root, &digest));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let copies = cache
        .log()
        .matches("cached a blob from the upstream")
        .count();
    assert_eq!(copies, 1, "one copy into the store: {}", cache.log());

    // Once it is there, pulls come from the store.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), data.len());
    assert_eq!(
        cache
            .log()
            .matches("cached a blob from the upstream")
            .count(),
        1
    );
}

#[tokio::test]
async fn what_nobody_pulls_within_the_ttl_leaves_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let upstream = Distribution::filesystem(&work.path().join("upstream"));
    let (cold, _) = push_image(&upstream.host, "library/cold", work.path(), 21, &[]);
    let (hot, _) = push_image(&upstream.host, "library/hot", work.path(), 22, &[]);
    let root = work.path().join("cache");
    let cache = berth(
        &root,
        &format!(
            "proxy:\n  remoteurl: http://{}\n  ttl: 2s\nberth:\n  gc:\n    enabled: true\n    interval: 1s\n    grace: 0s\n",
            upstream.host
        ),
    );
    let api = Api::new(&cache.url);
    for repo in ["library/cold", "library/hot"] {
        pull(&cache.host, &format!("{repo}:v1"), work.path(), &[]);
    }
    for d in cold.layer_digests.iter().chain(&hot.layer_digests) {
        assert!(kept(&root, d), "{d} was not cached");
    }

    // hot is pulled all along (a manifest GET is a pull); cold is not, and goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cold.layer_digests.iter().any(|d| stored(&root, d)) {
        assert!(
            std::time::Instant::now() < deadline,
            "cold was never expired: {}",
            cache.log()
        );
        let r = api
            .send(Method::GET, "/v2/library/hot/manifests/v1", &[], None)
            .await;
        assert_eq!(r.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(!stored(&root, &cold.manifest_digest));
    // The collection counts what it expired when it ends, just after its last removal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = api.metrics().await;
        let expired: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("berth_cache_expired_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if expired >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tag and its manifest: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for d in hot.layer_digests.iter().chain([&hot.manifest_digest]) {
        assert!(stored(&root, d), "{d} of the pulled image went");
    }
    // The next pull of cold fetches it again.
    pull(&cache.host, "library/cold:v1", work.path(), &[]);
    assert!(kept(&root, &cold.layer_digests[0]));
}

/// An upstream that takes `delay` to answer a manifest HEAD and counts them; it serves one
/// manifest, `body`, for every tag.
fn slow_upstream(
    body: &'static [u8],
    delay: std::time::Duration,
) -> (
    integration::scripted::Scripted,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use integration::scripted::{Answer, Scripted};
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = heads.clone();
    let digest = integration::layout::sha256(body);
    let server = Scripted::start(move |req| {
        let head = req.first_line.starts_with("HEAD ");
        let headers = [
            ("content-type", "application/vnd.oci.image.manifest.v1+json"),
            ("docker-content-digest", digest.as_str()),
        ];
        if head {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(delay);
            return Answer::head("200 OK", &headers, body.len());
        }
        Answer::new("200 OK", &headers, body)
    });
    (server, heads)
}

#[tokio::test]
async fn pulls_of_one_tag_at_once_ask_the_upstream_once() {
    const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let (upstream, heads) = slow_upstream(MANIFEST, std::time::Duration::from_millis(500));
    let host = &upstream.host;
    let work = tempfile::tempdir().unwrap();
    let cache = berth(
        &work.path().join("cache"),
        &format!("proxy:\n  remoteurl: http://{host}\n"),
    );
    let api = Api::new(&cache.url);
    let pulls = (0..6).map(|_| api.send(Method::GET, "/v2/team/app/manifests/v1", &[], None));
    for r in futures::future::join_all(pulls).await {
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), MANIFEST);
    }
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A pull after that asks again: the upstream may have moved the tag meanwhile.
    let r = api
        .send(Method::GET, "/v2/team/app/manifests/v1", &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_cache_on_s3_redirects_pulls_of_what_it_fetched() {
    let work = tempfile::tempdir().unwrap();
    let upstream = Distribution::filesystem(&work.path().join("upstream"));
    let (image, source_blobs) = push_image(&upstream.host, "team/app", work.path(), 9, &[]);
    let moto = integration::emulators::Moto::start();
    moto.create_bucket("cache");
    let cache = Berth::with_config(
        &format!(
            "storage:\n  {}proxy:\n  remoteurl: http://{}\n",
            moto.storage_yaml("cache"),
            upstream.host
        ),
        &[],
    );
    assert_eq!(
        pull(&cache.host, "team/app:v1", work.path(), &[]),
        source_blobs
    );
    drop(upstream);
    // Once kept, a blob is a redirect to the bucket like any other; the upstream is not needed.
    let api = Api::new(&cache.url);
    let layer = &image.layer_digests[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = api
            .send(
                Method::GET,
                &format!("/v2/team/app/blobs/{layer}"),
                &[],
                None,
            )
            .await;
        if r.status() == 307 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(), 307);
    let url = header(&r, "location").unwrap();
    let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert_eq!(integration::layout::sha256(&body), *layer);
}
