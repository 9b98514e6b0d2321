//! The UI's stylesheet, script and icon, compiled into the binary (no build step, no files
//! to ship beside it).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

const ASSETS: [(&str, &str, &str); 3] = [
    (
        "berth.css",
        "text/css; charset=utf-8",
        include_str!("assets/berth.css"),
    ),
    (
        "berth.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/berth.js"),
    ),
    (
        "berth.svg",
        "image/svg+xml",
        include_str!("assets/berth.svg"),
    ),
];

fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, body)| {
                let hash = sha2::Sha256::digest(body.as_bytes());
                format!("\"{}\"", hex::encode(&hash[..8]))
            })
            .collect()
    })[index]
}

/// One asset, revalidated by its ETag (it changes only with the binary).
pub(super) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|(name, _, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let (_, content_type, body) = ASSETS[index];
    let tag = etag(index);
    let cache = [("etag", tag), ("cache-control", "public, max-age=300")];
    if headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag)
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        StatusCode::OK,
        cache,
        [("content-type", content_type)],
        body,
    )
        .into_response()
}
