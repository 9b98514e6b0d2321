//! A pull-through cache in front of an upstream that lies: its redirects point at other local
//! services and at cloud metadata, its token realm is a plain-http stranger, its blobs never
//! end. None of it reaches a client, the store, or the configured credentials.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration::Berth;
use integration::http::Api;
use integration::scripted::{Answer, Scripted};
use reqwest::Method;

fn digest_of(seed: &str) -> String {
    integration::layout::sha256(seed.as_bytes())
}

/// A cache of `upstream` on local disk under `root`, with `extra` under `proxy:`.
fn cache(root: &std::path::Path, upstream: &str, extra: &str) -> Berth {
    Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nproxy:\n  remoteurl: http://{upstream}\n{extra}",
            root.display()
        ),
        &[],
    )
}

/// Whether the store under `root` holds any blob bytes.
fn any_blob_stored(root: &std::path::Path) -> bool {
    walk(&root.join("docker/registry/v2/blobs")).any(|p| p.ends_with("data"))
}

fn walk(dir: &std::path::Path) -> impl Iterator<Item = std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.into_iter()
}

#[tokio::test]
async fn redirects_to_local_services_and_metadata_are_not_followed() {
    let secret = Scripted::start(|_| Answer::new("200 OK", &[], b"the secret page"));
    let target = Arc::new(Mutex::new(String::new()));
    let aim = target.clone();
    let upstream = Scripted::start(move |_| {
        let location = aim.lock().unwrap().clone();
        Answer::new("307 Temporary Redirect", &[("location", &location)], b"")
    });
    let work = tempfile::tempdir().unwrap();
    let berth = cache(work.path(), &upstream.host, "");
    let api = Api::new(&berth.url);
    let path = format!("/v2/team/app/blobs/{}", digest_of("x"));
    for location in [
        format!("http://{}/page", secret.host),
        format!("{}/metrics", berth.url),
        "http://169.254.169.254/latest/meta-data/iam/".to_owned(),
        "http://[::1]:1/".to_owned(),
        "http://10.1.2.3/bucket".to_owned(),
    ] {
        *target.lock().unwrap() = location.clone();
        let r = api.send(Method::GET, &path, &[], None).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 502, "{location}: {body}");
        assert!(
            !body.contains("secret page") && !body.contains("berth_requests"),
            "{location}: {body}"
        );
        assert!(
            !body.contains(&location),
            "the target is not echoed: {body}"
        );
    }
    assert!(
        secret.received().is_empty(),
        "the local service was reached"
    );
}

#[tokio::test]
async fn credentials_go_only_to_the_upstreams_origin_or_over_https() {
    let realm = Scripted::start(|_| Answer::new("200 OK", &[], br#"{"token":"t"}"#));
    let realm_url = format!("http://{}/token", realm.host);
    let upstream = Scripted::start(move |req| {
        if req
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer t")
        {
            Answer::new("404 Not Found", &[], b"{}")
        } else {
            Answer::new(
                "401 Unauthorized",
                &[(
                    "www-authenticate",
                    &format!("Bearer realm=\"{realm_url}\",service=\"reg\""),
                )],
                b"",
            )
        }
    });
    let work = tempfile::tempdir().unwrap();
    let creds = "  username: mirror\n  password: hunter2\n";

    // Another loopback port, not trusted: never asked at all.
    let berth = cache(&work.path().join("a"), &upstream.host, creds);
    let api = Api::new(&berth.url);
    let r = api
        .send(Method::GET, "/v2/team/app/manifests/v1", &[], None)
        .await;
    assert_eq!(r.status(), 502);
    assert!(
        realm.received().is_empty(),
        "an untrusted local realm was asked"
    );
    drop(berth);

    // Trusted by the operator, but plain http on another origin: asked without the password.
    let berth = cache(
        &work.path().join("b"),
        &upstream.host,
        &format!("{creds}  trustedorigins: [\"{}\"]\n", realm.host),
    );
    let api = Api::new(&berth.url);
    let r = api
        .send(Method::GET, "/v2/team/app/manifests/v1", &[], None)
        .await;
    assert_eq!(r.status(), 404, "the anonymous token worked");
    let asked = realm.received();
    assert!(!asked.is_empty(), "the trusted realm was asked");
    for req in asked {
        assert!(
            !req.headers.iter().any(|(k, _)| k == "authorization"),
            "credentials sent over plain http: {req:?}"
        );
    }
}

#[tokio::test]
async fn an_endless_blob_is_cut_at_the_limit_and_when_its_clients_leave() {
    let upstream = Scripted::start(|req| {
        if req.first_line.starts_with("HEAD") {
            return Answer::new("200 OK", &[], b"");
        }
        // No Content-Length: the body ends when the connection does.
        Answer::Endless("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".into())
    });
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("cache");
    let berth = cache(&root, &upstream.host, "  maxblobsize: 4194304\n");
    let api = Api::new(&berth.url);
    let path = format!("/v2/team/app/blobs/{}", digest_of("endless"));

    let r = api.send(Method::GET, &path, &[], None).await;
    let got = r.bytes().await;
    assert!(got.is_err(), "an endless blob arrived whole");
    let settle = || async {
        let mut last = upstream.endless_bytes_sent();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = upstream.endless_bytes_sent();
            if now == last {
                return now;
            }
            last = now;
        }
    };
    let sent = settle().await;
    assert!(sent < 32 << 20, "{sent} bytes fetched for a 4 MiB limit");
    assert!(!any_blob_stored(&root), "an endless blob was kept");

    // A client that takes a little and leaves: the fetch stops with it.
    drop(berth);
    let berth = cache(&root, &upstream.host, "");
    let before = upstream.endless_bytes_sent();
    let mut r = reqwest::get(format!("{}{path}", berth.url)).await.unwrap();
    let mut taken = 0;
    while taken < 1 << 20 {
        taken += r.chunk().await.unwrap().unwrap().len();
    }
    drop(r);
    let sent = settle().await - before;
    assert!(
        sent < 64 << 20,
        "{sent} bytes fetched after the client left"
    );
    assert!(!any_blob_stored(&root));
}

#[tokio::test]
async fn upstream_failures_tell_the_client_nothing_of_the_upstream() {
    let closed = integration::server::free_port();
    let work = tempfile::tempdir().unwrap();
    let berth = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nproxy:\n  remoteurl: http://mirror:s3cr3t@127.0.0.1:{closed}\n",
            work.path().display()
        ),
        &[("RUST_LOG", "warn")],
    );
    let api = Api::new(&berth.url);
    let started = Instant::now();
    let r = api
        .send(Method::GET, "/v2/team/app/manifests/v1", &[], None)
        .await;
    assert_eq!(r.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(10));
    let body = r.text().await.unwrap();
    assert!(body.contains("upstream registry is unreachable"), "{body}");
    for leak in [
        "s3cr3t",
        "mirror",
        "127.0.0.1",
        &closed.to_string(),
        "refused",
    ] {
        assert!(!body.contains(leak), "{leak:?} in {body}");
    }
    let log = berth.log();
    assert!(
        !log.contains("s3cr3t"),
        "the password reached the log: {log}"
    );
    assert!(
        log.contains("unreachable"),
        "the operator is told why: {log}"
    );
}
