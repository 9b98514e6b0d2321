//! Amazon S3 (and S3-compatible stores) through object_store, plus UploadPartCopy for copies
//! above the CopyObject limit, which object_store does not offer.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use registry_core::storage::{PartPolicy, StorageError};

use crate::object_store_driver::{LargeCopy, ObjectStoreDriver, client_options, no_retries};
use crate::percent::encode_unreserved;

/// CopyObject refuses sources larger than this.
pub const COPY_OBJECT_LIMIT: u64 = 5 << 30;

/// The smallest part S3 takes but for the last; some stores (Garage) refuse to copy any source
/// smaller than this into a part, even the last.
const MIN_PART: u64 = 5 << 20;

/// Settings of an S3 backend (distribution's `storage.s3` keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Region; from the environment (`AWS_REGION`) when absent.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store (`regionendpoint`).
    pub endpoint: Option<String>,
    /// Static access key; the standard credential chain is used when absent.
    pub access_key: Option<String>,
    /// Static secret key.
    pub secret_key: Option<String>,
    /// Session token for temporary static credentials.
    pub session_token: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// Key prefix inside the bucket.
    pub root: String,
    /// Upload part size (every part but the last).
    pub part_size: u64,
    /// Objects above this size are copied with UploadPartCopy instead of CopyObject.
    pub copy_threshold: u64,
    /// Part size for UploadPartCopy.
    pub copy_part_size: u64,
    /// Endpoint clients reach the bucket at, used to sign redirect URLs (e.g. a public MinIO URL).
    pub public_endpoint: Option<String>,
    /// How long an answer may stall before the request is cut and sent again (default 30 s).
    pub stall_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for S3Options {
    // Keys and secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("force_path_style", &self.force_path_style)
            .field("root", &self.root)
            .field("part_size", &self.part_size)
            .field("copy_threshold", &self.copy_threshold)
            .field("copy_part_size", &self.copy_part_size)
            .field("public_endpoint", &self.public_endpoint)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

fn builder(o: &S3Options, endpoint: Option<&str>) -> AmazonS3Builder {
    // from_env gives the standard chain: AWS_* variables, web identity (IRSA), container
    // credentials (EKS Pod Identity, ECS) and instance metadata.
    // Client options first: with_client_options replaces the whole set, allow_http included.
    let mut b = AmazonS3Builder::from_env()
        .with_client_options(client_options(o.stall_timeout))
        .with_retry(no_retries())
        .with_bucket_name(&o.bucket);
    if let Some(r) = &o.region {
        b = b.with_region(r);
    }
    if let Some(e) = endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    if let (Some(k), Some(s)) = (&o.access_key, &o.secret_key) {
        b = b.with_access_key_id(k).with_secret_access_key(s);
        if let Some(t) = &o.session_token {
            b = b.with_token(t);
        }
    }
    b.with_virtual_hosted_style_request(!o.force_path_style)
}

/// Builds the S3 driver.
pub fn s3_driver(o: &S3Options) -> Result<ObjectStoreDriver, StorageError> {
    let store = Arc::new(
        builder(o, o.endpoint.as_deref())
            .build()
            .map_err(StorageError::backend)?,
    );
    let signer: Arc<dyn object_store::signer::Signer> = match &o.public_endpoint {
        // The host is part of a SigV4 signature: sign for the endpoint clients will use.
        Some(public) => Arc::new(
            builder(o, Some(public))
                .build()
                .map_err(StorageError::backend)?,
        ),
        None => store.clone(),
    };
    let signed = Arc::new(SignedRequests {
        store: store.clone(),
        bucket: o.bucket.clone(),
        endpoint: o.endpoint.clone(),
        region: o
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into()),
        path_style: o.force_path_style,
        http: reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(
                o.stall_timeout
                    .unwrap_or(crate::object_store_driver::DEFAULT_STALL),
            )
            .build()
            .map_err(StorageError::backend)?,
    });
    let copier = PartCopy {
        s3: signed.clone(),
        threshold: o.copy_threshold,
        part_size: o.copy_part_size.max(MIN_PART),
        short_sources_refused: std::sync::atomic::AtomicBool::new(false),
    };
    Ok(ObjectStoreDriver::new(
        "s3",
        store.clone(),
        store,
        Some(signer),
        &o.root,
        PartPolicy {
            part_size: o.part_size,
            fixed_size: true,
        },
    )
    .with_large_copy(Arc::new(copier))
    .with_multipart_listing(Arc::new(OpenUploads { s3: signed })))
}

/// S3 requests object_store does not make, signed with its SigV4 and its credentials.
#[derive(Debug)]
struct SignedRequests {
    store: Arc<AmazonS3>,
    bucket: String,
    endpoint: Option<String>,
    region: String,
    path_style: bool,
    http: reqwest::Client,
}

/// Server-side copy of large objects with UploadPartCopy.
#[derive(Debug)]
struct PartCopy {
    s3: Arc<SignedRequests>,
    threshold: u64,
    part_size: u64,
    /// Set once the store refused to copy a short source into a part: such parts are sent
    /// as bytes from then on, without asking again.
    short_sources_refused: std::sync::atomic::AtomicBool,
}

/// Open multipart uploads, by ListMultipartUploads.
#[derive(Debug)]
struct OpenUploads {
    s3: Arc<SignedRequests>,
}

fn xml_etag(body: &str) -> Option<String> {
    let start = body.find("<ETag>")? + "<ETag>".len();
    let end = start + body[start..].find("</ETag>")?;
    Some(
        body[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\""),
    )
}

impl SignedRequests {
    fn object_url(&self, key: &Path) -> String {
        match (&self.endpoint, self.path_style) {
            (Some(e), true) => format!("{}/{}/{key}", e.trim_end_matches('/'), self.bucket),
            (Some(e), false) => {
                let (scheme, host) = e.split_once("://").unwrap_or(("https", e));
                format!(
                    "{scheme}://{}.{}/{key}",
                    self.bucket,
                    host.trim_end_matches('/')
                )
            }
            (None, true) => format!(
                "https://s3.{}.amazonaws.com/{}/{key}",
                self.region, self.bucket
            ),
            (None, false) => format!(
                "https://{}.s3.{}.amazonaws.com/{key}",
                self.bucket, self.region
            ),
        }
    }

    /// The bucket's own URL (for bucket-level requests).
    fn bucket_url(&self) -> String {
        self.object_url(&Path::from(""))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Sends a signed `method` request to `url` with `headers`; returns the status and body.
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, String), StorageError> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut req = req
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(StorageError::backend)?;
        let cred = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(StorageError::backend)?;
        AwsAuthorizer::new(&cred, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(StorageError::backend)?;
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(StorageError::backend)?;
        let mut out = self.http.request(method, url);
        for (k, v) in req.headers() {
            out = out.header(k.as_str(), v.as_bytes());
        }
        let resp = out.send().await.map_err(StorageError::backend)?;
        let status = resp.status();
        let body = resp.text().await.map_err(StorageError::backend)?;
        Ok((status, body))
    }
}

impl PartCopy {
    async fn copy_part(
        &self,
        from: &Path,
        to: &Path,
        upload_id: &str,
        part: usize,
        range: (u64, u64),
    ) -> Result<Result<String, PartCopyRefused>, StorageError> {
        let url = format!(
            "{}?partNumber={}&uploadId={}",
            self.s3.object_url(to),
            part + 1,
            encode_unreserved(upload_id)
        );
        let (status, body) = self
            .s3
            .send(
                "PUT",
                &url,
                &[
                    ("x-amz-copy-source", format!("{}/{from}", self.s3.bucket)),
                    (
                        "x-amz-copy-source-range",
                        format!("bytes={}-{}", range.0, range.1),
                    ),
                ],
            )
            .await?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            return Ok(Err(PartCopyRefused(body)));
        }
        if !status.is_success() {
            return Err(StorageError::Backend(format!(
                "UploadPartCopy {status}: {body}"
            )));
        }
        xml_etag(&body).map(Ok).ok_or_else(|| {
            StorageError::Backend(format!("UploadPartCopy answer without ETag: {body}"))
        })
    }
}

/// A store's 400 to an UploadPartCopy (its body): the copy is not possible as asked, and
/// sending it again will not change that.
#[derive(Debug)]
struct PartCopyRefused(String);

impl PartCopyRefused {
    /// The refusal as the error of a copy that cannot go another way.
    fn into_error(self) -> StorageError {
        StorageError::Backend(format!("UploadPartCopy 400: {}", self.0))
    }
}

#[async_trait::async_trait]
impl LargeCopy for PartCopy {
    fn threshold(&self) -> u64 {
        // An object below the smallest part would be copied as one part: CopyObject does that
        // in one request, and every store takes it.
        self.threshold.max(MIN_PART)
    }

    async fn copy_into_part(
        &self,
        from: &Path,
        to: &Path,
        upload_id: &str,
        index: usize,
        len: u64,
    ) -> Result<Option<String>, StorageError> {
        use std::sync::atomic::Ordering;
        if len == 0 {
            return Err(StorageError::Backend(
                "an empty part cannot be copied".into(),
            ));
        }
        if len < MIN_PART && self.short_sources_refused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match self
            .copy_part(from, to, upload_id, index, (0, len - 1))
            .await?
        {
            Ok(etag) => Ok(Some(etag)),
            Err(PartCopyRefused(body)) if len < MIN_PART => {
                tracing::info!(
                    answer = %body,
                    "the store refuses to copy a source shorter than 5 MiB into a part: such parts are sent as bytes"
                );
                self.short_sources_refused.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(refused) => Err(refused.into_error()),
        }
    }

    async fn copy(&self, from: &Path, to: &Path, size: u64) -> Result<(), StorageError> {
        let id = self
            .s3
            .store
            .create_multipart(to)
            .await
            .map_err(StorageError::backend)?;
        let mut parts = Vec::new();
        let mut start = 0u64;
        while start < size {
            let end = (start + self.part_size).min(size) - 1;
            let copied = self
                .copy_part(from, to, &id, parts.len(), (start, end))
                .await
                .and_then(|copied| copied.map_err(PartCopyRefused::into_error));
            match copied {
                Ok(etag) => parts.push(PartId { content_id: etag }),
                Err(e) => {
                    let _ = self.s3.store.abort_multipart(to, &id).await;
                    return Err(e);
                }
            }
            start = end + 1;
        }
        self.s3
            .store
            .complete_multipart(to, &id, parts)
            .await
            .map_err(StorageError::backend)?;
        Ok(())
    }
}

/// The text of every `<tag>` element in `xml`, unescaped.
fn xml_all(xml: &str, tag: &str) -> std::vec::IntoIter<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|rest| {
            rest.split_once(close.as_str()).map(|(v, _)| {
                v.replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&apos;", "'")
                    .replace("&amp;", "&")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// Seconds since the epoch of an S3 timestamp (`2026-12-01T17:30:00.000Z`).
fn parse_s3_time(t: &str) -> Option<std::time::SystemTime> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = t.trim().trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let mut hms = time.split(':');
    let (h, mi) = (num(hms.next()?)?, num(hms.next()?)?);
    let s = num(hms.next()?.split('.').next()?)?;
    // Days from 1970-01-01 of a proleptic Gregorian date.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
}

#[async_trait::async_trait]
impl crate::object_store_driver::MultipartListing for OpenUploads {
    async fn open_uploads(
        &self,
        prefix: &Path,
        before: std::time::SystemTime,
    ) -> Result<Vec<(Path, String)>, StorageError> {
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = format!(
                "{}?uploads=&prefix={}",
                self.s3.bucket_url(),
                encode_unreserved(prefix.as_ref())
            );
            if let Some((key, id)) = &markers {
                url.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode_unreserved(key),
                    encode_unreserved(id)
                ));
            }
            let (status, body) = self.s3.send("GET", &url, &[]).await?;
            if !status.is_success() {
                return Err(StorageError::Backend(format!(
                    "ListMultipartUploads {status}: {body}"
                )));
            }
            for upload in body.split("<Upload>").skip(1) {
                let (Some(key), Some(id)) = (
                    xml_all(upload, "Key").next(),
                    xml_all(upload, "UploadId").next(),
                ) else {
                    continue;
                };
                let old = xml_all(upload, "Initiated")
                    .next()
                    .and_then(|t| parse_s3_time(&t))
                    .is_some_and(|t| t < before);
                if old {
                    found.push((Path::from(key), id));
                }
            }
            let truncated = xml_all(&body, "IsTruncated").next().as_deref() == Some("true");
            let next = (
                xml_all(&body, "NextKeyMarker").next(),
                xml_all(&body, "NextUploadIdMarker").next(),
            );
            match (truncated, next) {
                (true, (Some(k), Some(i))) if markers.as_ref() != Some(&(k.clone(), i.clone())) => {
                    markers = Some((k, i));
                }
                _ => return Ok(found),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_listing_parts() {
        let xml = "<ListMultipartUploadsResult><Upload><Key>a&amp;b</Key><UploadId>u1</UploadId><Initiated>2026-12-01T17:30:05.000Z</Initiated></Upload><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        assert_eq!(xml_all(xml, "Key").collect::<Vec<_>>(), vec!["a&b"]);
        assert_eq!(
            parse_s3_time("2026-12-01T17:30:05.000Z")
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_796_146_205
        );
        assert_eq!(
            parse_s3_time("1970-01-01T00:00:00Z")
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            0
        );
        assert!(parse_s3_time("yesterday").is_none());
    }

    #[test]
    fn etag_from_copy_part_result() {
        let xml = r#"<?xml version="1.0"?><CopyPartResult><LastModified>x</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>"#;
        assert_eq!(xml_etag(xml).as_deref(), Some("\"abc\""));
        assert_eq!(xml_etag("<x/>"), None);
    }

    #[test]
    fn urls() {
        let p = SignedRequests {
            store: Arc::new(
                AmazonS3Builder::new()
                    .with_bucket_name("b")
                    .with_region("r")
                    .build()
                    .unwrap(),
            ),
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:9000/".into()),
            region: "r".into(),
            path_style: true,
            http: reqwest::Client::new(),
        };
        assert_eq!(
            p.object_url(&Path::from("a/b")),
            "http://127.0.0.1:9000/b/a/b"
        );
    }
}

#[cfg(test)]
mod redaction {
    #[test]
    fn debug_hides_secrets() {
        let o = super::S3Options {
            secret_key: Some("TOPSECRET".into()),
            access_key: Some("AK".into()),
            ..Default::default()
        };
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("TOPSECRET") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
