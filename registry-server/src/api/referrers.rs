//! The referrers API: an image index of the manifests whose subject is the given digest.

use axum::http::HeaderValue;
use axum::response::IntoResponse;
use registry_core::manifest::OCI_INDEX;
use registry_core::{Digest, RegistryError};
use serde_json::json;

use super::error::ApiResult;
use super::{Ctx, parse_name};

pub(crate) async fn list(ctx: &Ctx, name: &str, digest: &str) -> ApiResult {
    let name = parse_name(name)?;
    let subject: Digest = digest.parse().map_err(RegistryError::from)?;
    let filter = ctx.query.get("artifactType").filter(|t| !t.is_empty());
    let manifests = ctx
        .app
        .registry
        .list_referrers(&name, &subject, filter)
        .await?;
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
