//! What Berth does with a store that does not keep a guarantee it leans on, found by its
//! startup probe: conditional writes ignored (moto behind a proxy that drops `If-Match` and
//! `If-None-Match`, as Garage, older MinIO and Ceph RGW take and ignore them) stop it unless
//! single-writer mode is accepted; presigned URLs the store refuses turn redirects off.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::Berth;
use integration::emulators::Moto;
use integration::fault_proxy::{FaultProxy, Faults};
use integration::http::{Api, header};
use integration::layout::{random_bytes, sha256};
use reqwest::Method;

/// A configuration on `bucket` of `moto` reached through `proxy`, with `berth` keys.
fn config(moto: &Moto, proxy: &FaultProxy, bucket: &str, berth: &str) -> String {
    let storage = moto
        .storage_yaml(bucket)
        .replace(&moto.endpoint, &proxy.endpoint);
    format!("version: 0.1\nstorage:\n  {storage}  delete:\n    enabled: true\n{berth}")
}

const SINGLE_WRITER: &str = "berth:\n  storage:\n    singlewriter: true\n";

fn ignoring_store(bucket: &str) -> (Moto, FaultProxy) {
    let moto = Moto::start();
    moto.create_bucket(bucket);
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Faults {
            ignore_conditions: true,
            ..Faults::default()
        },
    );
    (moto, proxy)
}

/// Runs `berth ARGS` with `yaml` as its configuration until it exits (at most a minute);
/// its exit status and stderr.
fn run_to_exit(yaml: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut child = Command::new(integration::server::berth_binary())
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("berth {args:?} did not exit within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn text(api: &Api, path: &str) -> (u16, String) {
    let r = api.send(Method::GET, path, &[], None).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_store_ignoring_conditional_writes_stops_berth_unless_single_writer_is_accepted() {
    let (moto, proxy) = ignoring_store("ignoring");
    let (status, err) = run_to_exit(&config(&moto, &proxy, "ignoring", ""), &["serve"]);
    assert!(!status.success(), "berth started: {err}");
    for said in [
        "ignores conditional writes",
        "create-only put ignored",
        "replace-if-unchanged put ignored",
        "berth.storage.singlewriter",
    ] {
        assert!(err.contains(said), "{said:?} not in: {err}");
    }
    // No scratch object of the probe is left behind.
    let listing = reqwest::get(format!("{}/ignoring?prefix=registry/", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listing.contains("berth/probe/"), "{listing}");

    let berth = Berth::with_config(&config(&moto, &proxy, "ignoring", SINGLE_WRITER), &[]);
    let api = Api::new(&berth.url);
    assert_eq!(
        text(&api, "/readyz").await,
        (200, "ready (store: single-writer)".into())
    );
    let metrics = text(&api, "/metrics").await.1;
    for line in [
        "berth_store_mode{mode=\"single-writer\"} 1",
        "berth_store_mode{mode=\"multi-writer\"} 0",
        "berth_store_guarantee{guarantee=\"conditional_create\"} 0",
        "berth_store_guarantee{guarantee=\"conditional_replace\"} 0",
        "berth_store_guarantee{guarantee=\"presigned_get\"} 1",
        "berth_store_other_writer 0",
    ] {
        assert!(metrics.contains(line), "{line} not in the metrics");
    }
    // The issue's race: PATCHes at one offset of one upload, at once. The store would take
    // every state write; the process decides, and exactly one wins.
    let r = api
        .send(Method::POST, "/v2/team/race/blobs/uploads/", &[], None)
        .await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").unwrap();
    let chunk = bytes::Bytes::from(random_bytes(3, 3 << 20));
    let patches: Vec<_> = (0..4)
        .map(|_| {
            let (api, location, chunk) = (api.clone(), location.clone(), chunk.clone());
            tokio::spawn(async move {
                let r = api
                    .send(
                        Method::PATCH,
                        &location,
                        &[
                            ("content-range", &format!("0-{}", chunk.len() - 1)),
                            ("content-type", "application/octet-stream"),
                        ],
                        Some(chunk.to_vec()),
                    )
                    .await;
                (r.status().as_u16(), header(&r, "location"))
            })
        })
        .collect();
    let mut won = Vec::new();
    for p in patches {
        let (status, next) = p.await.unwrap();
        assert!(
            [202, 409, 416].contains(&status),
            "a racing PATCH got {status}"
        );
        if status == 202 {
            won.push(next.unwrap());
        }
    }
    assert_eq!(
        won.len(),
        1,
        "racing PATCHes at one offset that won: {won:?}"
    );
    let digest = sha256(&chunk);
    let r = api
        .send(Method::PUT, &Api::digest_url(&won[0], &digest), &[], None)
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = api
        .send(
            Method::GET,
            &format!("/v2/team/race/blobs/{digest}"),
            &[],
            None,
        )
        .await;
    let url = header(&r, "location").expect("a redirect");
    let pulled = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert!(pulled == chunk, "the blob differs from the one chunk sent");
}

#[tokio::test]
async fn a_single_writer_keeps_a_second_one_out_and_reports_one_it_finds() {
    let (moto, proxy) = ignoring_store("single");
    let yaml = config(&moto, &proxy, "single", SINGLE_WRITER);
    let mut first = Berth::with_config(&yaml, &[]);
    // A second server waits for the first's heartbeat to stop moving, and it does not; so
    // does a command that writes (both at once, to wait once).
    let started = Instant::now();
    let server = {
        let yaml = yaml.clone();
        std::thread::spawn(move || run_to_exit(&yaml, &["serve"]))
    };
    let (status, err) = run_to_exit(&yaml, &["gc", "--dry-run"]);
    assert!(
        !status.success(),
        "berth gc ran beside a single writer: {err}"
    );
    assert!(err.contains("another Berth"), "{err}");
    let (status, err) = server.join().unwrap();
    assert!(!status.success(), "a second single writer started: {err}");
    assert!(err.contains("another Berth"), "{err}");
    eprintln!("second writers refused after {:?}", started.elapsed());
    // A clean stop hands over at once.
    first.stop();
    let started = Instant::now();
    let second = Berth::with_config(&yaml, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the next writer waited {:?} after a clean stop",
        started.elapsed()
    );
    // A writer that appears anyway (started at the same moment, or misconfigured) is found
    // by the heartbeat: the first server stops being ready and says why.
    let store = moto.driver("single");
    let api = Api::new(&second.url);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        use registry_core::StorageDriver;
        store
            .put_bytes(
                &registry_core::layout::single_writer_heartbeat(),
                bytes::Bytes::from_static(br#"{"instance":"intruder","beat":1,"stopped":false}"#),
                registry_core::storage::PutCondition::Overwrite,
            )
            .await
            .unwrap();
        let (status, body) = text(&api, "/readyz").await;
        if status == 503 {
            assert!(body.contains("another Berth"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "another writer never noticed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = text(&api, "/metrics").await.1;
    assert!(metrics.contains("berth_store_other_writer 1"), "{metrics}");
    assert!(second.log().contains("another Berth writes this store"));
}

#[tokio::test]
async fn a_store_keeping_every_guarantee_runs_multi_writer() {
    let moto = Moto::start();
    moto.create_bucket("keeping");
    let proxy = FaultProxy::start(&moto.endpoint, Faults::default());
    let berth = Berth::with_config(&config(&moto, &proxy, "keeping", ""), &[]);
    let api = Api::new(&berth.url);
    assert_eq!(
        text(&api, "/readyz").await,
        (200, "ready (store: multi-writer)".into())
    );
    let metrics = text(&api, "/metrics").await.1;
    for line in [
        "berth_store_mode{mode=\"multi-writer\"} 1",
        "berth_store_guarantee{guarantee=\"conditional_create\"} 1",
        "berth_store_guarantee{guarantee=\"conditional_replace\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in the metrics");
    }
    // Local disk keeps them too (and presigns nothing).
    let dir = tempfile::tempdir().unwrap();
    let local = Berth::filesystem(dir.path());
    let api = Api::new(&local.url);
    assert_eq!(
        text(&api, "/readyz").await,
        (200, "ready (store: multi-writer)".into())
    );
}

#[tokio::test]
async fn a_store_refusing_its_presigned_urls_gets_blobs_served_through_berth() {
    let moto = Moto::start();
    moto.create_bucket("unsigned");
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Faults {
            refuse_presigned: true,
            ..Faults::default()
        },
    );
    let berth = Berth::with_config(&config(&moto, &proxy, "unsigned", ""), &[]);
    let api = Api::new(&berth.url);
    let data = random_bytes(5, 1 << 20);
    let digest = api.push_blob("team/app", &data).await;
    let r = api
        .send(
            Method::GET,
            &format!("/v2/team/app/blobs/{digest}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "a redirect to a URL the store refuses");
    assert!(r.bytes().await.unwrap().to_vec() == data);
    assert!(
        berth.log().contains("refused a URL it presigned"),
        "{}",
        berth.log()
    );
    let metrics = text(&api, "/metrics").await.1;
    assert!(metrics.contains("berth_store_guarantee{guarantee=\"presigned_get\"} 0"));
}

/// What the probe and single-writer mode cost, in store requests (BENCHMARKS.md): a start, a
/// skopeo push of a three-layer image, and its pull, on moto keeping conditional writes and on
/// moto ignoring them (in single-writer mode), each through a counting proxy.
#[test]
fn what_the_probe_and_single_writer_mode_cost_in_store_requests() {
    use integration::layout::write_image;
    use integration::tools::{skopeo_attempt, tree};
    let quiet = "  maintenance:\n    uploadpurging:\n      enabled: false\n";
    let moto = Moto::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 91, &[30 << 20, 5 << 20, 10 << 10]);
    let mut costs = Vec::new();
    for (bucket, faults, berth_yaml) in [
        ("keeping", Faults::default(), ""),
        (
            "ignoring",
            Faults {
                ignore_conditions: true,
                ..Faults::default()
            },
            SINGLE_WRITER,
        ),
    ] {
        moto.create_bucket(bucket);
        let proxy = FaultProxy::start(&moto.endpoint, faults);
        let yaml = config(&moto, &proxy, bucket, berth_yaml).replace(
            "  delete:\n    enabled: true\n",
            &format!("  delete:\n    enabled: true\n{quiet}"),
        );
        let berth = Berth::with_config(&yaml, &[]);
        let started = proxy.store_requests();
        let remote = format!("docker://{}/team/app:v1", berth.host);
        let (ok, err) = skopeo_attempt(&format!("oci:{}:v1", src.display()), &remote);
        assert!(ok, "{err}");
        let pushed = proxy.store_requests();
        let dst = work.path().join(bucket);
        let (ok, err) = skopeo_attempt(&remote, &format!("oci:{}:v1", dst.display()));
        assert!(ok, "{err}");
        assert_eq!(tree(&src.join("blobs")), tree(&dst.join("blobs")));
        let pulled = proxy.store_requests();
        costs.push((started, pushed - started, pulled - pushed));
    }
    let [
        (start, push, pull),
        (single_start, single_push, single_pull),
    ] = costs[..]
    else {
        unreachable!()
    };
    eprintln!(
        "store requests: start {start} (single-writer {single_start}), push {push} ({single_push}), pull {pull} ({single_pull})"
    );
    // The probe is a handful of requests; single-writer mode adds a stat before each
    // conditional put of the push (its upload states, index shards), and nothing to a pull.
    assert!(start <= 12, "start: {start}");
    assert!(
        single_start <= start + 8,
        "single-writer start: {single_start}"
    );
    assert!(
        single_push <= push + push / 2,
        "single-writer push: {single_push} vs {push}"
    );
    assert!(
        single_pull <= pull + 1,
        "single-writer pull: {single_pull} vs {pull}"
    );
}
