//! Immutable tags on local disk and on S3 (moto), with skopeo and without auth: a protected
//! tag is pushed again with what it names, never moved, never deleted; the rest stay mutable.

use integration::http::Api;
use integration::layout::write_image;
use integration::ruled_registry::RuledRegistry;

const POLICY: &str = "immutable:
  - name: releases
    repository: prod/*
    tags: ['v*']
    except: [latest]
";

fn push(dir: &std::path::Path, host: &str, repo_tag: &str) -> (bool, String) {
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .args(["--retry-times", "0"])
        .arg(format!("oci:{}:v1", dir.display()))
        .arg(format!("docker://{host}/{repo_tag}"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn immutable_tags_hold(on_s3: bool) {
    let s = RuledRegistry::start(on_s3, POLICY, 1);
    let host = &s.berth().host;
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    write_image(&one, "v1", 601, &[64 << 10]);
    write_image(&two, "v1", 602, &[64 << 10]);
    assert!(push(&one, host, "prod/app:v1.0").0);
    assert!(push(&one, host, "prod/app:v1.0").0, "the same image again");
    let (ok, err) = push(&two, host, "prod/app:v1.0");
    assert!(!ok && err.contains("releases"), "moved: {err}");
    // `latest` and repositories outside prod/ stay mutable.
    assert!(push(&one, host, "prod/app:latest").0);
    assert!(push(&two, host, "prod/app:latest").0);
    assert!(push(&one, host, "dev/app:v1.0").0);
    assert!(push(&two, host, "dev/app:v1.0").0);
    let api = Api::new(&s.berth().url);
    let delete = |path: &'static str| {
        let api = &api;
        async move {
            api.send(reqwest::Method::DELETE, path, &[], None)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete("/v2/prod/app/manifests/v1.0").await, 409);
    assert_eq!(delete("/v2/prod/app/manifests/latest").await, 202);
    assert_eq!(delete("/v2/dev/app/manifests/v1.0").await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_hold_on_local_disk() {
    immutable_tags_hold(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_hold_on_s3() {
    immutable_tags_hold(true).await;
}
