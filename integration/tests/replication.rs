//! Push mirroring: a Berth sends what is pushed, moved and deleted to CNCF distribution 2.8 and
//! to a second Berth, across the downstreams' restarts and its own; `berth replicate --once`
//! finds and repairs what differs. Every check compares bytes: each tag's manifest and every
//! blob it reaches, as the downstream serves them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use integration::Berth;
use integration::distribution::Distribution;
use integration::http::Api;
use integration::server::free_port;
use reqwest::Method;
use serde_json::{Value, json};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn filesystem_yaml(root: &Path) -> String {
    format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        root.display()
    )
}

/// A Berth on `root` sending to `downstreams` (YAML list items, indented for the key).
fn source(root: &Path, downstreams: &str) -> Berth {
    Berth::with_config(
        &format!(
            "{}berth:\n  replication:\n    poll: 1s\n    leasettl: 3s\n    downstreams:\n{downstreams}",
            filesystem_yaml(root)
        ),
        &[],
    )
}

fn downstream_item(name: &str, host: &str, repositories: &[&str]) -> String {
    let mut s = format!("      - name: {name}\n        remoteurl: http://{host}\n");
    if !repositories.is_empty() {
        s.push_str("        repositories:\n");
        for r in repositories {
            s.push_str(&format!("          - \"{r}\"\n"));
        }
    }
    s
}

/// A Berth on local disk at `host` (again where a stopped one was).
fn berth_at(root: &Path, host: &str) -> Berth {
    Berth::with_config(&filesystem_yaml(root), &[("REGISTRY_HTTP_ADDR", host)])
}

fn distribution_at(root: &Path, host: &str) -> Distribution {
    Distribution::start_at(
        host,
        &format!(
            "filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true",
            root.display()
        ),
    )
}

/// Pushes an image of `seed` to `repo:tag`; its digest.
async fn push_image(api: &Api, repo: &str, tag: &str, seed: &str) -> String {
    let body = api.image_manifest(repo, seed).await;
    let r = api.put_manifest(repo, tag, OCI, &body).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    integration::http::header(&r, "docker-content-digest").unwrap()
}

/// Pushes two images by digest and an index of them at `repo:tag`.
async fn push_index(api: &Api, repo: &str, tag: &str) -> String {
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let body = api.image_manifest(repo, &format!("{tag}-{arch}")).await;
        let d = format!("sha256:{}", sha256_hex(&body));
        let r = api.put_manifest(repo, &d, OCI, &body).await;
        assert_eq!(r.status(), 201);
        children.push(json!({
            "mediaType": OCI, "digest": d, "size": body.len(),
            "platform": {"os": "linux", "architecture": arch, "variant": i.to_string()},
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": INDEX, "manifests": children,
    }))
    .unwrap();
    let r = api.put_manifest(repo, tag, INDEX, &index).await;
    assert_eq!(r.status(), 201);
    integration::http::header(&r, "docker-content-digest").unwrap()
}

/// Pushes an artifact that refers to `subject` (by digest, no tag); its digest.
async fn push_referrer(api: &Api, repo: &str, subject: &str, subject_size: usize) -> String {
    let empty = api.push_blob(repo, b"{}").await;
    let sbom = api.push_blob(repo, b"{\"sbom\":true}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.sbom.v1+json", "digest": sbom, "size": 13}],
        "subject": {"mediaType": OCI, "digest": subject, "size": subject_size},
    }))
    .unwrap();
    let d = format!("sha256:{}", sha256_hex(&body));
    let r = api.put_manifest(repo, &d, OCI, &body).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    d
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

async fn get(base: &str, path: &str) -> Option<(Vec<u8>, String)> {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("accept", ACCEPT)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let ct = integration::http::header(&r, "content-type").unwrap_or_default();
    Some((r.bytes().await.ok()?.to_vec(), ct))
}

/// Tags of `repo` at `base` (none when it has no such repository or is down).
async fn tags(base: &str, repo: &str) -> Vec<String> {
    let Some((body, _)) = get(base, &format!("/v2/{repo}/tags/list")).await else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

/// Every tag of `repos` at `base`: its manifest's bytes.
async fn snapshot(base: &str, repos: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for repo in repos {
        for t in tags(base, repo).await {
            if let Some((body, _)) = get(base, &format!("/v2/{repo}/manifests/{t}")).await {
                out.insert(format!("{repo}:{t}"), body);
            }
        }
    }
    out
}

/// Waits until `downstream` serves every tag of `repos` as `source` does; the difference
/// left when it does not within `limit`.
async fn converge(source: &str, downstream: &str, repos: &[&str], limit: Duration) {
    converge_but(source, downstream, repos, &[], limit).await
}

/// As [`converge`], but `except` (`repo:tag`) is not compared.
async fn converge_but(
    source: &str,
    downstream: &str,
    repos: &[&str],
    except: &[&str],
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let mut want = snapshot(source, repos).await;
        let mut got = snapshot(downstream, repos).await;
        for e in except {
            want.remove(*e);
            got.remove(*e);
        }
        if want == got {
            return;
        }
        if start.elapsed() > limit {
            let differ: Vec<&String> = want
                .keys()
                .chain(got.keys())
                .filter(|k| want.get(*k) != got.get(*k))
                .collect();
            panic!("{downstream} differs from {source} after {limit:?}: {differ:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every blob and child manifest the tags of `repos` reach at `source` is at `downstream`
/// with the same bytes; referrers of `subjects` too.
async fn same_bytes(source: &str, downstream: &str, repos: &[&str]) {
    for repo in repos {
        for t in tags(source, repo).await {
            let (body, _) = get(source, &format!("/v2/{repo}/manifests/{t}"))
                .await
                .unwrap();
            same_content(source, downstream, repo, &body).await;
        }
    }
}

async fn same_content(source: &str, downstream: &str, repo: &str, manifest: &[u8]) {
    same_content_as(source, repo, downstream, repo, manifest).await
}

/// Every child manifest and blob `manifest` (of `repo` at `a`) names is at `b` in `b_repo`
/// with the same bytes.
async fn same_content_as(a: &str, repo: &str, b: &str, b_repo: &str, manifest: &[u8]) {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    for child in m["manifests"].as_array().into_iter().flatten() {
        let d = child["digest"].as_str().unwrap();
        let here = get(a, &format!("/v2/{repo}/manifests/{d}"))
            .await
            .unwrap()
            .0;
        assert_eq!(
            get(b, &format!("/v2/{b_repo}/manifests/{d}"))
                .await
                .map(|x| x.0),
            Some(here.clone()),
            "{repo}@{d}"
        );
        Box::pin(same_content_as(a, repo, b, b_repo, &here)).await;
    }
    let blobs = m["config"].get("digest").into_iter().chain(
        m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| &l["digest"]),
    );
    for d in blobs {
        let d = d.as_str().unwrap();
        assert_eq!(
            get(b, &format!("/v2/{b_repo}/blobs/{d}"))
                .await
                .map(|x| x.0),
            get(a, &format!("/v2/{repo}/blobs/{d}")).await.map(|x| x.0),
            "{repo} blob {d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_moves_and_deletes_reach_distribution_and_a_second_berth_across_their_restarts() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (dist_host, mirror_host) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let dist = distribution_at(dirs[0].path(), &dist_host);
    let mut mirror = berth_at(dirs[1].path(), &mirror_host);
    let source = source(
        dirs[2].path(),
        &format!(
            "{}{}",
            downstream_item("dist", &dist_host, &["team/*"]),
            downstream_item("mirror", &mirror_host, &[])
        ),
    );
    let api = Api::new(&source.url);
    let (dist_url, mirror_url) = (
        format!("http://{dist_host}"),
        format!("http://{mirror_host}"),
    );
    let team = ["team/app", "team/multi"];
    let all = ["team/app", "team/multi", "other/thing"];

    // While both run: a push reaches both within seconds.
    let v1 = push_image(&api, "team/app", "v1", "one").await;
    push_image(&api, "team/app", "doomed", "doomed").await;
    converge(&source.url, &dist_url, &team, Duration::from_secs(30)).await;
    converge(&source.url, &mirror_url, &all, Duration::from_secs(30)).await;

    // Both stop; a burst of pushes, a tag move, an index, a referrer, a delete and a
    // repository only one of them wants.
    drop(dist);
    mirror.kill();
    for i in 0..6 {
        push_image(&api, "team/app", &format!("b{i}"), &format!("burst {i}")).await;
    }
    let v1_size = get(&source.url, &format!("/v2/team/app/manifests/{v1}"))
        .await
        .unwrap()
        .0
        .len();
    let referrer = push_referrer(&api, "team/app", &v1, v1_size).await;
    push_image(&api, "team/app", "v1", "two").await;
    push_index(&api, "team/multi", "latest").await;
    push_image(&api, "other/thing", "x", "other").await;
    for tag in ["b0", "doomed"] {
        let r = api
            .send(
                Method::DELETE,
                &format!("/v2/team/app/manifests/{tag}"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures = api.metric_total("berth_replication_failures_total").await;
    assert!(failures > 0, "attempts at stopped downstreams fail");

    // Back on their ports, with their data, while the burst goes on: they catch up, in order.
    let dist = distribution_at(dirs[0].path(), &dist_host);
    let _mirror = berth_at(dirs[1].path(), &mirror_host);
    for i in 6..12 {
        push_image(&api, "team/app", &format!("b{i}"), &format!("burst {i}")).await;
    }
    converge(&source.url, &mirror_url, &all, Duration::from_secs(90)).await;
    same_bytes(&source.url, &mirror_url, &all).await;
    // distribution 2.8 cannot delete a tag: `doomed` stays there, and that event is set
    // aside with the reason while the ones behind it go on (b0 never got there: nothing to do).
    converge_but(
        &source.url,
        &dist_url,
        &team,
        &["team/app:doomed"],
        Duration::from_secs(60),
    )
    .await;
    same_bytes(&source.url, &dist_url, &team).await;
    assert!(
        tags(&dist_url, "team/app")
            .await
            .contains(&"doomed".to_owned())
    );
    assert!(
        !tags(&mirror_url, "team/app")
            .await
            .contains(&"doomed".to_owned())
    );
    let failed = dirs[2]
        .path()
        .join("docker/registry/v2/berth/replication/dist/failed");
    let dead: Vec<String> = std::fs::read_dir(&failed)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("cannot delete tags"), "{dead:?}");
    assert!(
        tags(&dist_url, "other/thing").await.is_empty(),
        "not wanted there"
    );
    assert!(
        !tags(&mirror_url, "team/app")
            .await
            .contains(&"b0".to_owned())
    );
    // The referrer went too (a Berth downstream lists it).
    let (listed, _) = get(&mirror_url, &format!("/v2/team/app/referrers/{v1}"))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed).contains(&referrer),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    let text = api.metrics().await;
    for (name, dead) in [("dist", 1), ("mirror", 0)] {
        for line in [
            format!("berth_replication_queue_depth{{downstream=\"{name}\"}} 0"),
            format!("berth_replication_dead_letters_total{{downstream=\"{name}\"}} {dead}"),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
    drop(dist);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_no_event_another_replica_sends_them() {
    let (store, mirror_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mirror_host = format!("127.0.0.1:{}", free_port());
    let item = downstream_item("mirror", &mirror_host, &[]);
    let mut first = source(store.path(), &item);
    let api = Api::new(&first.url);
    // The downstream is not up yet: the events wait in the store.
    for i in 0..5 {
        push_image(&api, "team/app", &format!("t{i}"), &format!("queued {i}")).await;
    }
    first.kill();
    let mirror = berth_at(mirror_dir.path(), &mirror_host);
    let second = source(store.path(), &item);
    converge(
        &second.url,
        &mirror.url,
        &["team/app"],
        Duration::from_secs(60),
    )
    .await;
    same_bytes(&second.url, &mirror.url, &["team/app"]).await;
    assert_eq!(tags(&mirror.url, "team/app").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_once_reports_what_differs_and_repairs_it() {
    let (store, mirror_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Content pushed before any downstream was configured.
    let plain = Berth::with_config(&filesystem_yaml(store.path()), &[]);
    let api = Api::new(&plain.url);
    push_image(&api, "team/app", "v1", "one").await;
    push_image(&api, "team/app", "v2", "two").await;
    push_index(&api, "team/multi", "latest").await;
    drop(plain);
    let mirror = Berth::filesystem(mirror_dir.path());
    let mirror_api = Api::new(&mirror.url);
    // The mirror has one tag of its own, and v2 naming something else.
    push_image(&mirror_api, "team/app", "v2", "stale").await;
    push_image(&mirror_api, "team/app", "only-there", "mine").await;

    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "{}berth:\n  replication:\n    downstreams:\n{}",
            filesystem_yaml(store.path()),
            downstream_item("mirror", &mirror.host, &[])
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["replicate", "--once"];
        args.extend_from_slice(extra);
        let out = integration::server::berth_command(&cfg, &args);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "not JSON: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), report["downstreams"][0].clone())
    };
    let (code, dry) = run(&["--dry-run"]);
    assert_eq!(code, Some(0), "{dry}");
    assert_eq!(dry["missing"], json!(["team/app:v1", "team/multi:latest"]));
    assert_eq!(dry["differing"], json!(["team/app:v2"]));
    assert_eq!(dry["only_downstream"], json!(["team/app:only-there"]));
    assert_eq!(dry["manifests_sent"], json!(0));
    assert!(
        tags(&mirror.url, "team/multi").await.is_empty(),
        "a dry run sends nothing"
    );

    let (code, done) = run(&[]);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["missing"].as_array().unwrap().len(), 2);
    assert!(done["blobs_sent"].as_u64().unwrap() >= 6, "{done}");
    let (_, again) = run(&[]);
    assert_eq!(again["in_sync"], json!(3), "{again}");
    assert_eq!(again["manifests_sent"], json!(0), "{again}");

    let server = Berth::with_config(&filesystem_yaml(store.path()), &[]);
    for repo in ["team/app", "team/multi"] {
        for t in tags(&server.url, repo).await {
            assert_eq!(
                get(&mirror.url, &format!("/v2/{repo}/manifests/{t}"))
                    .await
                    .map(|x| x.0),
                get(&server.url, &format!("/v2/{repo}/manifests/{t}"))
                    .await
                    .map(|x| x.0),
                "{repo}:{t}"
            );
        }
    }
    same_bytes(&server.url, &mirror.url, &["team/app", "team/multi"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_sync_copies_the_chosen_tags_in_and_follows_them() {
    let (up_dir, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = Distribution::filesystem(up_dir.path());
    let up_url = format!("http://{}", upstream.host);
    let up = Api::new(&up_url);
    push_image(&up, "library/alpine", "3.18", "a318").await;
    push_image(&up, "library/alpine", "3.19", "a319").await;
    push_index(&up, "library/alpine", "latest").await;
    push_image(&up, "library/alpine", "edge", "edge").await;
    push_image(&up, "library/other", "1", "other").await;
    let sync = |interval: &str| {
        format!(
            "{}berth:\n  replication:\n    sync:\n      - name: base\n        remoteurl: {up_url}\n{interval}        repositories:\n          - from: library/alpine\n            to: mirror/alpine\n            tags: [\"3.*\", latest]\n",
            filesystem_yaml(store.path())
        )
    };
    let source = Berth::with_config(&sync("        interval: 1s\n"), &[]);
    let wanted = ["3.18", "3.19", "latest"];
    let start = Instant::now();
    while tags(&source.url, "mirror/alpine").await != wanted {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            tags(&source.url, "mirror/alpine").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in wanted {
        let (theirs, _) = get(&up_url, &format!("/v2/library/alpine/manifests/{t}"))
            .await
            .unwrap();
        let (ours, _) = get(&source.url, &format!("/v2/mirror/alpine/manifests/{t}"))
            .await
            .unwrap();
        assert_eq!(ours, theirs, "{t}");
        same_content_as(
            &up_url,
            "library/alpine",
            &source.url,
            "mirror/alpine",
            &theirs,
        )
        .await;
    }
    assert!(tags(&source.url, "library/other").await.is_empty());

    // The upstream moves a tag: the next run follows it.
    let moved = push_image(&up, "library/alpine", "latest", "moved").await;
    let start = Instant::now();
    loop {
        let here = get(&source.url, "/v2/mirror/alpine/manifests/latest")
            .await
            .map(|(b, _)| format!("sha256:{}", sha256_hex(&b)));
        if here.as_deref() == Some(moved.as_str()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "latest did not follow"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = Api::new(&source.url);
    assert!(
        api.metric_total("berth_sync_tags_copied_total").await >= 4,
        "{}",
        api.metrics().await
    );

    // Once, by hand: the report says it is all there.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.yml");
    std::fs::write(&cfg, sync("")).unwrap();
    let out = integration::server::berth_command(
        &cfg,
        &["replicate", "--once", "--sync", "base", "--dry-run"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["syncs"][0]["in_sync"], json!(3), "{report}");
    assert_eq!(report["syncs"][0]["copied"], json!([]), "{report}");
}
