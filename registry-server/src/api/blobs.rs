//! Blob reads (with Range and presigned redirects) and deletes.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use registry_core::{Digest, RegistryError, RepositoryName};

use super::error::{ApiError, ApiResult};
use super::{Ctx, empty, parse_name};
use crate::content::Blob;

/// A parsed `Range: bytes=...` request for one range.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `bytes=a-b` or `bytes=a-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a single-range header; multi-range and malformed headers are ignored (`None`).
    pub(crate) fn parse(h: &str) -> Option<ByteRange> {
        let spec = h.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
        };
        match (a.trim(), b.trim()) {
            ("", n) => Some(ByteRange::Suffix(num(n)?)),
            (s, "") => Some(ByteRange::From {
                start: num(s)?,
                end: None,
            }),
            (s, e) => {
                let (start, end) = (num(s)?, num(e)?);
                (start <= end).then_some(ByteRange::From {
                    start,
                    end: Some(end),
                })
            }
        }
    }

    /// The half-open range within an object of `size` bytes, or `None` if unsatisfiable.
    pub(crate) fn resolve(&self, size: u64) -> Option<std::ops::Range<u64>> {
        match *self {
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some(size.saturating_sub(n)..size).filter(|_| size > 0),
            ByteRange::From { start, end } => {
                let end = end.map_or(size, |e| (e + 1).min(size));
                (start < size).then_some(start..end)
            }
        }
    }
}

pub(crate) async fn get(ctx: &Ctx, name: &str, digest: &str) -> ApiResult {
    let name = parse_name(name)?;
    let digest: Digest = digest.parse().map_err(RegistryError::from)?;
    let registry = &ctx.app.registry;
    let head = ctx.method == Method::HEAD;
    let source = ctx.app.content.source(&name);
    // A pull's GET needs neither the size nor the bytes, only the link and a signed URL: one
    // store request fewer per layer (unless a notification wants the size).
    if !head
        && ctx.app.settings.redirect
        && !ctx.app.notifier.enabled()
        && source.links_locally(&digest).await?
        && let Some(resp) = redirect(ctx, &digest).await?
    {
        return Ok(resp);
    }
    let info = match source.blob(&digest, head).await? {
        Blob::Stored(info) => info,
        Blob::Fetched { length, body } => return Ok(fetched(ctx, &name, &digest, length, body)),
    };
    if ctx.method == Method::GET {
        ctx.notify(
            "pull",
            &name,
            "application/octet-stream",
            &digest,
            info.size,
            None,
        );
    }
    let common = blob_headers(&digest);
    if head {
        let mut resp = empty(StatusCode::OK, &common);
        set_length_and_type(&mut resp, info.size);
        return Ok(resp);
    }
    if ctx.app.settings.redirect
        && let Some(resp) = redirect(ctx, &digest).await?
    {
        return Ok(resp);
    }
    let requested = ctx.header("range").and_then(ByteRange::parse);
    let range = match &requested {
        None => None,
        Some(r) => match r.resolve(info.size) {
            Some(r) => Some(r),
            None => return Err(RegistryError::BlobRangeInvalid { size: info.size }.into()),
        },
    };
    // An empty blob has no satisfiable range: serve it whole.
    let read = if info.size == 0 { None } else { range.clone() };
    let got = registry.read_blob(&digest, read).await?;
    let len = got.range.end - got.range.start;
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Body::from_stream(got.body)).into_response();
    for (k, v) in &common {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(*k, v);
        }
    }
    if range.is_some()
        && let Ok(v) = format!(
            "bytes {}-{}/{}",
            got.range.start,
            got.range.end.saturating_sub(1),
            info.size
        )
        .parse()
    {
        resp.headers_mut().insert("content-range", v);
    }
    set_length_and_type(&mut resp, len);
    Ok(resp)
}

/// A blob of a cached repository that the store lacks, as the upstream streams it (whole:
/// a range of it could not be verified).
fn fetched(
    ctx: &Ctx,
    name: &RepositoryName,
    digest: &Digest,
    length: Option<u64>,
    body: Option<registry_core::storage::ByteStream>,
) -> Response {
    let headers = [
        ("docker-content-digest", digest.to_string()),
        ("etag", format!("\"{digest}\"")),
        ("content-type", "application/octet-stream".to_owned()),
    ];
    let mut resp = match body {
        None => empty(StatusCode::OK, &headers),
        Some(body) => {
            ctx.notify(
                "pull",
                name,
                "application/octet-stream",
                digest,
                length.unwrap_or(0),
                None,
            );
            let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
            for (k, v) in &headers {
                if let Ok(v) = v.parse() {
                    resp.headers_mut().insert(*k, v);
                }
            }
            resp
        }
    };
    if let Some(n) = length {
        resp.headers_mut().insert("content-length", n.into());
    }
    resp
}

/// Headers every answer with a blob's bytes carries.
fn blob_headers(digest: &Digest) -> [(&'static str, String); 4] {
    [
        ("docker-content-digest", digest.to_string()),
        ("etag", format!("\"{digest}\"")),
        ("accept-ranges", "bytes".to_owned()),
        ("cache-control", "max-age=31536000".to_owned()),
    ]
}

/// A redirect to a presigned URL of the blob's bytes, where the store signs one.
async fn redirect(ctx: &Ctx, digest: &Digest) -> Result<Option<Response>, RegistryError> {
    let Some(url) = ctx
        .app
        .registry
        .presign_blob(digest, ctx.app.settings.redirect_expiry)
        .await?
    else {
        return Ok(None);
    };
    // S3 signs for the public endpoint itself; Azure and GCS signatures do not cover the host.
    let url = match &ctx.app.settings.redirect_public_endpoint {
        Some(public) => rewrite_origin(&url, public),
        None => url,
    };
    let mut headers = blob_headers(digest).to_vec();
    headers.push(("location", url));
    Ok(Some(empty(StatusCode::TEMPORARY_REDIRECT, &headers)))
}

/// Points a presigned URL at the public scheme, host and port, keeping path and signature.
fn rewrite_origin(url: &str, public: &url::Url) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let ok = u.set_scheme(public.scheme()).is_ok()
        && u.set_host(public.host_str()).is_ok()
        && u.set_port(public.port()).is_ok();
    if ok { u.to_string() } else { url.to_owned() }
}

fn set_length_and_type(resp: &mut Response, len: u64) {
    resp.headers_mut().insert("content-length", len.into());
    resp.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
}

pub(crate) async fn delete(ctx: &Ctx, name: &str, digest: &str) -> ApiResult {
    let name = parse_name(name)?;
    let digest: Digest = digest.parse().map_err(RegistryError::from)?;
    ctx.app
        .registry
        .delete_blob(&name, &digest)
        .await
        .map_err(ApiError::from)?;
    ctx.notify(
        "delete",
        &name,
        "application/octet-stream",
        &digest,
        0,
        None,
    );
    ctx.audit(
        "delete",
        &name,
        super::Audited {
            reference: "",
            digest: Some(&digest),
            previous: None,
        },
    );
    Ok(empty(
        StatusCode::ACCEPTED,
        &[("content-length", "0".into())],
    ))
}

#[cfg(test)]
mod tests {
    use super::ByteRange;

    #[test]
    fn origin_rewrite_keeps_path_and_query() {
        let public = url::Url::parse("https://cdn.example.com").unwrap();
        assert_eq!(
            super::rewrite_origin(
                "http://10.0.0.5:9000/bucket/key?X-Amz-Signature=abc",
                &public
            ),
            "https://cdn.example.com/bucket/key?X-Amz-Signature=abc"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(
            ByteRange::parse("bytes=0-9").unwrap().resolve(100),
            Some(0..10)
        );
        assert_eq!(
            ByteRange::parse("bytes=90-").unwrap().resolve(100),
            Some(90..100)
        );
        assert_eq!(
            ByteRange::parse("bytes=-10").unwrap().resolve(100),
            Some(90..100)
        );
        assert_eq!(
            ByteRange::parse("bytes=-1000").unwrap().resolve(100),
            Some(0..100)
        );
        assert_eq!(
            ByteRange::parse("bytes=50-1000").unwrap().resolve(100),
            Some(50..100)
        );
        assert_eq!(ByteRange::parse("bytes=100-").unwrap().resolve(100), None);
        assert_eq!(ByteRange::parse("bytes=-0").unwrap().resolve(100), None);
        for bad in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "",
        ] {
            assert_eq!(ByteRange::parse(bad), None, "{bad}");
        }
    }
}
