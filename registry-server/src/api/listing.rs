//! Tags list and catalog, with `n`, `last` and `Link: <...>; rel="next"`.

use axum::http::HeaderValue;
use axum::response::IntoResponse;
use registry_core::RegistryError;
use registry_core::registry::Page;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::{Ctx, parse_name};
use crate::content::Tags;

/// Upper bound on one catalog page, whatever `n` asks for.
const MAX_CATALOG_PAGE: usize = 10_000;

fn page_size(ctx: &Ctx) -> Result<Option<usize>, ApiError> {
    match ctx.query.get("n") {
        None | Some("") => Ok(None),
        Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("invalid n {n:?}"),
            )
        }),
    }
}

fn with_link(
    ctx: &Ctx,
    mut resp: axum::response::Response,
    path: &str,
    page: &Page,
    n: Option<usize>,
) -> axum::response::Response {
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        if let Ok(v) =
            HeaderValue::from_str(&format!("<{}?{query}>; rel=\"next\"", ctx.location(path)))
        {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

pub(crate) async fn tags(ctx: &Ctx, name: &str) -> ApiResult {
    let name = parse_name(name)?;
    let n = page_size(ctx)?;
    let tags = ctx
        .app
        .content
        .source(&name)
        .tags(n, ctx.query.get("last"), &ctx.query.encoded())
        .await?;
    let page = match tags {
        Tags::Local(page) => page,
        Tags::Upstream { tags, link } => {
            let mut resp =
                axum::Json(json!({ "name": name.as_str(), "tags": tags })).into_response();
            if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
                resp.headers_mut().insert("link", v);
            }
            return Ok(resp);
        }
    };
    // A repository that exists without any tag (its manifests deleted) lists `null`, as
    // distribution does; a page past the last tag is an empty list.
    let no_tags = page.items.is_empty() && !page.more && ctx.query.get("last").is_none();
    let tags = (!no_tags).then_some(&page.items);
    let resp = axum::Json(json!({ "name": name.as_str(), "tags": tags })).into_response();
    Ok(with_link(
        ctx,
        resp,
        &format!("/v2/{name}/tags/list"),
        &page,
        n,
    ))
}

pub(crate) async fn catalog(ctx: &Ctx) -> ApiResult {
    let n = page_size(ctx)?.map(|n| n.min(MAX_CATALOG_PAGE));
    let page = ctx
        .app
        .registry
        .list_catalog(n, ctx.query.get("last"))
        .await
        .map_err(|e: RegistryError| ApiError::from(e))?;
    let resp = axum::Json(json!({ "repositories": page.items })).into_response();
    Ok(with_link(ctx, resp, "/v2/_catalog", &page, n))
}
