//! Retention rules end to end, on local disk and on S3 (moto): what each rule keeps, what a
//! dry run reports, what the collection removes, and pushes that race collections.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use integration::http::Api;
use integration::layout::write_image;
use integration::ruled_registry::RuledRegistry;
use integration::server::berth_command;
use integration::tools::skopeo_copy;
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn gc(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    let out = berth_command(config, &all);
    assert!(
        out.status.success(),
        "berth gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn removed(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = report["retention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["removed"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

async fn tags(api: &Api, repo: &str) -> Vec<String> {
    let r = api
        .client
        .get(api.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

async fn status(api: &Api, path: &str) -> u16 {
    api.client
        .get(api.url(path))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn digest_of(api: &Api, repo: &str, tag: &str) -> String {
    let r = api
        .client
        .head(api.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A signature-like artifact whose subject is `subject` (a referrer), pushed under `tag`.
async fn push_referrer(api: &Api, repo: &str, subject: &str, tag: &str) -> String {
    let empty = api.push_blob(repo, b"{}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
    }))
    .unwrap();
    let r = api.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201);
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

const RULES: &str = "retention:
  - name: ci builds
    repository: ci/*
    keep: {newest: 2, semver: 1, tags: [latest]}
  - name: hot only
    repository: hot/*
    keep: {pulledwithin: 5s}
";

async fn rules_keep_what_they_name(on_s3: bool) {
    let s = RuledRegistry::start(on_s3, RULES, 1);
    let api = Api::new(&s.berth().url);
    let work = tempfile::tempdir().unwrap();
    // Pushed in this order, a second apart (S3 keeps times to the second): the two newest
    // builds, the highest version and `latest` stay.
    let order = [
        "v1.2.0", "v1.10.0", "latest", "build-1", "build-2", "build-3", "build-4",
    ];
    for (i, tag) in order.iter().enumerate() {
        let src = work.path().join(tag);
        write_image(&src, tag, 300 + i as u64, &[32 << 10]);
        let out = skopeo_copy(
            &format!("oci:{}:{tag}", src.display()),
            &format!("docker://{}/ci/app:{tag}", s.berth().host),
            &[],
        );
        assert!(out.status.success(), "{out:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let build_2 = digest_of(&api, "ci/app", "build-2").await;
    let build_4 = digest_of(&api, "ci/app", "build-4").await;
    // A signature of build-2 (found through the referrers API only) and cosign-style
    // signature tags of build-2 and build-4: each follows what it signs.
    let sig_2 = push_referrer(&api, "ci/app", &build_2, "unsigned-tmp").await;
    let r = api
        .send(
            reqwest::Method::DELETE,
            "/v2/ci/app/manifests/unsigned-tmp",
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    let cosign = |d: &str| format!("sha256-{}.sig", d.trim_start_matches("sha256:"));
    push_referrer(&api, "ci/app", &build_2, &cosign(&build_2)).await;
    push_referrer(&api, "ci/app", &build_4, &cosign(&build_4)).await;
    let before = tags(&api, "ci/app").await;
    // Past the second of the last push: S3 keeps times to the second, and a tag pushed in
    // the collection's own second counts as pushed during it (kept).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let dry = gc(&s.config, &["--grace", "0s", "--dry-run"]);
    let going = removed(&dry);
    for expected in [
        "ci/app:build-1".to_owned(),
        "ci/app:build-2".to_owned(),
        "ci/app:v1.2.0".to_owned(),
        format!("ci/app:{}", cosign(&build_2)),
        format!("ci/app@{build_2}"),
        format!("ci/app@{sig_2}"),
    ] {
        assert!(going.contains(&expected), "{expected} not in {going:#?}");
    }
    for r in dry["retention"].as_array().unwrap() {
        assert_eq!(r["rule"], "ci builds", "{r}");
        if r["removed"] == "ci/app:build-1" {
            let why = r["why"].as_str().unwrap();
            assert!(
                why.contains("not among the newest 2") && why.contains("1 highest versions"),
                "{why}"
            );
        }
    }
    assert_eq!(
        tags(&api, "ci/app").await,
        before,
        "a dry run removes nothing"
    );

    let report = gc(&s.config, &["--grace", "0s"]);
    assert_eq!(
        removed(&report),
        going,
        "the run removes what the dry run said"
    );
    let mut expected = vec![
        "build-3".to_owned(),
        "build-4".to_owned(),
        "latest".to_owned(),
        "v1.10.0".to_owned(),
        cosign(&build_4),
    ];
    expected.sort();
    assert_eq!(tags(&api, "ci/app").await, expected);
    assert_eq!(
        status(&api, &format!("/v2/ci/app/manifests/{build_2}")).await,
        404
    );
    assert_eq!(
        status(&api, &format!("/v2/ci/app/manifests/{sig_2}")).await,
        404
    );
    assert!(
        report["swept"].as_array().unwrap().len() >= 6,
        "the removed images' blobs are swept by the same run: {report}"
    );
    // What stays is whole: pulled with a real client.
    for tag in ["build-3", "latest", "v1.10.0"] {
        let out = skopeo_copy(
            &format!("docker://{}/ci/app:{tag}", s.berth().host),
            &format!("oci:{}:{tag}", work.path().join("pulled").display()),
            &[],
        );
        assert!(out.status.success(), "{tag}: {out:?}");
    }

    // Pulled within 5 s keeps a tag; pushed 7 s ago and never pulled does not.
    for tag in ["cold", "warm"] {
        let m = api.image_manifest("hot/app", tag).await;
        assert_eq!(
            api.put_manifest("hot/app", tag, OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(status(&api, "/v2/hot/app/manifests/warm").await, 200);
    // The pull is noted off the request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = gc(&s.config, &["--grace", "0s"]);
    assert!(
        removed(&report).contains(&"hot/app:cold".to_owned()),
        "{report}"
    );
    assert_eq!(tags(&api, "hot/app").await, ["warm"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_rules_keep_what_they_name_on_local_disk() {
    rules_keep_what_they_name(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_rules_keep_what_they_name_on_s3() {
    rules_keep_what_they_name(true).await;
}

/// Tags pushed again and again (each time with new content) while collections keep the
/// newest three: a push that was answered 201 is always there right after, and at the end
/// the three last pushed are there, whole, and nothing else.
async fn pushes_race_retention(on_s3: bool) {
    let s = RuledRegistry::start(
        on_s3,
        "retention:\n  - name: newest three\n    repository: race/*\n    keep: {newest: 3}\n",
        1,
    );
    let api = Api::new(&s.berth().url);
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (stop, config) = (stop.clone(), s.config.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                // The grace window (one second) is shorter than a tag's turn, so tags
                // being pushed again are removed meanwhile.
                let out = berth_command(&config, &["gc", "--grace", "1s"]);
                let code = out.status.code().unwrap_or(-1);
                assert!(
                    code == 0 || code == 3,
                    "gc failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += usize::from(code == 0);
            }
            runs
        })
    };
    let names = 12;
    let rounds = if on_s3 { 36 } else { 60 };
    let mut last: Vec<(String, String)> = Vec::new();
    for i in 0..rounds {
        let tag = format!("t{}", i % names);
        let m = api.image_manifest("race/app", &format!("{i}")).await;
        let r = api.put_manifest("race/app", &tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201, "push {i}: {:?}", r.text().await);
        let d = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            digest_of(&api, "race/app", &tag).await,
            d,
            "push {i} of {tag} was answered 201, then the tag was gone or moved"
        );
        last.push((tag, d));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let runs = collector.join().unwrap();
    assert!(runs >= 2, "only {runs} collections ran during the pushes");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gc(&s.config, &["--grace", "1s"]);
    // Three stay, the last pushed among them (S3 keeps push times to the second, so which
    // of the pushes within the last second are the newest is a tie broken by name).
    let kept = tags(&api, "race/app").await;
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept.contains(&last[last.len() - 1].0), "{kept:?}");
    let newest: Vec<(String, String)> = kept
        .iter()
        .map(|t| {
            let d = last
                .iter()
                .rev()
                .find(|(tag, _)| tag == t)
                .unwrap()
                .1
                .clone();
            (t.clone(), d)
        })
        .collect();
    for (tag, d) in &newest {
        assert_eq!(&digest_of(&api, "race/app", tag).await, d);
        let body: Value = api
            .client
            .get(api.url(&format!("/v2/race/app/manifests/{d}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for blob in [&body["config"]["digest"], &body["layers"][0]["digest"]] {
            let blob = blob.as_str().unwrap();
            // 307: a redirect to the bytes in the bucket.
            let got = status(&api, &format!("/v2/race/app/blobs/{blob}")).await;
            assert!(got == 200 || got == 307, "{tag}: blob {blob}: {got}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_retention_lose_nothing_on_local_disk() {
    pushes_race_retention(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_retention_lose_nothing_on_s3() {
    pushes_race_retention(true).await;
}

/// The server's own schedule applies retention (no `berth gc` run by hand) and exports the
/// usage of the biggest repositories as gauges; `berth usage` says when it was last pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_collection_applies_retention_and_exports_usage_gauges() {
    let s = RuledRegistry::start_with(
        false,
        "retention:\n  - repository: sched/*\n    keep: {newest: 1}\n",
        1,
        "  gc:\n    enabled: true\n    interval: 1s\n    grace: 0s\n  usage:\n    pullflush: 1s\n",
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let api = Api::new(&s.berth().url);
    for tag in ["old", "new"] {
        let m = api.image_manifest("sched/app", tag).await;
        assert_eq!(
            api.put_manifest("sched/app", tag, OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tags(&api, "sched/app").await != ["new"] {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run: {:?}",
            tags(&api, "sched/app").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = api.metrics().await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("berth_repository_bytes{repository=\"sched/app\"}"));
        if let Some(line) = line {
            let bytes: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(bytes > 0, "{line}");
            assert!(metrics.contains("berth_repository_tags{repository=\"sched/app\"} 1"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no usage gauges: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(status(&api, "/v2/sched/app/manifests/new").await, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = berth_command(&s.config, &["usage"]);
    assert!(out.status.success(), "{out:?}");
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = &usage["repositories"][0];
    assert_eq!(app["name"], "sched/app", "{usage}");
    let last_pull = app["last_pull"].as_u64().unwrap_or(0);
    assert!(last_pull >= started, "{usage}");
}
