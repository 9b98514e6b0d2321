//! The middleware that times, counts and logs every request, with a request id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

use super::App;
use super::route::Route;

/// Wraps one request: counts body bytes as they stream, then logs and records the outcome.
pub async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = Route::parse(req.uri().path());
    let label = route.as_ref().map_or("other", Route::label);
    let repository = route
        .as_ref()
        .and_then(Route::repository)
        .unwrap_or("")
        .to_owned();
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(next_request_id);
    let uploading = matches!(
        route,
        Some(Route::Upload { .. } | Route::UploadStart { .. })
    ) && method != Method::GET;

    let metrics = app.metrics.clone();
    let (parts, body) = req.into_parts();
    let announced = announced_body(&parts.headers);
    let progress = Arc::new(BodyProgress::default());
    let (counter, seen, ended) = (metrics.clone(), progress.clone(), progress.clone());
    let body = Body::from_stream(
        body.into_data_stream()
            .inspect(move |c| {
                if let Ok(b) = c {
                    counter.add_bytes_in(b.len() as u64);
                    seen.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            })
            .chain(futures::stream::poll_fn(move |_| {
                ended.ended.store(true, Ordering::Relaxed);
                std::task::Poll::Ready(None)
            })),
    );
    if uploading {
        metrics.upload_in_flight(1);
    }
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if uploading {
        metrics.upload_in_flight(-1);
    }
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    let bytes_out = content_length(resp.headers())
        .filter(|_| method != Method::HEAD)
        .unwrap_or(0);
    metrics.observe(label, method.as_str(), status, elapsed, bytes_out);
    tracing::info!(
        target: "berth::access",
        request_id = %request_id,
        method = %method,
        route = label,
        repository = %repository,
        digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or(""),
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if progress.left_unread(announced) {
        // The rest of the body will not be read, so the connection cannot carry another
        // request; saying so keeps a client from sending its next one down it.
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

/// What a request announced about its body: `Some(length)`, `Some(u64::MAX)` when chunked,
/// `None` when it has none.
fn announced_body(headers: &axum::http::HeaderMap) -> Option<u64> {
    if headers.contains_key("transfer-encoding") {
        return Some(u64::MAX);
    }
    content_length(headers).filter(|n| *n > 0)
}

/// The `Content-Length` of a request or response, when it has a valid one.
fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// How far a handler read its request body.
#[derive(Default)]
struct BodyProgress {
    bytes: AtomicU64,
    ended: std::sync::atomic::AtomicBool,
}

impl BodyProgress {
    /// Whether a body was announced and the handler answered without reading all of it.
    fn left_unread(&self, announced: Option<u64>) -> bool {
        announced.is_some_and(|n| {
            !self.ended.load(Ordering::Relaxed) && self.bytes.load(Ordering::Relaxed) < n
        })
    }
}

/// A fresh request id: this process's random 64-bit prefix and a counter, 32 hex digits.
///
/// Unique across replicas as a v4 UUID would be, without the `getrandom` syscall a UUID costs
/// on every request.
fn next_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_counts_as_read_at_its_length_or_its_end() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(announced_body(&headers), None);
        headers.insert("content-length", HeaderValue::from_static("0"));
        assert_eq!(announced_body(&headers), None);
        headers.insert("content-length", HeaderValue::from_static("10"));
        let announced = announced_body(&headers);
        let p = BodyProgress::default();
        assert!(!p.left_unread(None), "no body, nothing unread");
        assert!(p.left_unread(announced));
        p.bytes.store(10, Ordering::Relaxed);
        assert!(!p.left_unread(announced));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let chunked = announced_body(&headers);
        assert!(
            p.left_unread(chunked),
            "chunked: only its end says it was read"
        );
        p.ended.store(true, Ordering::Relaxed);
        assert!(!p.left_unread(chunked));
    }

    #[test]
    fn request_ids_are_distinct_and_keep_the_uuid_shape() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
