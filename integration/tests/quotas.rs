//! Quotas end to end, on local disk and on S3 (moto), with two replicas on one store: a push
//! past the limit is refused with 403 DENIED naming the limit and the usage, blobs count once
//! per repository, a delete frees room, and the ledger rebuilt from the layout agrees.

use integration::http::Api;
use integration::layout::write_image;
use integration::ruled_registry::RuledRegistry;
use integration::server::berth_command;
use serde_json::Value;

const POLICY: &str = "quotas:
  - name: team space
    repository: team/*
    bytes: 1MiB
";

fn push(dir: &std::path::Path, host: &str, repo_tag: &str) -> bool {
    std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .args(["--retry-times", "0"])
        .arg(format!("oci:{}:v1", dir.display()))
        .arg(format!("docker://{host}/{repo_tag}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The entry of `team/app` in what `berth usage ARGS` prints.
fn team_app_usage(config: &std::path::Path, args: &[&str]) -> Value {
    let out = berth_command(config, args);
    assert!(out.status.success(), "{out:?}");
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    usage["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "team/app")
        .unwrap()
        .clone()
}

async fn quotas_hold(on_s3: bool) {
    let s = RuledRegistry::start(on_s3, POLICY, 2);
    let (one, two) = (&s.replicas[0], &s.replicas[1]);
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    write_image(&a, "v1", 501, &[600 << 10]);
    write_image(&b, "v1", 502, &[600 << 10]);
    assert!(push(&a, &one.host, "team/app:a"));
    // The same blobs under another tag, through the other replica: counted once.
    assert!(push(&a, &two.host, "team/app:a-again"));
    // Another 600 KiB layer would pass 1 MiB: refused, through either replica.
    assert!(!push(&b, &two.host, "team/app:b"));
    assert!(!push(&b, &one.host, "team/app:b"));
    // Each repository has its own quota.
    assert!(push(&b, &one.host, "team/other:b"));

    // The refusal, as a client sees it: 403 DENIED with the limit and the usage, before
    // the bytes are stored when their size is announced.
    let api = Api::new(&two.url);
    let big = vec![7u8; 700 << 10];
    let digest = integration::layout::sha256(&big);
    let r = api
        .send(
            reqwest::Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
            &[("content-type", "application/octet-stream")],
            Some(big.clone()),
        )
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    let error = &body["errors"][0];
    assert_eq!(error["code"], "DENIED", "{body}");
    assert_eq!(error["detail"]["limit"], 1 << 20, "{body}");
    assert_eq!(error["detail"]["quota"], "team space", "{body}");
    let used = error["detail"]["usage"].as_u64().unwrap();
    assert!(
        used > 600 << 10 && used < 700 << 10,
        "usage counts image a once: {used}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("1048576"),
        "{body}"
    );
    // A chunked upload is refused at the chunk that passes the limit.
    let location = api.start_upload("team/app").await;
    let r = api
        .send(
            reqwest::Method::PATCH,
            &location,
            &[("content-type", "application/octet-stream")],
            Some(big),
        )
        .await;
    assert_eq!(r.status(), 403);

    let app = team_app_usage(&s.config, &["usage"]);
    assert_eq!(app["quota"]["used"], used, "{app}");
    assert_eq!(app["quota"]["limit"], 1 << 20);
    assert_eq!(app["bytes"], used, "the ledger agrees with the walk: {app}");

    // Deleting image a frees its room, seen by the other replica.
    let d = api
        .client
        .head(api.url("/v2/team/app/manifests/a"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = Api::new(&one.url)
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/team/app/manifests/{d}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(push(&b, &two.host, "team/app:b"));

    // Rebuilt from the layout, the ledger says the same.
    let app = team_app_usage(&s.config, &["usage", "--rebuild"]);
    assert_eq!(app["quota"]["used"], app["bytes"], "{app}");
    assert!(app["bytes"].as_u64().unwrap() < 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_across_replicas_on_local_disk() {
    quotas_hold(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_across_replicas_on_s3() {
    quotas_hold(true).await;
}
