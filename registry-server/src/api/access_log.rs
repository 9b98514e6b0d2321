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
use tracing::Instrument as _;

use super::App;
use super::route::Route;

/// `METHOD route`, made once per pair: a span name is asked for on every traced request.
/// Methods outside HTTP's own are `OTHER`, so a client cannot grow the set.
fn span_name(method: &Method, route: &'static str) -> &'static str {
    type Names =
        std::sync::RwLock<std::collections::HashMap<(&'static str, &'static str), &'static str>>;
    static NAMES: OnceLock<Names> = OnceLock::new();
    let verb = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let names = NAMES.get_or_init(Default::default);
    if let Some(n) = names
        .read()
        .ok()
        .and_then(|m| m.get(&(verb, route)).copied())
    {
        return n;
    }
    let Ok(mut m) = names.write() else {
        return "request";
    };
    m.entry((verb, route))
        .or_insert_with(|| format!("{verb} {route}").leak())
}

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
    // The digest the path names (a blob, a manifest by digest, a referrers subject), for
    // requests whose response does not say one (errors, deletes).
    let digest = route.as_ref().and_then(Route::digest).map(str::to_owned);
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

    // The request's span, the root of its trace (or a child of the caller's `traceparent`).
    let span = tracing::info_span!(
        target: crate::observe::trace_export::TRACE_TARGET,
        "request",
        otel.name = span_name(&method, label),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = label,
        http.response.status_code = tracing::field::Empty,
        repository = %repository,
        request_id = %request_id,
    );
    crate::observe::trace_export::continue_trace(&span, req.headers());
    let metrics = app.metrics.clone();
    let (parts, body) = req.into_parts();
    let counter = metrics.clone();
    let body = Body::from_stream(body.into_data_stream().inspect(move |c| {
        if let Ok(b) = c {
            counter.add_bytes_in(b.len() as u64);
        }
    }));
    if uploading {
        metrics.upload_in_flight(1);
    }
    let mut resp = next
        .run(Request::from_parts(parts, body))
        .instrument(span.clone())
        .await;
    if uploading {
        metrics.upload_in_flight(-1);
    }
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
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
        digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).or(digest.as_deref()).unwrap_or(""),
        status,
        latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1000.0,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The `Content-Length` of a response, when it has a valid one.
fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
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
    fn request_ids_are_distinct_and_keep_the_uuid_shape() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
