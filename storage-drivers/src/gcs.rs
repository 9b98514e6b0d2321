//! Google Cloud Storage on its JSON API.
//!
//! object_store's GCS client speaks the XML API for reads, deletes, copies and multipart writes,
//! which no installable emulator implements; the JSON API is what GCS documents first and what
//! the emulator implements. object_store is still used for what it does well here: credentials
//! (service-account key, or Application Default Credentials such as GKE workload identity) and
//! V4 signed URLs (with the key, or IAM signBlob when there is none).
//!
//! Conditional writes use generation preconditions (`ifGenerationMatch`). Multipart writes upload
//! each part as its own object and compose them at completion; GCS caps a composite object at 1024
//! components, so the accumulated object is rewritten (which makes it a plain object again) before
//! it reaches the cap.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::object_store_driver::{DEFAULT_STALL, client_options};
use crate::percent::encode_unreserved;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use registry_core::storage::{
    ByteStream, GetResponse, Listing, MultipartHandle, ObjectInfo, ObjectVersion, PartPolicy,
    PartSlot, PutCondition, StorageDriver, StorageError, WrittenPart, resolve_range,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

/// Public GCS endpoint.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";
/// Resumable upload chunks must be multiples of 256 KiB.
const RESUMABLE_CHUNK: usize = 32 * 256 * 1024;
/// Sources per compose request (GCS's limit).
const COMPOSE_SOURCES: usize = 32;
/// Components a composite object may have (GCS's limit).
const COMPONENT_LIMIT: usize = 1024;

/// Settings of a GCS backend (distribution's `storage.gcs` keys plus an endpoint).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GcsOptions {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub root: String,
    /// API endpoint; the emulator's `http://127.0.0.1:PORT` in tests.
    pub endpoint: Option<String>,
    /// Service-account key JSON; Application Default Credentials when absent.
    pub service_account_key: Option<String>,
    /// Send no credentials (emulators only).
    pub anonymous: bool,
    /// Part size of uploads.
    pub part_size: u64,
    /// How long an answer may stall before the request is cut and sent again (default 30 s).
    pub stall_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for GcsOptions {
    // Keys and secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsOptions")
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .field("endpoint", &self.endpoint)
            .field("stall_timeout", &self.stall_timeout)
            .field(
                "service_account_key",
                &self.service_account_key.as_ref().map(|_| "<redacted>"),
            )
            .field("anonymous", &self.anonymous)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// The GCS driver.
#[derive(Clone)]
pub struct GcsDriver {
    http: reqwest::Client,
    base: String,
    bucket: String,
    root: String,
    policy: PartPolicy,
    store: Arc<GoogleCloudStorage>,
    anonymous: bool,
    component_limit: usize,
}

impl std::fmt::Debug for GcsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GcsDriver({}/{}, root={:?})",
            self.base, self.bucket, self.root
        )
    }
}

#[derive(Deserialize)]
struct ObjectResource {
    name: String,
    #[serde(deserialize_with = "u64_from_string")]
    size: u64,
    #[serde(default)]
    generation: Option<String>,
    /// When its data last changed (RFC 3339).
    #[serde(default)]
    updated: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    prefixes: Vec<String>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    done: bool,
    rewrite_token: Option<String>,
}

fn u64_from_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
        N::N(n) => Ok(n),
    }
}

fn info_of(o: &ObjectResource) -> ObjectInfo {
    ObjectInfo {
        size: o.size,
        // Without it, age checks (GC's grace window, a stale lease) would see every object as
        // new, forever.
        last_modified: o
            .updated
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(std::time::SystemTime::from),
        version: ObjectVersion {
            e_tag: None,
            version: o.generation.clone(),
        },
    }
}

/// Builds the GCS driver.
pub fn gcs_driver(o: &GcsOptions) -> Result<GcsDriver, StorageError> {
    let base = o
        .endpoint
        .clone()
        .unwrap_or_else(|| GCS_ENDPOINT.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_client_options(
            client_options(o.stall_timeout).with_allow_http(base.starts_with("http://")),
        )
        .with_bucket_name(&o.bucket)
        .with_base_url(&base);
    if let Some(key) = &o.service_account_key {
        b = b.with_service_account_key(key);
    }
    let store = Arc::new(b.build().map_err(StorageError::backend)?);
    Ok(GcsDriver {
        // The same deadlines as the other object stores (client_options).
        http: reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(o.stall_timeout.unwrap_or(DEFAULT_STALL))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(StorageError::backend)?,
        base,
        bucket: o.bucket.clone(),
        root: o.root.trim_matches('/').to_owned(),
        policy: PartPolicy {
            part_size: o.part_size,
            fixed_size: true,
        },
        store,
        anonymous: o.anonymous,
        component_limit: COMPONENT_LIMIT,
    })
}

impl GcsDriver {
    /// Lowers the composite-component cap, so tests reach the rewrite path with few parts.
    pub fn with_component_limit(mut self, limit: usize) -> Self {
        self.component_limit = limit.max(COMPOSE_SOURCES + 1);
        self
    }

    fn name(&self, key: &str) -> String {
        let key = key.trim_end_matches('/');
        if self.root.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.root)
        }
    }

    fn prefix_name(&self, prefix: &str) -> String {
        if self.root.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.root)
        }
    }

    fn key_of(&self, name: &str) -> String {
        if self.root.is_empty() {
            name.to_owned()
        } else {
            name.strip_prefix(&self.root)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(name)
                .to_owned()
        }
    }

    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            encode_unreserved(&self.bucket),
            encode_unreserved(name)
        )
    }

    fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base,
            encode_unreserved(&self.bucket)
        )
    }

    async fn authed(&self, rb: RequestBuilder) -> Result<RequestBuilder, StorageError> {
        if self.anonymous {
            return Ok(rb);
        }
        let cred = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(StorageError::backend)?;
        Ok(rb.bearer_auth(&cred.bearer))
    }

    /// Sends a request and maps GCS's statuses onto storage errors.
    async fn send(&self, rb: RequestBuilder, key: &str) -> Result<Response, StorageError> {
        let resp = self
            .authed(rb)
            .await?
            .send()
            .await
            .map_err(|e| StorageError::Backend(format!("{key}: {e}")))?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::PERMANENT_REDIRECT => Ok(resp),
            StatusCode::NOT_FOUND => Err(StorageError::NotFound(key.to_owned())),
            StatusCode::PRECONDITION_FAILED => Err(StorageError::Precondition(key.to_owned())),
            s => {
                let body = resp.text().await.unwrap_or_default();
                Err(StorageError::Backend(format!(
                    "{key}: GCS answered {s}: {body}"
                )))
            }
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        resp: Response,
        key: &str,
    ) -> Result<T, StorageError> {
        let body = resp
            .bytes()
            .await
            .map_err(|e| StorageError::Backend(format!("{key}: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| StorageError::Backend(format!("{key}: unexpected GCS answer: {e}")))
    }

    async fn resource(&self, key: &str) -> Result<ObjectResource, StorageError> {
        let resp = self
            .send(self.http.get(self.object_url(&self.name(key))), key)
            .await?;
        Self::json(resp, key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<&str>,
    ) -> Result<ObjectList, StorageError> {
        let mut q = vec![("prefix", self.prefix_name(prefix))];
        if delimiter {
            q.push(("delimiter", "/".to_owned()));
        }
        if let Some(t) = token {
            q.push(("pageToken", t.to_owned()));
        }
        let url = format!(
            "{}/storage/v1/b/{}/o",
            self.base,
            encode_unreserved(&self.bucket)
        );
        let resp = self.send(self.http.get(url).query(&q), prefix).await?;
        Self::json(resp, prefix).await
    }

    /// Server-side copy; loops while GCS reports the rewrite unfinished (large objects).
    async fn rewrite(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let mut token: Option<String> = None;
        loop {
            let url = format!(
                "{}/rewriteTo/b/{}/o/{}",
                self.object_url(from),
                encode_unreserved(&self.bucket),
                encode_unreserved(to)
            );
            let mut rb = self.http.post(url).json(&serde_json::json!({}));
            if let Some(t) = &token {
                rb = rb.query(&[("rewriteToken", t)]);
            }
            let r: RewriteResponse = Self::json(self.send(rb, from).await?, from).await?;
            if r.done {
                return Ok(());
            }
            token = r.rewrite_token;
            if token.is_none() {
                return Err(StorageError::Backend(format!(
                    "{from}: rewrite unfinished without a token"
                )));
            }
        }
    }

    async fn compose(
        &self,
        sources: &[(String, Option<String>)],
        to: &str,
    ) -> Result<(), StorageError> {
        let source_objects: Vec<serde_json::Value> = sources
            .iter()
            .map(|(name, generation)| match generation {
                Some(g) => serde_json::json!({ "name": name, "generation": g }),
                None => serde_json::json!({ "name": name }),
            })
            .collect();
        let body = serde_json::json!({
            "sourceObjects": source_objects,
            "destination": { "contentType": "application/octet-stream" },
        });
        self.send(
            self.http
                .post(format!("{}/compose", self.object_url(to)))
                .json(&body),
            to,
        )
        .await?;
        Ok(())
    }

    fn part_name(&self, key: &str, handle: &MultipartHandle, index: usize) -> String {
        self.name(&format!("{key}-parts/{}/{index:06}", handle.upload_id))
    }

    /// The query of an upload request: its type, the object name and an optional precondition.
    fn upload_query(
        kind: &str,
        name: &str,
        generation_match: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut q = vec![("uploadType", kind.to_owned()), ("name", name.to_owned())];
        if let Some(g) = generation_match {
            q.push(("ifGenerationMatch", g.to_owned()));
        }
        q
    }

    /// Opens a resumable upload session and returns its URL.
    async fn start_resumable(
        &self,
        name: &str,
        generation_match: Option<&str>,
        key: &str,
    ) -> Result<String, StorageError> {
        let q = Self::upload_query("resumable", name, generation_match);
        let rb = self
            .http
            .post(self.upload_url())
            .query(&q)
            .json(&serde_json::json!({}));
        let resp = self.send(rb, key).await?;
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                StorageError::Backend(format!("{key}: resumable upload without a session URL"))
            })
    }

    async fn upload_media(
        &self,
        name: &str,
        data: Bytes,
        generation_match: Option<&str>,
        key: &str,
    ) -> Result<ObjectResource, StorageError> {
        if data.is_empty() {
            // A zero-length object is finished with `bytes */0` (the emulator cannot take an empty
            // media upload; GCS takes both).
            let session = self.start_resumable(name, generation_match, key).await?;
            let resp = self
                .send(
                    self.http
                        .put(&session)
                        .header("content-range", "bytes */0")
                        .body(Bytes::new()),
                    key,
                )
                .await?;
            return Self::json(resp, key).await;
        }
        let q = Self::upload_query("media", name, generation_match);
        let rb = self
            .http
            .post(self.upload_url())
            .query(&q)
            .header("content-type", "application/octet-stream")
            .body(data);
        Self::json(self.send(rb, key).await?, key).await
    }
}

#[async_trait]
impl StorageDriver for GcsDriver {
    fn name(&self) -> &'static str {
        "gcs"
    }

    fn part_policy(&self) -> PartPolicy {
        self.policy
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError> {
        let meta = self.resource(key).await?;
        let size = meta.size;
        let range = resolve_range(range, size)?;
        let mut rb = self
            .http
            .get(self.object_url(&meta.name))
            .query(&[("alt", "media")]);
        if let Some(g) = &meta.generation {
            // Pin the generation that was measured, so size and bytes agree.
            rb = rb.query(&[("generation", g)]);
        }
        if range != (0..size) {
            rb = rb.header("range", format!("bytes={}-{}", range.start, range.end - 1));
        }
        if size == 0 {
            return Ok(GetResponse {
                info: info_of(&meta),
                range,
                body: futures::stream::empty().boxed(),
            });
        }
        let resp = self.send(rb, key).await?;
        let owned_key = key.to_owned();
        let body = resp
            .bytes_stream()
            .map_err(move |e| StorageError::Backend(format!("{owned_key}: {e}")))
            .boxed();
        Ok(GetResponse {
            info: info_of(&meta),
            range,
            body,
        })
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        Ok(info_of(&self.resource(key).await?))
    }

    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        let name = self.name(key);
        let result = match &condition {
            PutCondition::Overwrite => self.upload_media(&name, data, None, key).await,
            PutCondition::CreateOnly => self.upload_media(&name, data, Some("0"), key).await,
            PutCondition::IfVersion(v) => match &v.version {
                Some(g) => self.upload_media(&name, data, Some(g), key).await,
                None => return Err(StorageError::Precondition(key.to_owned())),
            },
        };
        match (result, condition) {
            (Err(StorageError::Precondition(k)), PutCondition::CreateOnly) => {
                Err(StorageError::AlreadyExists(k))
            }
            (r, _) => r.map(|o| info_of(&o)),
        }
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<u64, StorageError> {
        let session = self.start_resumable(&self.name(key), None, key).await?;
        let mut buf: Vec<Bytes> = Vec::new();
        let mut buf_len = 0usize;
        let mut sent = 0u64;
        let result: Result<u64, StorageError> = async {
            loop {
                let next = body.next().await.transpose()?;
                if let Some(c) = &next {
                    buf_len += c.len();
                    buf.push(c.clone());
                }
                let last = next.is_none();
                // Full chunks as they fill; at the end, the rest (possibly nothing) with the total.
                while buf_len >= RESUMABLE_CHUNK || last {
                    let take = if last { buf_len } else { RESUMABLE_CHUNK };
                    let all = Bytes::from(std::mem::take(&mut buf).concat());
                    let (chunk, rest) = (all.slice(..take), all.slice(take..));
                    buf_len = rest.len();
                    if !rest.is_empty() {
                        buf.push(rest);
                    }
                    let range = match (take, last) {
                        (0, true) => format!("bytes */{sent}"),
                        (n, true) => {
                            format!("bytes {sent}-{}/{}", sent + n as u64 - 1, sent + n as u64)
                        }
                        (n, false) => format!("bytes {sent}-{}/*", sent + n as u64 - 1),
                    };
                    let rb = self
                        .http
                        .put(&session)
                        .header("content-range", range)
                        .body(chunk);
                    self.send(rb, key).await?;
                    sent += take as u64;
                    if last {
                        return Ok(sent);
                    }
                }
            }
        }
        .await;
        if result.is_err() {
            let _ = self.http.delete(&session).send().await;
        }
        result
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self
            .send(self.http.delete(self.object_url(&self.name(key))), key)
            .await
        {
            Ok(_) | Err(StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let keys: Vec<String> = self.list_recursive(prefix).try_collect().await?;
        futures::stream::iter(keys)
            .map(|k| async move { self.delete(&k).await })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StorageError> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, true, token.as_deref()).await?;
            listing
                .objects
                .extend(page.items.iter().map(|o| self.key_of(&o.name)));
            listing
                .prefixes
                .extend(page.prefixes.iter().filter_map(|p| {
                    p.trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .map(str::to_owned)
                }));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(listing),
            }
        }
    }

    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>> {
        let this = self.clone();
        let prefix = prefix.to_owned();
        futures::stream::try_unfold(
            (Some(None::<String>), this, prefix),
            |(token, this, prefix)| async move {
                let Some(token) = token else { return Ok(None) };
                let page = this.list_page(&prefix, false, token.as_deref()).await?;
                let keys: Vec<Result<String, StorageError>> = page
                    .items
                    .iter()
                    .map(|o| Ok(this.key_of(&o.name)))
                    .collect();
                let next = page.next_page_token.map(Some);
                Ok(Some((futures::stream::iter(keys), (next, this, prefix))))
            },
        )
        .try_flatten()
        .boxed()
    }

    fn lists_with_info(&self) -> bool {
        true
    }

    async fn list_with_info(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectInfo)>, StorageError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, false, token.as_deref()).await?;
            out.extend(
                page.items
                    .iter()
                    .map(|o| (self.key_of(&o.name), info_of(o))),
            );
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.rewrite(&self.name(from), &self.name(to)).await
    }

    async fn publish(&self, from: &str, to: &str, _size: u64) -> Result<(), StorageError> {
        // A rewrite handles any size; the source goes with the session's delete right after
        // (a move, a copy then a delete, could not be tried again once the delete was applied).
        self.copy(from, to).await
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        let url = self
            .store
            .signed_url(Method::GET, &Path::from(self.name(key)), expires_in)
            .await
            .map_err(StorageError::backend)?;
        Ok(Some(url.to_string()))
    }

    async fn create_multipart(&self, _key: &str) -> Result<MultipartHandle, StorageError> {
        Ok(MultipartHandle {
            upload_id: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        let index = slot.index;
        let name = self.part_name(key, handle, index);
        let o = self
            .upload_media(&name, Bytes::from(data.concat()), None, key)
            .await?;
        // The generation pins exactly this attempt: a rewritten part after a crash is a new one.
        Ok(WrittenPart {
            content_id: o.generation.unwrap_or_default(),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        parts: &[WrittenPart],
        _size: u64,
    ) -> Result<(), StorageError> {
        let target = self.name(key);
        let sources: Vec<(String, Option<String>)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    self.part_name(key, handle, i),
                    Some(p.content_id.clone()).filter(|g| !g.is_empty()),
                )
            })
            .collect();
        if sources.is_empty() {
            self.upload_media(&target, Bytes::new(), None, key).await?;
        }
        let flat = self.name(&format!("{key}-parts/{}/flattened", handle.upload_id));
        let mut acc: Option<(String, Option<String>)> = None;
        let mut components = 0usize;
        for batch in sources.chunks(COMPOSE_SOURCES - 1) {
            let mut group: Vec<(String, Option<String>)> = acc.iter().cloned().collect();
            group.extend(batch.iter().cloned());
            self.compose(&group, &target).await?;
            components += batch.len();
            acc = Some((target.clone(), None));
            if components + COMPOSE_SOURCES > self.component_limit {
                // A rewrite produces a plain object, resetting the component count to one.
                self.rewrite(&target, &flat).await?;
                acc = Some((flat.clone(), None));
                components = 1;
            }
        }
        self.delete_prefix(&format!("{key}-parts/{}/", handle.upload_id))
            .await
    }

    async fn dangling_multiparts(
        &self,
        _prefix: &str,
        _before: std::time::SystemTime,
    ) -> Result<Vec<registry_core::storage::DanglingMultipart>, StorageError> {
        // Parts are objects under the session's prefix, removed with it.
        Ok(Vec::new())
    }

    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError> {
        self.delete_prefix(&format!("{key}-parts/{}/", handle.upload_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_fully_encoded() {
        assert_eq!(
            encode_unreserved("docker/registry/v2/blobs/sha256:ab"),
            "docker%2Fregistry%2Fv2%2Fblobs%2Fsha256%3Aab"
        );
    }

    #[test]
    fn sizes_arrive_as_strings() {
        let o: ObjectResource =
            serde_json::from_str(r#"{"name":"a","size":"42","generation":"7"}"#).unwrap();
        assert_eq!((o.size, o.generation.as_deref()), (42, Some("7")));
    }
}
