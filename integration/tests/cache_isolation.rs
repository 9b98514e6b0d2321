//! A pull-through cache repository serves only what its upstream serves for it: content pushed
//! to a private repository of the same store is neither readable nor detectable through one,
//! with the prefixed caches of the built-in token issuer and with distribution's single
//! `proxy:` mode.

use std::path::Path;

use integration::Berth;
use integration::credentials::TokenIssuer;
use integration::distribution::Distribution;
use integration::http::Api;
use integration::layout::{Image, write_image};
use integration::tools::skopeo_copy;
use reqwest::Method;

/// Pushes a two-layer image from a fresh layout to `host/repo:v1`.
fn push(host: &str, repo: &str, dir: &Path, seed: u64, extra: &[&str]) -> Image {
    let src = dir.join(format!("src-{seed}"));
    let image = write_image(&src, "v1", seed, &[200_000, 3_000]);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{host}/{repo}:v1"),
        extra,
    );
    image
}

/// An anonymous token of the built-in issuer for `scope`.
async fn anonymous_token(api: &Api, scope: &str) -> String {
    let r = api
        .client
        .get(api.url("/auth/token"))
        .query(&[("service", "berth-test"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// GET and HEAD of `path` with `token`: their statuses, and the GET's body.
async fn read(api: &Api, path: &str, token: &str) -> (u16, u16, Vec<u8>) {
    let auth = format!("Bearer {token}");
    let get = api
        .send(Method::GET, path, &[("authorization", &auth)], None)
        .await;
    let status = get.status().as_u16();
    let body = get.bytes().await.unwrap_or_default().to_vec();
    let head = api
        .send(Method::HEAD, path, &[("authorization", &auth)], None)
        .await;
    (status, head.status().as_u16(), body)
}

#[tokio::test]
async fn private_content_is_not_readable_through_a_cached_repository() {
    let work = tempfile::tempdir().unwrap();
    let upstream = Distribution::filesystem(&work.path().join("upstream"));
    let issuer = TokenIssuer::new(work.path(), &[("alice", "wonderland")]);
    let berth = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n{}  proxies:\n    - prefix: hub\n      remoteurl: http://{}\n",
            work.path().join("cache").display(),
            issuer.config_yaml(
                "      - account: alice
        repository: '*'
        actions: ['*']
      - account: anonymous
        repository: hub/*
        actions: [pull]
"
            ),
            upstream.host
        ),
        &[],
    );
    let api = Api::new(&berth.url);
    let secret = push(
        &berth.host,
        "team/secret",
        work.path(),
        31,
        &["--dest-creds", "alice:wonderland"],
    );
    // The upstream serves one of the private layers too, but only in its library/shared.
    let public = push(&upstream.host, "library/shared", work.path(), 31, &[]);
    assert_eq!(public.layer_digests, secret.layer_digests);

    let private_token = anonymous_token(&api, "repository:team/secret:pull").await;
    let layer = &secret.layer_digests[1];
    let (get, head, _) = read(
        &api,
        &format!("/v2/team/secret/blobs/{layer}"),
        &private_token,
    )
    .await;
    assert_eq!((get, head), (401, 401), "the private repository itself");

    let token = anonymous_token(&api, "repository:hub/anything:pull").await;
    for path in [
        format!("/v2/hub/anything/blobs/{layer}"),
        format!("/v2/hub/anything/blobs/{}", secret.manifest_digest),
        format!("/v2/hub/anything/manifests/{}", secret.manifest_digest),
    ] {
        let (get, head, body) = read(&api, &path, &token).await;
        assert_eq!(
            (get, head),
            (404, 404),
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Asked again: nothing was linked by the first attempt.
    let (get, _, _) = read(&api, &format!("/v2/hub/anything/blobs/{layer}"), &token).await;
    assert_eq!(get, 404);

    // Where the upstream does serve the same bytes, the cache serves them from the store.
    let shared = anonymous_token(&api, "repository:hub/library/shared:pull").await;
    let (get, head, body) = read(
        &api,
        &format!("/v2/hub/library/shared/blobs/{layer}"),
        &shared,
    )
    .await;
    assert_eq!((get, head), (200, 200));
    assert_eq!(integration::layout::sha256(&body), *layer);
    // And that did not make it readable anywhere else under the prefix.
    let (get, head, _) = read(&api, &format!("/v2/hub/anything/blobs/{layer}"), &token).await;
    assert_eq!((get, head), (404, 404));
}

#[tokio::test]
async fn the_single_upstream_proxy_mode_serves_only_the_upstreams_content() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let upstream = Distribution::filesystem(&work.path().join("upstream"));
    // The store first served as an ordinary registry, then became a cache.
    let secret = {
        let plain = Berth::filesystem(&root);
        push(&plain.host, "team/secret", work.path(), 32, &[])
    };
    let berth = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nproxy:\n  remoteurl: http://{}\n",
            root.display(),
            upstream.host
        ),
        &[],
    );
    let api = Api::new(&berth.url);
    let layer = &secret.layer_digests[0];
    for path in [
        format!("/v2/other/blobs/{layer}"),
        format!("/v2/other/blobs/{}", secret.manifest_digest),
        format!("/v2/other/manifests/{}", secret.manifest_digest),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let r = api.send(method.clone(), &path, &[], None).await;
            assert_eq!(r.status(), 404, "{method} {path}");
        }
    }
}
