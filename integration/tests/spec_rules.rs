//! The distribution API checked rule by rule with raw HTTP against the real binary.

use integration::Berth;
use integration::http::{Api, error_code, header};
use integration::layout::sha256;
use reqwest::Method;
use serde_json::json;
use sha2::Digest as _;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

struct Fixture {
    _dir: tempfile::TempDir,
    _berth: Berth,
    api: Api,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(dir.path());
    let api = Api::new(&berth.url);
    Fixture {
        _dir: dir,
        _berth: berth,
        api,
    }
}

#[tokio::test]
async fn base_endpoint_and_unknown_routes() {
    let f = start();
    let r = f.api.send(Method::GET, "/v2/", &[], None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    let r = f.api.send(Method::GET, "/v2/a/nonsense", &[], None).await;
    assert_eq!(r.status(), 404);
    let r = f
        .api
        .send(Method::POST, "/v2/a/manifests/latest", &[], None)
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn monolithic_uploads_post_put_and_single_post() {
    let f = start();
    let data = b"monolithic bytes".to_vec();
    let d = sha256(&data);
    // POST with ?digest= and the body.
    let r = f
        .api
        .send(
            Method::POST,
            &format!("/v2/m/blobs/uploads/?digest={d}"),
            &[],
            Some(data.clone()),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location").unwrap(), format!("/v2/m/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    // POST, then PUT with the whole body.
    let r = f
        .api
        .send(Method::POST, "/v2/m2/blobs/uploads/", &[], None)
        .await;
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location").unwrap();
    assert!(header(&r, "docker-upload-uuid").is_some());
    let r = f
        .api
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Some(data.clone()),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(Method::HEAD, &format!("/v2/m2/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-length").unwrap(),
        data.len().to_string()
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/m2/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    // The empty blob.
    let empty = sha256(b"");
    let r = f
        .api
        .send(
            Method::POST,
            &format!("/v2/m/blobs/uploads/?digest={empty}"),
            &[],
            Some(vec![]),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/m/blobs/{empty}"), &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let f = start();
    let data: Vec<u8> = (0..30u8).collect();
    let r = f
        .api
        .send(Method::POST, "/v2/c/blobs/uploads/", &[], None)
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    let loc = header(&r, "location").unwrap();
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[
                ("content-range", "0-9"),
                ("content-type", "application/octet-stream"),
            ],
            Some(data[..10].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9"));
    assert_eq!(
        header(&r, "connection"),
        None,
        "a body read whole keeps the connection"
    );
    let loc = header(&r, "location").unwrap();
    // A chunk that does not start at the current offset: 416 with where to resume.
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "20-29")],
            Some(data[20..].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9"));
    // Its body was read and discarded before the answer, so the connection carries on.
    assert_eq!(header(&r, "connection"), None);
    assert!(
        header(&r, "location")
            .unwrap()
            .contains("/v2/c/blobs/uploads/")
    );
    // Status.
    let r = f.api.send(Method::GET, &loc, &[], None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9"));
    // Content-Length that disagrees with Content-Range.
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "10-14")],
            Some(data[10..20].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 400);
    // Malformed range.
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "ten-twenty")],
            Some(data[10..20].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "10-19")],
            Some(data[10..20].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 202);
    // Last chunk with the PUT.
    let d = sha256(&data);
    let r = f
        .api
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("content-range", "20-29")],
            Some(data[20..].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/c/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    // The session is gone once finished.
    let r = f.api.send(Method::GET, &loc, &[], None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let f = start();
    let data = integration::layout::random_bytes(9, 3 << 20);
    let r = f
        .api
        .send(Method::POST, "/v2/s/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = f
        .api
        .client
        .patch(f.api.url(&loc))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        header(&r, "range").unwrap(),
        format!("0-{}", data.len() - 1)
    );
    let loc = header(&r, "location").unwrap();
    let d = sha256(&data);
    let r = f
        .api
        .send(Method::PUT, &format!("{loc}?digest={d}"), &[], None)
        .await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/s/blobs/{d}"), &[], None)
        .await;
    assert!(r.bytes().await.unwrap().to_vec() == data);
}

#[tokio::test]
async fn digest_mismatch_missing_digest_cancel_and_foreign_sessions() {
    let f = start();
    let r = f
        .api
        .send(Method::POST, "/v2/d/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    let r = f
        .api
        .send(Method::PATCH, &loc, &[], Some(b"some bytes".to_vec()))
        .await;
    assert_eq!(r.status(), 202);
    let r = f.api.send(Method::PUT, &loc, &[], None).await;
    assert_eq!(r.status(), 400, "PUT without digest");
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let wrong = sha256(b"other bytes");
    let r = f
        .api
        .send(Method::PUT, &format!("{loc}?digest={wrong}"), &[], None)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = f
        .api
        .send(Method::HEAD, &format!("/v2/d/blobs/{wrong}"), &[], None)
        .await;
    assert_eq!(r.status(), 404, "nothing stored under the claimed digest");
    let r = f.api.send(Method::GET, &loc, &[], None).await;
    assert_eq!(r.status(), 404, "a failed upload is cleaned up");
    // Monolithic mismatch.
    let r = f
        .api
        .send(
            Method::POST,
            &format!("/v2/d/blobs/uploads/?digest={wrong}"),
            &[],
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Cancel.
    let r = f
        .api
        .send(Method::POST, "/v2/d/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    let id = loc.rsplit('/').next().unwrap().to_owned();
    // Another repository cannot touch this session.
    let r = f
        .api
        .send(
            Method::GET,
            &format!("/v2/other/blobs/uploads/{id}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = f.api.send(Method::DELETE, &loc, &[], None).await;
    assert_eq!(r.status(), 204);
    let r = f.api.send(Method::GET, &loc, &[], None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    for bad in [
        "..%2F..%2Fx",
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let r = f
            .api
            .send(
                Method::GET,
                &format!("/v2/d/blobs/uploads/{bad}"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status(), 404, "{bad}");
    }
}

#[tokio::test]
async fn cross_repository_mount() {
    let f = start();
    let d = f.api.push_blob("src/repo", b"mount me").await;
    let r = f
        .api
        .send(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location").unwrap(),
        format!("/v2/dst/blobs/{d}")
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/dst/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"mount me");
    // Not in `from`: a fresh upload session instead.
    let missing = sha256(b"absent");
    let r = f
        .api
        .send(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        header(&r, "location")
            .unwrap()
            .starts_with("/v2/dst/blobs/uploads/")
    );
    // A blob in another repository is not visible here without a mount.
    let r = f
        .api
        .send(Method::GET, &format!("/v2/third/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn blob_ranges() {
    let f = start();
    let d = f.api.push_blob("r", b"0123456789").await;
    let r = f
        .api
        .send(
            Method::GET,
            &format!("/v2/r/blobs/{d}"),
            &[("range", "bytes=2-5")],
            None,
        )
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes 2-5/10"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"2345");
    let r = f
        .api
        .send(
            Method::GET,
            &format!("/v2/r/blobs/{d}"),
            &[("range", "bytes=-3")],
            None,
        )
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"789");
    let r = f
        .api
        .send(
            Method::GET,
            &format!("/v2/r/blobs/{d}"),
            &[("range", "bytes=10-")],
            None,
        )
        .await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */10"));
    let r = f
        .api
        .send(Method::GET, &format!("/v2/r/blobs/{d}"), &[], None)
        .await;
    assert_eq!(header(&r, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(header(&r, "etag").unwrap(), format!("\"{d}\""));
}

#[tokio::test]
async fn manifests_by_tag_and_digest_with_oci_tags() {
    let f = start();
    let m = f.api.image_manifest("app", "a").await;
    let d = sha256(&m);
    let r = f.api.put_manifest("app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location").unwrap(),
        format!("/v2/app/manifests/{d}")
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    for reference in ["v1", d.as_str()] {
        let r = f
            .api
            .send(
                Method::GET,
                &format!("/v2/app/manifests/{reference}"),
                &[("accept", OCI_MANIFEST)],
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
        assert_eq!(r.bytes().await.unwrap().to_vec(), m, "exact bytes");
        let r = f
            .api
            .send(
                Method::HEAD,
                &format!("/v2/app/manifests/{reference}"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length").unwrap(), m.len().to_string());
    }
    // By digest with several ?tag=.
    let m2 = f.api.image_manifest("app", "b").await;
    let d2 = sha256(&m2);
    let r = f
        .api
        .put_manifest("app", &format!("{d2}?tag=t1&tag=t2"), OCI_MANIFEST, &m2)
        .await;
    assert_eq!(r.status(), 201);
    let tags: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tags, vec!["t1", "t2"]);
    let r = f
        .api
        .send(Method::GET, "/v2/app/tags/list", &[], None)
        .await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"name": "app", "tags": ["t1", "t2", "v1"]}));
    // Retagging moves the tag.
    let r = f.api.put_manifest("app", "v1", OCI_MANIFEST, &m2).await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(Method::HEAD, "/v2/app/manifests/v1", &[], None)
        .await;
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d2);
    // Wrong digest in the URL.
    let r = f.api.put_manifest("app", &d, OCI_MANIFEST, &m2).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Unknown manifests.
    let r = f
        .api
        .send(Method::GET, "/v2/app/manifests/nope", &[], None)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = f
        .api
        .send(Method::GET, &format!("/v2/other/manifests/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn manifest_validation() {
    let f = start();
    let missing = sha256(b"never pushed");
    let config = f.api.push_blob("v", b"{}").await;
    let with_missing_layer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing, "size": 12}],
    }))
    .unwrap();
    let r = f
        .api
        .put_manifest("v", "t", OCI_MANIFEST, &with_missing_layer)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let index_missing_child = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 12}],
    }))
    .unwrap();
    let r = f
        .api
        .put_manifest("v", "t", OCI_INDEX, &index_missing_child)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    for bad in [
        &b"not json"[..],
        br#"{"schemaVersion":2,"mediaType":"application/x-what"}"#,
        br#"{"schemaVersion":1}"#,
    ] {
        let r = f.api.put_manifest("v", "t", OCI_MANIFEST, bad).await;
        assert_eq!(r.status(), 400);
        assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    }
    // Up to 4 MiB is accepted; more is 413.
    let m = f.api.image_manifest("v", "big").await;
    let mut value: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let base_len = m.len();
    let pad = (4 << 20) - base_len - 40;
    value["annotations"] = json!({ "pad": "x".repeat(pad) });
    let big = serde_json::to_vec(&value).unwrap();
    assert!(
        big.len() <= 4 << 20 && big.len() > (4 << 20) - 100,
        "{}",
        big.len()
    );
    let r = f.api.put_manifest("v", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), 201);
    value["annotations"] = json!({ "pad": "x".repeat(pad + 200) });
    let too_big = serde_json::to_vec(&value).unwrap();
    let r = f.api.put_manifest("v", "big", OCI_MANIFEST, &too_big).await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn docker_schema2_manifest_and_list() {
    let f = start();
    let config = f.api.push_blob("dock", b"{\"os\":\"linux\"}").await;
    let layer = f.api.push_blob("dock", b"gzip layer").await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 15},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 10}],
    }))
    .unwrap();
    let r = f
        .api
        .put_manifest(
            "dock",
            "amd64",
            "application/vnd.docker.distribution.manifest.v2+json",
            &m,
        )
        .await;
    assert_eq!(r.status(), 201);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": sha256(&m),
                       "size": m.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let r = f
        .api
        .put_manifest(
            "dock",
            "latest",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            &list,
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(Method::GET, "/v2/dock/manifests/latest", &[], None)
        .await;
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/vnd.docker.distribution.manifest.list.v2+json")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), list);
}

#[tokio::test]
async fn sha512_end_to_end() {
    let f = start();
    let data = integration::layout::random_bytes(5, 100_000);
    let d = sha512(&data);
    let r = f
        .api
        .send(
            Method::POST,
            &format!("/v2/h/blobs/uploads/?digest={d}"),
            &[],
            Some(data.clone()),
        )
        .await;
    assert_eq!(r.status(), 201);
    // Chunked, finished with a sha512 digest.
    let r = f
        .api
        .send(Method::POST, "/v2/h2/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "0-49999")],
            Some(data[..50_000].to_vec()),
        )
        .await;
    let loc = header(&r, "location").unwrap();
    let r = f
        .api
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "50000-99999")],
            Some(data[50_000..].to_vec()),
        )
        .await;
    let loc = header(&r, "location").unwrap();
    let wrong = sha512(b"nope");
    let r = f
        .api
        .send(Method::PUT, &format!("{loc}?digest={wrong}"), &[], None)
        .await;
    assert_eq!(r.status(), 400, "sha512 mismatch is detected");
    let r = f
        .api
        .send(Method::POST, "/v2/h2/blobs/uploads/", &[], None)
        .await;
    let loc = header(&r, "location").unwrap();
    let r = f
        .api
        .send(Method::PATCH, &loc, &[], Some(data.clone()))
        .await;
    let loc = header(&r, "location").unwrap();
    let r = f
        .api
        .send(Method::PUT, &format!("{loc}?digest={d}"), &[], None)
        .await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/h2/blobs/{d}"), &[], None)
        .await;
    assert!(r.bytes().await.unwrap().to_vec() == data);
    // A manifest addressed by sha512.
    let m = f.api.image_manifest("h", "512").await;
    let md = sha512(&m);
    let r = f.api.put_manifest("h", &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), md);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/h/manifests/{md}"), &[], None)
        .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), m);
}

#[tokio::test]
async fn tags_and_catalog_pagination() {
    let f = start();
    let m = f.api.image_manifest("p/one", "x").await;
    for t in ["e", "a", "d", "c", "b"] {
        assert_eq!(
            f.api
                .put_manifest("p/one", t, OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    let r = f
        .api
        .send(Method::GET, "/v2/p/one/tags/list?n=2", &[], None)
        .await;
    assert_eq!(
        header(&r, "link").unwrap(),
        "</v2/p/one/tags/list?n=2&last=b>; rel=\"next\""
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], json!(["a", "b"]));
    let r = f
        .api
        .send(Method::GET, "/v2/p/one/tags/list?n=2&last=b", &[], None)
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["tags"],
        json!(["c", "d"])
    );
    let r = f
        .api
        .send(Method::GET, "/v2/p/one/tags/list?n=2&last=d", &[], None)
        .await;
    assert!(header(&r, "link").is_none(), "no Link on the last page");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["tags"],
        json!(["e"])
    );
    let r = f
        .api
        .send(Method::GET, "/v2/p/one/tags/list?n=0", &[], None)
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["tags"],
        json!([])
    );
    let r = f
        .api
        .send(Method::GET, "/v2/p/one/tags/list?n=many", &[], None)
        .await;
    assert_eq!(r.status(), 400);
    let r = f
        .api
        .send(Method::GET, "/v2/nobody/tags/list", &[], None)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    for repo in ["p/two", "p-three", "zzz"] {
        let m = f.api.image_manifest(repo, repo).await;
        assert_eq!(
            f.api
                .put_manifest(repo, "t", OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    let r = f.api.send(Method::GET, "/v2/_catalog", &[], None).await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["repositories"],
        json!(["p-three", "p/one", "p/two", "zzz"])
    );
    let r = f.api.send(Method::GET, "/v2/_catalog?n=2", &[], None).await;
    assert_eq!(
        header(&r, "link").unwrap(),
        "</v2/_catalog?n=2&last=p%2Fone>; rel=\"next\""
    );
    let r = f
        .api
        .send(Method::GET, "/v2/_catalog?n=2&last=p%2Fone", &[], None)
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["repositories"],
        json!(["p/two", "zzz"])
    );
}

#[tokio::test]
async fn deletes_of_tags_manifests_and_blobs() {
    let f = start();
    let m = f.api.image_manifest("del", "x").await;
    let d = sha256(&m);
    f.api.put_manifest("del", "keep", OCI_MANIFEST, &m).await;
    f.api.put_manifest("del", "drop", OCI_MANIFEST, &m).await;
    let r = f
        .api
        .send(Method::DELETE, "/v2/del/manifests/drop", &[], None)
        .await;
    assert_eq!(r.status(), 202, "delete by tag removes the tag");
    let r = f
        .api
        .send(Method::GET, "/v2/del/tags/list", &[], None)
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["tags"],
        json!(["keep"])
    );
    assert_eq!(
        f.api
            .send(Method::HEAD, &format!("/v2/del/manifests/{d}"), &[], None)
            .await
            .status(),
        200
    );
    let r = f
        .api
        .send(Method::DELETE, &format!("/v2/del/manifests/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 202);
    let r = f
        .api
        .send(Method::GET, &format!("/v2/del/manifests/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = f
        .api
        .send(Method::GET, "/v2/del/manifests/keep", &[], None)
        .await;
    assert_eq!(r.status(), 404, "tags of a deleted manifest go with it");
    // The repository is still there, without tags: the catalog and the tags list agree, as in
    // distribution (200 with null tags).
    let r = f.api.send(Method::GET, "/v2/_catalog", &[], None).await;
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["repositories"]
            .as_array()
            .unwrap()
            .contains(&json!("del"))
    );
    let r = f
        .api
        .send(Method::GET, "/v2/del/tags/list", &[], None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"name": "del", "tags": null})
    );
    let r = f
        .api
        .send(Method::DELETE, &format!("/v2/del/manifests/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
    let blob = f.api.push_blob("del", b"blob to delete").await;
    let r = f
        .api
        .send(Method::DELETE, &format!("/v2/del/blobs/{blob}"), &[], None)
        .await;
    assert_eq!(r.status(), 202);
    let r = f
        .api
        .send(Method::HEAD, &format!("/v2/del/blobs/{blob}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
    let r = f
        .api
        .send(Method::DELETE, &format!("/v2/del/blobs/{blob}"), &[], None)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn referrers_api() {
    let f = start();
    let subject = f.api.image_manifest("ref", "subject").await;
    let sd = sha256(&subject);
    f.api
        .put_manifest("ref", "v1", OCI_MANIFEST, &subject)
        .await;
    let r = f
        .api
        .send(Method::GET, &format!("/v2/ref/referrers/{sd}"), &[], None)
        .await;
    assert_eq!(r.status(), 200, "no referrers is an empty index");
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["manifests"], json!([]));
    assert_eq!(body["schemaVersion"], 2);

    let empty_cfg = f.api.push_blob("ref", b"{}").await;
    let sig_layer = f.api.push_blob("ref", b"signature").await;
    let artifact = |artifact_type: Option<&str>, config_type: &str, note: &str| {
        let mut v = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": empty_cfg, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sig_layer, "size": 9}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
            "annotations": {"note": note},
        });
        if let Some(t) = artifact_type {
            v["artifactType"] = json!(t);
        }
        serde_json::to_vec(&v).unwrap()
    };
    let sig = artifact(
        Some("application/vnd.example.sig"),
        "application/vnd.oci.empty.v1+json",
        "sig",
    );
    let sbom = artifact(None, "application/vnd.example.sbom", "sbom");
    for m in [&sig, &sbom] {
        let r = f.api.put_manifest("ref", &sha256(m), OCI_MANIFEST, m).await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject").unwrap(), sd);
    }
    let r = f
        .api
        .send(Method::GET, &format!("/v2/ref/referrers/{sd}"), &[], None)
        .await;
    assert!(header(&r, "oci-filters-applied").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    let mut found: Vec<(String, String)> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["artifactType"].as_str().unwrap().to_owned(),
                d["annotations"]["note"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("application/vnd.example.sbom".to_owned(), "sbom".to_owned()),
            ("application/vnd.example.sig".to_owned(), "sig".to_owned())
        ]
    );
    let entry = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["note"] == "sig")
        .unwrap();
    assert_eq!(entry["digest"], json!(sha256(&sig)));
    assert_eq!(entry["size"], json!(sig.len()));
    assert_eq!(entry["mediaType"], json!(OCI_MANIFEST));

    let r = f
        .api
        .send(
            Method::GET,
            &format!("/v2/ref/referrers/{sd}?artifactType=application/vnd.example.sig"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);

    // Deleting a referrer removes it from the list.
    f.api
        .send(
            Method::DELETE,
            &format!("/v2/ref/manifests/{}", sha256(&sig)),
            &[],
            None,
        )
        .await;
    let r = f
        .api
        .send(Method::GET, &format!("/v2/ref/referrers/{sd}"), &[], None)
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A subject that does not exist (yet) is fine.
    let ghost = sha256(b"ghost");
    let orphan = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_cfg, "size": 2},
        "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": ghost, "size": 1},
    }))
    .unwrap();
    let r = f
        .api
        .put_manifest("ref", &sha256(&orphan), OCI_MANIFEST, &orphan)
        .await;
    assert_eq!(r.status(), 201);
    let r = f
        .api
        .send(
            Method::GET,
            &format!("/v2/ref/referrers/{ghost}"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = f
        .api
        .send(Method::GET, "/v2/ref/referrers/sha256:nothex", &[], None)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn invalid_input_is_a_4xx_with_the_right_code() {
    let f = start();
    let d = sha256(b"x");
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            "/v2/UPPER/tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a..b/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::POST,
            "/v2/-bad/blobs/uploads/".into(),
            400,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/{}/tags/list", "a".repeat(256)),
            400,
            "NAME_INVALID",
        ),
        // A read by a reference that cannot be a tag finds nothing, as in distribution and
        // the conformance suite; only a write of one is a bad request.
        (
            Method::GET,
            "/v2/ok/manifests/-tag".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::GET,
            format!("/v2/ok/manifests/{}", "t".repeat(129)),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::PUT,
            "/v2/ok/manifests/-tag".into(),
            400,
            "TAG_INVALID",
        ),
        (
            Method::GET,
            "/v2/ok/manifests/sha256:123".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/ok/blobs/sha256:xyz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/ok/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::HEAD,
            format!(
                "/v2/ok/blobs/{}",
                d.to_uppercase().replace("SHA256", "sha256")
            ),
            400,
            "",
        ),
        (
            Method::POST,
            "/v2/ok/blobs/uploads/?digest=sha256:short".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::POST,
            "/v2/ok/blobs/uploads/?mount=bogus&from=x".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::POST,
            format!("/v2/ok/blobs/uploads/?mount={d}&from=BAD"),
            400,
            "NAME_INVALID",
        ),
        (
            Method::PUT,
            "/v2/ok/manifests/t?tag=-x".into(),
            400,
            "TAG_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/ok/blobs/{d}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            Method::DELETE,
            "/v2/ok/blobs/uploads/not-an-id".into(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = f.api.send(method.clone(), &path, &[], None).await;
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        if !code.is_empty() {
            assert_eq!(error_code(r).await, code, "{method} {path}");
        }
    }
}

/// A client still sending a 16 MiB chunk when the registry refuses it gets the refusal, not a
/// broken pipe: the registry reads the rest before answering (Go clients failed with
/// `write: broken pipe` in about half of the runs when it answered and closed at once).
#[tokio::test]
async fn a_chunk_refused_before_it_is_read_still_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = start();
    let host = f.api.base.trim_start_matches("http://").to_owned();
    let chunk = vec![1u8; 16 << 20];
    for _ in 0..5 {
        let r = f
            .api
            .send(Method::POST, "/v2/c/blobs/uploads/", &[], None)
            .await;
        let loc = header(&r, "location").unwrap();
        let mut conn = tokio::net::TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Range: 100-{}\r\nContent-Length: {}\r\n\r\n",
            100 + chunk.len() - 1,
            chunk.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&chunk)
            .await
            .expect("the registry stopped reading before the chunk was sent");
        let mut answer = vec![0u8; 4096];
        let n = conn.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 416"), "{text}");
        // The connection still serves the next request.
        conn.write_all(format!("GET {loc} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let n = conn.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 204"));
    }
}

#[tokio::test]
async fn a_deleted_blob_is_gone_at_once_though_a_manifest_naming_it_was_just_pulled() {
    let f = start();
    let m = f.api.image_manifest("del/app", "gone").await;
    let r = f.api.put_manifest("del/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let pull_manifest = || async {
        let r = f
            .api
            .send(
                Method::GET,
                "/v2/del/app/manifests/v1",
                &[("accept", OCI_MANIFEST)],
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
    };
    // The pull takes the manifest's blobs as linked (no store request per layer)...
    pull_manifest().await;
    let blob = format!("/v2/del/app/blobs/{layer}");
    assert_eq!(
        f.api.send(Method::GET, &blob, &[], None).await.status(),
        200
    );
    // ...and a delete through this replica is seen at once, pulled again or not.
    let r = f.api.send(Method::DELETE, &blob, &[], None).await;
    assert_eq!(r.status(), 202);
    for _ in 0..2 {
        let r = f.api.send(Method::GET, &blob, &[], None).await;
        assert_eq!(r.status(), 404);
        assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
        pull_manifest().await;
    }
}
