//! Garbage collection end to end: `berth gc` reclaims space after a tag is deleted, and pushes
//! made while collections run lose nothing.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use integration::Berth;
use integration::layout::write_image;
use integration::server::berth_binary;
use integration::tools::{skopeo_copy, tree};

fn config_file(dir: &Path, root: &Path) -> std::path::PathBuf {
    let cfg = dir.join("gc-config.yml");
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            root.display()
        ),
    )
    .unwrap();
    cfg
}

fn gc(cfg: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(berth_binary())
        .arg("gc")
        .arg(cfg)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn blob_bytes(root: &Path) -> u64 {
    let blobs = root.join("docker/registry/v2/blobs");
    if !blobs.exists() {
        return 0;
    }
    tree(&blobs).values().map(|v| v.len() as u64).sum()
}

#[tokio::test]
async fn gc_reclaims_space_after_a_tag_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = config_file(dir.path(), &root);
    let berth = Berth::filesystem(&root);
    let work = tempfile::tempdir().unwrap();
    for (tag, seed) in [("keep", 1u64), ("drop", 2)] {
        let src = work.path().join(tag);
        write_image(&src, tag, 100 + seed, &[3 << 20]);
        skopeo_copy(
            &format!("oci:{}:{tag}", src.display()),
            &format!("docker://{}/gc/app:{tag}", berth.host),
            &["--preserve-digests"],
        );
    }
    let before = blob_bytes(&root);
    let r = reqwest::Client::new()
        .delete(format!("{}/v2/gc/app/manifests/drop", berth.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (code, out) = gc(&cfg, &["--grace", "0s", "--dry-run", "--delete-untagged"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(blob_bytes(&root), before, "a dry run removes nothing");
    let (code, out) = gc(&cfg, &["--grace", "0s", "--delete-untagged"]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["swept"].as_array().unwrap().len(),
        3,
        "layer, config and manifest of the dropped image: {report}"
    );
    let after = blob_bytes(&root);
    assert!(
        before - after > 3 << 20,
        "space was not reclaimed: {before} -> {after}"
    );
    let pulled = work.path().join("pulled");
    skopeo_copy(
        &format!("docker://{}/gc/app:keep", berth.host),
        &format!("oci:{}:keep", pulled.display()),
        &[],
    );
    assert_eq!(
        tree(&work.path().join("keep/blobs")),
        tree(&pulled.join("blobs")),
        "the kept image is intact"
    );
}

#[test]
fn pushes_during_collections_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = config_file(dir.path(), &root);
    let berth = Berth::filesystem(&root);
    let work = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (stop, cfg) = (stop.clone(), cfg.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                // A grace window longer than one push, as in production (2h there).
                let (code, out) = gc(&cfg, &["--grace", "3s", "--delete-untagged"]);
                assert!(code == 0 || code == 3, "gc failed: {out}");
                runs += usize::from(code == 0);
            }
            runs
        })
    };
    let mut pushed = Vec::new();
    for i in 0..8u64 {
        let src = work.path().join(format!("img{i}"));
        write_image(&src, "v1", 200 + i, &[1 << 20, 256 << 10]);
        let remote = format!("docker://{}/race/app{i}:v1", berth.host);
        skopeo_copy(
            &format!("oci:{}:v1", src.display()),
            &remote,
            &["--preserve-digests"],
        );
        pushed.push((src, remote));
    }
    stop.store(true, Ordering::Relaxed);
    let runs = collector.join().unwrap();
    assert!(
        runs >= 2,
        "collections did not run alongside the pushes ({runs})"
    );
    let (code, _) = gc(&cfg, &["--grace", "3s", "--delete-untagged"]);
    assert_eq!(code, 0);
    for (src, remote) in pushed {
        let out = work.path().join(format!("out-{}", remote.len()));
        let _ = std::fs::remove_dir_all(&out);
        skopeo_copy(&remote, &format!("oci:{}:v1", out.display()), &[]);
        assert_eq!(
            tree(&src.join("blobs")),
            tree(&out.join("blobs")),
            "{remote} lost data"
        );
    }
}

/// The swept digests of a `berth gc` report, sorted, and its mode.
fn swept(out: &str) -> (Vec<String>, String) {
    let report: serde_json::Value = serde_json::from_str(out).unwrap();
    let swept = integration::server::swept_digests(&report);
    (swept, report["mode"].as_str().unwrap().to_owned())
}

/// On S3 (moto), with pushes and deletes through two replicas: the first incremental run is a
/// verifying full one; after more changes, an incremental dry run and a full one name the same
/// blobs, the incremental run removes them, and a full run finds nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_collections_on_s3_agree_with_full_ones() {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    let moto = integration::emulators::Moto::start();
    moto.create_bucket("inc");
    let yaml = format!(
        "storage:\n  {}  delete:\n    enabled: true\n",
        moto.storage_yaml("inc")
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let (a, b) = (
        Berth::with_config(&yaml, &[]),
        Berth::with_config(&yaml, &[]),
    );
    let (api_a, api_b) = (
        integration::http::Api::new(&a.url),
        integration::http::Api::new(&b.url),
    );
    let push = |api: integration::http::Api, repo: &'static str, seed: String| async move {
        let m = api.image_manifest(repo, &seed).await;
        let r = api.put_manifest(repo, &seed, OCI, &m).await;
        assert_eq!(r.status(), 201);
        integration::http::header(&r, "docker-content-digest").unwrap()
    };
    for i in 0..3 {
        push(api_a.clone(), "inc/one", format!("before-{i}")).await;
    }
    let (code, out) = gc(&cfg, &["--incremental", "--grace", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(swept(&out).1.starts_with("full"), "{out}");

    let mut doomed = Vec::new();
    for i in 0..4 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let d = push(api.clone(), "inc/two", format!("after-{i}")).await;
        if i < 2 {
            doomed.push(d);
        }
    }
    for d in &doomed {
        let r = api_b.delete_manifest("inc/two", d).await;
        assert_eq!(r.status(), 202);
    }
    api_a
        .push_blob("inc/one", b"an upload nothing refers to")
        .await;
    // S3 keeps times to the second: past the second of the last change.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (code, inc) = gc(&cfg, &["--incremental", "--dry-run", "--grace", "0s"]);
    assert_eq!(code, 0, "{inc}");
    let (code, full) = gc(&cfg, &["--dry-run", "--grace", "0s"]);
    assert_eq!(code, 0, "{full}");
    let (inc, mode) = swept(&inc);
    assert_eq!(mode, "incremental");
    assert_eq!(inc, swept(&full).0, "incremental and full runs agree");
    assert_eq!(
        inc.len(),
        7,
        "two images of three blobs each, and the orphan: {inc:?}"
    );
    let (code, out) = gc(&cfg, &["--incremental", "--grace", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(swept(&out).0, inc);
    let (code, out) = gc(&cfg, &["--dry-run", "--grace", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        swept(&out).0.is_empty(),
        "a full run finds nothing more: {out}"
    );
    // What stays is whole: every image of both repositories still pulls.
    for (repo, tag) in [("inc/one", "before-0"), ("inc/two", "after-3")] {
        let r = api_a
            .send(
                reqwest::Method::GET,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("accept", OCI)],
                None,
            )
            .await;
        assert_eq!(r.status(), 200, "{repo}:{tag}");
    }
}
