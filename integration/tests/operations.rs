//! Operating berth: health and readiness, read-only mode, metrics, access logs, upload purging,
//! a full disk.

use std::time::Duration;

use integration::Berth;
use integration::http::{Api, error_code, header};
use reqwest::Method;

fn config(root: &std::path::Path, extra_storage: &str) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n{extra_storage}",
        root.display()
    )
}

#[tokio::test]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let berth = Berth::with_config(&config(&root, ""), &[]);
    let api = Api::new(&berth.url);
    assert_eq!(
        api.send(Method::GET, "/healthz", &[], None).await.status(),
        200
    );
    assert_eq!(
        api.send(Method::GET, "/readyz", &[], None).await.status(),
        200
    );
    // Storage gone bad: the root is now a file, so every stat fails.
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    assert_eq!(
        api.send(Method::GET, "/readyz", &[], None).await.status(),
        503
    );
    assert_eq!(
        api.send(Method::GET, "/healthz", &[], None).await.status(),
        200,
        "the process is still up"
    );
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rw = Berth::with_config(&config(dir.path(), ""), &[]);
        Api::new(&rw.url)
            .push_blob("ro/app", b"written before")
            .await;
    }
    let ro = Berth::with_config(
        &config(
            dir.path(),
            "  maintenance:\n    readonly:\n      enabled: true\n",
        ),
        &[],
    );
    let api = Api::new(&ro.url);
    let d = integration::layout::sha256(b"written before");
    let r = api
        .send(Method::GET, &format!("/v2/ro/app/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"written before");
    for (m, p) in [
        (Method::POST, "/v2/ro/app/blobs/uploads/".to_owned()),
        (Method::PUT, "/v2/ro/app/manifests/latest".to_owned()),
        (Method::DELETE, format!("/v2/ro/app/blobs/{d}")),
    ] {
        let r = api.send(m.clone(), &p, &[], Some(b"{}".to_vec())).await;
        assert_eq!(r.status(), 405, "{m} {p}");
        assert_eq!(error_code(r).await, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn metrics_and_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::with_config(&config(dir.path(), ""), &[("RUST_LOG", "info")]);
    let api = Api::new(&berth.url);
    let d = api.push_blob("obs/app", b"observed").await;
    let r = api
        .send(
            Method::GET,
            &format!("/v2/obs/app/blobs/{d}"),
            &[("x-request-id", "trace-me-42")],
            None,
        )
        .await;
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("trace-me-42"));
    assert!(
        header(
            &api.send(Method::GET, "/v2/", &[], None).await,
            "x-request-id"
        )
        .is_some()
    );
    let text = api.metrics().await;
    assert!(
        text.contains(
            "berth_http_requests_total{route=\"upload_start\",method=\"POST\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("berth_http_requests_total{route=\"blob\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("berth_http_request_bytes_total 8"), "{text}");
    assert!(
        text.contains("berth_http_request_duration_seconds_count{route=\"blob\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_storage_operation_duration_seconds_count{backend=\"filesystem\",operation=\"put_stream\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "berth_storage_operation_errors_total{backend=\"filesystem\",operation=\"get\"} 0"
        ),
        "{text}"
    );
    let log = berth.log();
    let line = log
        .lines()
        .find(|l| l.contains("trace-me-42"))
        .unwrap_or_else(|| panic!("no access log line: {log}"));
    for field in [
        "repository=obs/app",
        "status=200",
        "route=\"blob\"",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
}

#[tokio::test]
async fn abandoned_uploads_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let purging = "  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1s\n      interval: 1s\n";
    let berth = Berth::with_config(&config(dir.path(), purging), &[]);
    let api = Api::new(&berth.url);
    let r = api
        .send(Method::POST, "/v2/p/app/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    api.send(Method::PATCH, &loc, &[], Some(vec![7u8; 1000]))
        .await;
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if api.send(Method::GET, &loc, &[], None).await.status() == 404 {
            gone = true;
            break;
        }
    }
    assert!(gone, "the abandoned upload was never purged");
    let uploads = dir
        .path()
        .join("docker/registry/v2/repositories/p/app/_uploads");
    assert!(
        !uploads.exists() || std::fs::read_dir(&uploads).unwrap().next().is_none(),
        "files left behind"
    );
    let text = api.metrics().await;
    assert!(text.contains("berth_purged_uploads_total 1"), "{text}");
}

/// A full disk answers 507 with a message that says so (and names no path); cancelling the
/// failed upload frees its bytes and pushes work again. Berth runs in a mount namespace of its
/// own with its root on a 2 MiB tmpfs (root and `unshare` are on every machine these tests run on).
#[tokio::test]
async fn a_full_disk_answers_507_and_pushes_work_once_there_is_room() {
    integration::tools::require("unshare");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir(&root).unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config(&root, "")).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=2m tmpfs "$1" && exec "$2" --config "$3""#)
        .arg("sh")
        .arg(&root)
        .arg(integration::server::berth_binary())
        .arg(&cfg);
    let berth = Berth::spawn(cmd, &[], None);
    let api = Api::new(&berth.url);

    let loc = api.start_upload("full/disk").await;
    let octets = [("content-type", "application/octet-stream")];
    let r = api
        .send(Method::PATCH, &loc, &octets, Some(vec![7u8; 3 << 20]))
        .await;
    assert_eq!(r.status(), 507);
    let text = r.text().await.unwrap();
    assert!(text.contains("storage is full"), "{text}");
    assert!(!text.contains("_uploads"), "a path leaked: {text}");

    let r = api.send(Method::DELETE, &loc, &[], None).await;
    assert_eq!(r.status(), 204);
    let small = vec![9u8; 100 << 10];
    let d = api.push_blob("full/disk", &small).await;
    let r = api
        .send(Method::GET, &format!("/v2/full/disk/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().to_vec() == small);
}

/// `http.debug.addr` (distribution's key, or `REGISTRY_HTTP_DEBUG_ADDR`) moves the metrics to
/// an address of their own, beside the probes; the API's address no longer serves them.
#[tokio::test]
async fn metrics_move_to_the_debug_address() {
    let dir = tempfile::tempdir().unwrap();
    let debug = format!("127.0.0.1:{}", integration::server::free_port());
    let berth = Berth::with_config(
        &config(dir.path(), ""),
        &[("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())],
    );
    let api = Api::new(&berth.url);
    api.push_blob("obs/app", b"observed").await;
    assert_eq!(
        api.send(Method::GET, "/metrics", &[], None).await.status(),
        404
    );
    assert_eq!(
        api.send(Method::GET, "/readyz", &[], None).await.status(),
        200
    );
    let get = |path: &str| reqwest::get(format!("http://{debug}{path}"));
    let m = get("/metrics").await.unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(
        text.contains(
            "berth_http_requests_total{route=\"upload_start\",method=\"POST\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("berth_storage_operation_duration_seconds_count{backend=\"filesystem\",operation=\"put_stream\"}"),
        "{text}"
    );
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/v2/").await.unwrap().status(), 404, "no API there");

    // Another path, as distribution's prometheus.path has it.
    let other = format!("127.0.0.1:{}", integration::server::free_port());
    let berth = Berth::with_config(
        &format!(
            "{}http:\n  debug:\n    addr: {other}\n    prometheus:\n      enabled: true\n      path: /internal/metrics\n",
            config(dir.path(), "")
        ),
        &[],
    );
    let _ = berth;
    let r = reqwest::get(format!("http://{other}/internal/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        reqwest::get(format!("http://{other}/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The debug address keeps the API's deadlines: a socket that sends nothing is closed.
#[tokio::test]
async fn an_idle_socket_on_the_debug_address_is_closed() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let debug = format!("127.0.0.1:{}", integration::server::free_port());
    let _berth = Berth::with_config(
        &format!(
            "{}berth:\n  connections:\n    headertimeout: 1s\n",
            config(dir.path(), "")
        ),
        &[("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())],
    );
    let mut idle = tokio::net::TcpStream::connect(&debug).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "still open after 10 s"
    );
}
