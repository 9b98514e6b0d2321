//! Blob uploads: start (with mount and monolithic variants), chunks, status, finish, cancel.

use axum::body::Body;
use axum::http::StatusCode;
use registry_core::upload::ChunkRange;
use registry_core::{Digest, RegistryError, RepositoryName};

use super::error::{ApiError, ApiResult, upload_range};
use super::upload_ref::UploadRef;
use super::{Ctx, body_stream, empty, parse_name};

/// Media type of blobs in notification events.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

fn upload_path(name: &RepositoryName, id: &str, fresh: bool, tag: Option<u32>) -> String {
    format!(
        "/v2/{name}/blobs/uploads/{}",
        UploadRef::tagged_segment(id, fresh, tag)
    )
}

fn created(ctx: &Ctx, name: &RepositoryName, digest: &Digest) -> axum::response::Response {
    empty(
        StatusCode::CREATED,
        &[
            (
                "location",
                ctx.location(&format!("/v2/{name}/blobs/{digest}")),
            ),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".into()),
        ],
    )
}

fn progress(
    ctx: &Ctx,
    status: StatusCode,
    name: &RepositoryName,
    id: &str,
    offset: u64,
    fresh: bool,
    tag: Option<u32>,
) -> axum::response::Response {
    let mut headers = vec![
        ("location", ctx.location(&upload_path(name, id, fresh, tag))),
        ("range", upload_range(offset)),
        ("docker-upload-uuid", UploadRef::segment(id, fresh)),
        ("content-length", "0".into()),
    ];
    if let Some(min) = ctx.app.registry.uploads().chunk_min_length() {
        headers.push(("oci-chunk-min-length", min.to_string()));
    }
    empty(status, &headers)
}

/// Errors about an existing session carry its Location, so the client can resume.
fn with_location(ctx: &Ctx, name: &RepositoryName, at: &UploadRef, e: RegistryError) -> ApiError {
    let offset = match e {
        RegistryError::UploadRangeInvalid { offset } => Some(offset),
        _ => None,
    };
    let err = ApiError::from(e);
    match offset {
        // Nothing stored yet: the URL that says so stays.
        Some(offset) => err.with_header(
            "location",
            &ctx.location(&upload_path(name, &at.id, at.fresh && offset == 0, None)),
        ),
        None => err,
    }
}

/// The Content-Range of a chunk, checked against Content-Length when both are sent.
fn chunk_range(ctx: &Ctx) -> Result<Option<ChunkRange>, ApiError> {
    let Some(raw) = ctx.header("content-range") else {
        return Ok(None);
    };
    let range = ChunkRange::parse(raw).ok_or_else(|| {
        ApiError::from(RegistryError::BlobUploadInvalid(format!(
            "malformed Content-Range {raw:?}"
        )))
    })?;
    if let Some(len) = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        && len != range.len()
    {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Length {len} does not match Content-Range {raw}"
        ))
        .into());
    }
    Ok(Some(range))
}

pub(crate) async fn start(ctx: &Ctx, name: &str, body: Body) -> ApiResult {
    let name = parse_name(name)?;
    let registry = &ctx.app.registry;
    if let Some(mount) = ctx.query.get("mount") {
        let digest: Digest = mount.parse().map_err(RegistryError::from)?;
        if let Some(from) = ctx.query.get("from") {
            let from = parse_name(from)?;
            // Where a quota applies, a blob it cannot take is refused before it is linked.
            if registry.rules().and_then(|r| r.quota(&name)).is_some()
                && let Ok(info) = registry.stat_blob(&from, &digest).await
            {
                registry
                    .check_blob_quota(&name, Some(&digest), info.size)
                    .await?;
            }
            if registry.mount_blob(&name, &from, &digest).await? {
                let size = registry
                    .stat_blob(&name, &digest)
                    .await
                    .map(|i| i.size)
                    .unwrap_or(0);
                ctx.notify("mount", &name, BLOB_MEDIA_TYPE, &digest, size, None);
                return Ok(created(ctx, &name, &digest));
            }
        }
        // Cannot mount: fall through to an ordinary upload, as the spec allows.
    } else if let Some(d) = ctx.query.get("digest") {
        let digest: Digest = d.parse().map_err(RegistryError::from)?;
        if let Some(len) = ctx
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            registry.check_blob_quota(&name, Some(&digest), len).await?;
        }
        let size = registry.put_blob(&name, &digest, body_stream(body)).await?;
        ctx.notify("push", &name, BLOB_MEDIA_TYPE, &digest, size, None);
        return Ok(created(ctx, &name, &digest));
    }
    let started = registry.uploads().start(&name).await?;
    Ok(progress(
        ctx,
        StatusCode::ACCEPTED,
        &name,
        &started.id,
        0,
        started.deferred,
        None,
    ))
}

pub(crate) async fn status(ctx: &Ctx, name: &str, id: &str) -> ApiResult {
    let name = parse_name(name)?;
    let at = UploadRef::parse(id)?;
    let offset = ctx
        .app
        .registry
        .uploads()
        .status(&name, &at.id, at.fresh)
        .await?;
    Ok(progress(
        ctx,
        StatusCode::NO_CONTENT,
        &name,
        &at.id,
        offset,
        at.fresh && offset == 0,
        None,
    ))
}

pub(crate) async fn patch(ctx: &Ctx, name: &str, id: &str, body: Body) -> ApiResult {
    let name = parse_name(name)?;
    let at = UploadRef::parse(id)?;
    let range = chunk_range(ctx)?;
    let (offset, tag) = ctx
        .app
        .registry
        .uploads()
        .append_tagged(&name, &at.id, at.url(), range, body_stream(body))
        .await
        .map_err(|e| with_location(ctx, &name, &at, e))?;
    // A blob already past the quota is refused now, not at its manifest: the upload keeps
    // what it has, and goes with the purge.
    ctx.app
        .registry
        .check_blob_quota(&name, None, offset)
        .await?;
    // An empty chunk stores nothing: the session is still as its start left it.
    Ok(progress(
        ctx,
        StatusCode::ACCEPTED,
        &name,
        &at.id,
        offset,
        at.fresh && offset == 0,
        tag,
    ))
}

pub(crate) async fn finish(ctx: &Ctx, name: &str, id: &str, body: Body) -> ApiResult {
    let name = parse_name(name)?;
    let at = UploadRef::parse(id)?;
    let digest: Digest = ctx
        .query
        .get("digest")
        .ok_or_else(|| {
            RegistryError::DigestInvalid("the digest query parameter is required".into())
        })?
        .parse()
        .map_err(RegistryError::from)?;
    let range = chunk_range(ctx)?;
    let size = ctx
        .app
        .registry
        .finish_upload(&name, &at.id, at.url(), &digest, range, body_stream(body))
        .await
        .map_err(|e| with_location(ctx, &name, &at, e))?;
    ctx.notify("push", &name, BLOB_MEDIA_TYPE, &digest, size, None);
    Ok(created(ctx, &name, &digest))
}

pub(crate) async fn cancel(ctx: &Ctx, name: &str, id: &str) -> ApiResult {
    let name = parse_name(name)?;
    let at = UploadRef::parse(id)?;
    ctx.app
        .registry
        .uploads()
        .cancel(&name, &at.id, at.fresh)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}
