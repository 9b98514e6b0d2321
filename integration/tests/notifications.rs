//! Webhook notifications: distribution's envelope for push, pull and delete, ignore rules, and a
//! dead endpoint that never slows a push.

use std::time::{Duration, Instant};

use integration::Berth;
use integration::http::Api;
use integration::listener::{recording_listener, response};
use reqwest::Method;

/// HMAC-SHA256 (RFC 2104) of `body` under `key`, in hex: written here, apart from the
/// server's, to check its signatures.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

/// Pushes an image of `seed` as `hooks/app:v1` (three push events: two blobs, the manifest);
/// the manifest's bytes.
async fn push_v1(api: &Api, seed: &str) -> Vec<u8> {
    let manifest = api.image_manifest("hooks/app", seed).await;
    let r = api
        .put_manifest(
            "hooks/app",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    assert_eq!(r.status(), 201);
    manifest
}

fn endpoint(url: &str, extra: &str) -> String {
    format!(
        "    - name: hook\n      url: {url}\n      headers:\n        Authorization: [Bearer hook-secret]\n      timeout: 500ms\n      threshold: 3\n      backoff: 100ms\n{extra}"
    )
}

#[tokio::test]
async fn push_pull_and_delete_events_reach_the_endpoint() {
    let (base, requests) = recording_listener((0..20).map(|_| response("200 OK", "")).collect());
    let dir = tempfile::tempdir().unwrap();
    // A second endpoint nobody listens on: its retries must not hold anything up.
    let dead = format!(
        "http://127.0.0.1:{}/nobody",
        integration::server::free_port()
    );
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nnotifications:\n  endpoints:\n{}{}",
        dir.path().display(),
        endpoint(
            &format!("{base}/events"),
            "      ignore:\n        actions: [mount]\n      signingsecret: hook-signing-key\n"
        ),
        "    - name: dead\n      url: ".to_owned()
            + &dead
            + "\n      threshold: 1000\n      backoff: 1s\n"
    );
    let berth = Berth::with_config(&yaml, &[]);
    let api = Api::new(&berth.url);
    let started = Instant::now();
    let manifest = push_v1(&api, "n").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead endpoint slowed the push"
    );
    let d = integration::layout::sha256(&manifest);
    assert_eq!(
        api.send(Method::GET, "/v2/hooks/app/manifests/v1", &[], None)
            .await
            .status(),
        200
    );
    assert_eq!(
        api.send(
            Method::DELETE,
            &format!("/v2/hooks/app/manifests/{d}"),
            &[],
            None
        )
        .await
        .status(),
        202
    );

    let mut events = Vec::new();
    while events.len() < 5 {
        let req = requests
            .recv_timeout(Duration::from_secs(10))
            .expect("events did not arrive");
        assert_eq!(req.first_line, "POST /events HTTP/1.1");
        assert!(
            req.headers
                .contains(&("authorization".into(), "Bearer hook-secret".into()))
        );
        assert!(req.headers.iter().any(|(k, v)| k == "content-type"
            && v == "application/vnd.docker.distribution.events.v1+json"));
        // Signed: the receiver can tell the body came from this registry, unchanged.
        let signed = req
            .headers
            .iter()
            .find(|(k, _)| k == "x-berth-signature-256")
            .map(|(_, v)| v.clone());
        assert_eq!(
            signed,
            Some(format!(
                "sha256={}",
                hmac_sha256(b"hook-signing-key", &req.body)
            ))
        );
        let envelope: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        events.extend(envelope["events"].as_array().unwrap().iter().cloned());
    }
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["push", "push", "push", "pull", "delete"]);
    let manifest_push = &events[2];
    assert_eq!(manifest_push["target"]["repository"], "hooks/app");
    assert_eq!(manifest_push["target"]["digest"], d);
    assert_eq!(manifest_push["target"]["tag"], "v1");
    assert_eq!(
        manifest_push["target"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest_push["target"]["size"], manifest.len());
    assert_eq!(manifest_push["request"]["method"], "PUT");
    assert!(events[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[0]["target"]["mediaType"], "application/octet-stream");
}

/// An endpoint can take CloudEvents instead of distribution's envelope; one that keeps failing
/// gets each event `threshold` times, with pauses that double, and then counts it as given up
/// on (a dead letter) in `/metrics`.
#[tokio::test]
async fn cloudevents_and_events_given_up_on() {
    let (ce_base, ce_requests) =
        recording_listener((0..10).map(|_| response("200 OK", "")).collect());
    let (bad_base, bad_requests) = recording_listener(
        (0..20)
            .map(|_| response("500 Internal Server Error", ""))
            .collect(),
    );
    let yaml = format!(
        "storage:\n  inmemory: {{}}\nnotifications:\n  endpoints:\n    - name: ce\n      url: {ce_base}/ce\n      format: cloudevents\n      signingsecret: k\n    - name: bad\n      url: {bad_base}/bad\n      threshold: 3\n      backoff: 200ms\n      ignore:\n        mediatypes: [application/octet-stream]\n"
    );
    let berth = Berth::with_config(&yaml, &[]);
    let api = Api::new(&berth.url);
    let manifest = push_v1(&api, "ce").await;
    let d = integration::layout::sha256(&manifest);

    let mut events = Vec::new();
    while events.len() < 3 {
        let req = ce_requests
            .recv_timeout(Duration::from_secs(10))
            .expect("events did not arrive");
        assert!(
            req.headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "application/cloudevents+json")
        );
        assert_eq!(
            req.headers
                .iter()
                .find(|(k, _)| k == "x-berth-signature-256")
                .map(|(_, v)| v.clone()),
            Some(format!("sha256={}", hmac_sha256(b"k", &req.body)))
        );
        events.push(serde_json::from_slice::<serde_json::Value>(&req.body).unwrap());
    }
    let m = &events[2];
    assert_eq!(m["specversion"], "1.0");
    assert_eq!(m["type"], "io.berth.registry.push");
    assert_eq!(m["subject"], "hooks/app:v1");
    assert_eq!(m["datacontenttype"], "application/json");
    assert!(m["id"].as_str().is_some_and(|i| !i.is_empty()));
    assert!(m["source"].as_str().unwrap().starts_with("/berth/"));
    assert_eq!(m["data"]["target"]["digest"], d);
    assert_eq!(
        events[0]["subject"].as_str().unwrap().split('@').next(),
        Some("hooks/app")
    );

    // The failing endpoint (blob events ignored): the manifest's event, three times, with
    // pauses of 200 ms and then 400 ms.
    let mut at = Vec::new();
    for _ in 0..3 {
        let req = bad_requests
            .recv_timeout(Duration::from_secs(10))
            .expect("attempts did not arrive");
        assert_eq!(req.first_line, "POST /bad HTTP/1.1");
        at.push(Instant::now());
    }
    assert!(
        at[1] - at[0] >= Duration::from_millis(180),
        "{:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(380),
        "{:?}",
        at[2] - at[1]
    );
    assert!(
        bad_requests.recv_timeout(Duration::from_secs(1)).is_err(),
        "a fourth attempt"
    );
    let text = api.metrics().await;
    for line in [
        "berth_notifications_total{endpoint=\"bad\",result=\"failed\"} 1",
        "berth_notifications_total{endpoint=\"bad\",result=\"retried\"} 2",
        "berth_notifications_total{endpoint=\"ce\",result=\"delivered\"} 3",
        "berth_notifications_queued{endpoint=\"bad\"} 0",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}
