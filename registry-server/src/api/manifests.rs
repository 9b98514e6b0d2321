//! Manifest GET/HEAD/PUT/DELETE.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use registry_core::registry::ReplicationAction;
use registry_core::{Reference, RegistryError, Tag};

use super::error::{ApiError, ApiResult};
use super::{Audited, Ctx, empty, parse_name};

fn parse_reference(raw: &str) -> Result<Reference, ApiError> {
    raw.parse::<Reference>()
        .map_err(|e| ApiError::from(RegistryError::from(e)))
}

pub(crate) async fn get(ctx: &Ctx, name: &str, reference: &str) -> ApiResult {
    let name = parse_name(name)?;
    // A tag that cannot be one names no manifest: a read finds nothing (404, as in
    // distribution and the conformance suite); only a write of it is a bad request. A
    // malformed digest stays a 400 DIGEST_INVALID.
    let reference = parse_reference(reference).map_err(|e| {
        if reference.contains(':') {
            e
        } else {
            ApiError::from(RegistryError::ManifestUnknown(reference.to_owned()))
        }
    })?;
    let m = ctx.app.content.source(&name).manifest(&reference).await?;
    // A GET by tag or digest, or a HEAD by tag (how containerd resolves before it pulls by
    // digest), is a pull.
    if ctx.method == Method::GET || matches!(reference, Reference::Tag(_)) {
        ctx.app.content.note_pull(&name, &reference);
        ctx.app.registry.note_repository_pull(&name, &reference);
    }
    if ctx.method == Method::GET {
        let tag = match &reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        ctx.notify(
            "pull",
            &name,
            &m.media_type,
            &m.digest,
            m.body.len() as u64,
            tag,
        );
    }
    let headers = [
        ("content-type", m.media_type.clone()),
        ("docker-content-digest", m.digest.to_string()),
        ("etag", format!("\"{}\"", m.digest)),
        ("content-length", m.body.len().to_string()),
    ];
    if ctx.method == Method::HEAD {
        return Ok(empty(StatusCode::OK, &headers));
    }
    let mut resp = (StatusCode::OK, m.body).into_response();
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

pub(crate) async fn put(ctx: &Ctx, name: &str, reference: &str, body: Body) -> ApiResult {
    let name = parse_name(name)?;
    let reference = parse_reference(reference)?;
    let tags = ctx
        .query
        .all("tag")
        .map(|t| {
            t.parse::<Tag>()
                .map_err(|e| ApiError::from(RegistryError::from(e)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = ctx.app.settings.max_manifest_bytes;
    if ctx
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(RegistryError::ManifestTooLarge { limit }.into());
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::from(RegistryError::ManifestTooLarge { limit }))?;
    let media_type = registry_core::manifest::sniff_media_type(&body);
    let size = body.len() as u64;
    let outcome = ctx
        .app
        .registry
        .put_manifest(&name, &reference, body, ctx.header("content-type"), &tags)
        .await?;
    let tag = match &reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    };
    ctx.notify("push", &name, &media_type, &outcome.digest, size, tag);
    if let Some(r) = &ctx.app.replication {
        let changed: Vec<&str> = tag
            .into_iter()
            .chain(tags.iter().map(|t| t.as_str()))
            .collect();
        r.record(
            &ctx.app.registry,
            ReplicationAction::Push,
            &name,
            &changed,
            Some(&outcome.digest),
        )
        .await;
    }
    let reference_text = reference.to_string();
    ctx.audit(
        "push",
        &name,
        Audited {
            reference: &reference_text,
            digest: Some(&outcome.digest),
            previous: None,
        },
    );
    for (moved, previous) in &outcome.moved {
        ctx.audit(
            "tag_move",
            &name,
            Audited {
                reference: moved.as_str(),
                digest: Some(&outcome.digest),
                previous: Some(previous),
            },
        );
    }
    let mut headers = vec![
        (
            "location",
            ctx.location(&format!("/v2/{name}/manifests/{}", outcome.digest)),
        ),
        ("docker-content-digest", outcome.digest.to_string()),
        ("content-length", "0".into()),
    ];
    if let Some(s) = &outcome.subject {
        headers.push(("oci-subject", s.to_string()));
    }
    let mut resp = empty(StatusCode::CREATED, &headers);
    for t in &tags {
        if let Ok(v) = t.as_str().parse() {
            resp.headers_mut().append("oci-tag", v);
        }
    }
    Ok(resp)
}

pub(crate) async fn delete(ctx: &Ctx, name: &str, reference: &str) -> ApiResult {
    let name = parse_name(name)?;
    let reference = parse_reference(reference)?;
    let digest = ctx.app.registry.resolve(&name, &reference).await.ok();
    ctx.app.registry.delete_manifest(&name, &reference).await?;
    if let Some(d) = &digest {
        ctx.notify("delete", &name, "", d, 0, None);
    }
    if let Some(r) = &ctx.app.replication {
        let tag = match &reference {
            Reference::Tag(t) => vec![t.as_str()],
            Reference::Digest(_) => Vec::new(),
        };
        r.record(
            &ctx.app.registry,
            ReplicationAction::Delete,
            &name,
            &tag,
            digest.as_ref(),
        )
        .await;
    }
    let reference_text = reference.to_string();
    ctx.audit(
        "delete",
        &name,
        Audited {
            reference: &reference_text,
            digest: digest.as_ref(),
            previous: None,
        },
    );
    Ok(empty(
        StatusCode::ACCEPTED,
        &[("content-length", "0".into())],
    ))
}
