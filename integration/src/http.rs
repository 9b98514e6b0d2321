//! A small raw-HTTP client for checking the API rule by rule.

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use crate::layout::sha256;

/// Talks to one registry at `base` (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    /// The HTTP client (redirects off, so 307s can be inspected).
    pub client: Client,
}

/// The OCI error code of an error response body.
pub async fn error_code(resp: Response) -> String {
    let body: Value = resp.json().await.expect("error body is JSON");
    body["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

/// A header's value as a string.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

impl Api {
    /// Gets a token for pushing to `repo` from the built-in issuer (service `berth-test`) as
    /// `user`, then starts an upload there with it: the upload's status (202, or 401 when the
    /// token lacks the push).
    pub async fn start_upload_with_issued_token(
        &self,
        user: &str,
        password: &str,
        repo: &str,
    ) -> u16 {
        let r = self
            .client
            .get(self.url("/auth/token"))
            .query(&[
                ("service", "berth-test"),
                ("scope", &format!("repository:{repo}:pull,push")),
            ])
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "token request");
        let token = r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        self.send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await
        .status()
        .as_u16()
    }

    /// A client for `base` that does not follow redirects.
    pub fn new(base: &str) -> Api {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Api {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// Resolves a Location header (absolute or a path) against the base.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// Sends a request with optional body and headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.expect("request failed")
    }

    /// The server's Prometheus text (`GET /metrics`).
    pub async fn metrics(&self) -> String {
        self.send(Method::GET, "/metrics", &[], None)
            .await
            .text()
            .await
            .expect("metrics body")
    }

    /// The sum of every series of the server's metrics whose line starts with `prefix` (a
    /// metric name, with labels to pick some of its series).
    pub async fn metric_total(&self, prefix: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Opens an upload session in `repo` (asserting 202) and returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status(), 202, "POST upload to {repo}");
        header(&r, "location").expect("202 without Location")
    }

    /// An upload Location with `digest=` added, for the finishing PUT.
    pub fn digest_url(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    /// Monolithic upload of `data` to `repo`; panics unless 201. Returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                Some(data.to_vec()),
            )
            .await;
        // A registry may open a session instead (distribution 2.8 does): finish it with a PUT,
        // as clients do.
        let resp = if resp.status() == 202 {
            let loc = header(&resp, "location").expect("202 without Location");
            self.send(
                Method::PUT,
                &Api::digest_url(&loc, &d),
                &[],
                Some(data.to_vec()),
            )
            .await
        } else {
            resp
        };
        let status = resp.status();
        if status != 201 {
            let body = resp.text().await.unwrap_or_default();
            panic!("blob push to {repo}: {status} {body}");
        }
        d
    }

    /// Chunked upload of `data` in PATCHes of `chunk` bytes with `Content-Range`, rotating over
    /// `apis` (replicas of one registry, starting with `self`), finished by a PUT on the next one.
    /// Returns the digest; panics on any unexpected status.
    pub async fn chunked_push(
        &self,
        others: &[&Api],
        repo: &str,
        data: &bytes::Bytes,
        chunk: usize,
    ) -> String {
        let d = sha256(data);
        self.chunked_push_of(others, repo, data, chunk, &d).await;
        d
    }

    /// [`Api::chunked_push`] of a blob whose digest the caller already has (a benchmark keeps
    /// the client's hashing out of the timed part, as a real client hashes before it uploads).
    pub async fn chunked_push_of(
        &self,
        others: &[&Api],
        repo: &str,
        data: &bytes::Bytes,
        chunk: usize,
        d: &str,
    ) {
        let apis: Vec<&Api> = std::iter::once(self)
            .chain(others.iter().copied())
            .collect();
        let mut loc = self.start_upload(repo).await;
        for (i, start) in (0..data.len()).step_by(chunk).enumerate() {
            let end = (start + chunk).min(data.len());
            let api = apis[i % apis.len()];
            let r = api
                .client
                .patch(api.url(&loc))
                .header("content-range", format!("{start}-{}", end - 1))
                .header("content-type", "application/octet-stream")
                .body(data.slice(start..end))
                .send()
                .await
                .expect("PATCH failed");
            assert_eq!(r.status(), 202, "PATCH {start}-{}", end - 1);
            loc = header(&r, "location").unwrap();
        }
        let last = apis[data.len().div_ceil(chunk) % apis.len()];
        let r = last
            .send(Method::PUT, &Api::digest_url(&loc, d), &[], None)
            .await;
        assert_eq!(r.status(), 201, "PUT upload: {:?}", r.text().await);
    }

    /// PUT of a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            Some(body.to_vec()),
        )
        .await
    }

    /// DELETE of a manifest by tag or digest; returns the response.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Response {
        self.send(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[],
            None,
        )
        .await
    }

    /// Pushes a config and one layer and returns an OCI image manifest naming them.
    pub async fn image_manifest(&self, repo: &str, seed: &str) -> Vec<u8> {
        let config = self
            .push_blob(repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes())
            .await;
        let layer = self
            .push_blob(repo, format!("layer {seed}").as_bytes())
            .await;
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 13 + seed.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 6 + seed.len()}],
        }))
        .unwrap()
    }
}
