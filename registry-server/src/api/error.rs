//! The one place where registry errors become OCI error responses.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use registry_core::RegistryError;
use registry_core::storage::StorageError;
use serde_json::json;

/// An error response: OCI error code, HTTP status, message, optional detail and extra headers.
#[derive(Debug)]
pub struct ApiError {
    /// The OCI error code, e.g. `BLOB_UNKNOWN`.
    pub code: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// Structured detail.
    pub detail: serde_json::Value,
    /// Headers the client needs (Range on 416, Location); boxed so that every `Result` carrying
    /// an `ApiError` stays small on the success path.
    pub headers: Box<HeaderMap>,
}

impl ApiError {
    /// An error with no detail.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            status,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Box::default(),
        }
    }

    /// Adds a header to the error response.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self
    }

    /// 405 for a method the endpoint does not have.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the method is not supported on this endpoint",
        )
    }

    /// 404 for a path that is no registry endpoint.
    pub fn no_route() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }

    fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// `Range: 0-<last>` as the upload endpoints report progress (`0-0` for an empty upload).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            RegistryError::NameInvalid(n) => {
                ApiError::new(S::BAD_REQUEST, "NAME_INVALID", msg).detail(json!({ "name": n }))
            }
            RegistryError::NameUnknown(n) => {
                ApiError::new(S::NOT_FOUND, "NAME_UNKNOWN", msg).detail(json!({ "name": n }))
            }
            RegistryError::TagInvalid(t) => {
                ApiError::new(S::BAD_REQUEST, "TAG_INVALID", msg).detail(json!({ "tag": t }))
            }
            RegistryError::DigestInvalid(d) => {
                ApiError::new(S::BAD_REQUEST, "DIGEST_INVALID", msg).detail(json!({ "reason": d }))
            }
            RegistryError::BlobUnknown(d) => ApiError::new(S::NOT_FOUND, "BLOB_UNKNOWN", msg)
                .detail(json!({ "digest": d.to_string() })),
            RegistryError::BlobUploadUnknown => {
                ApiError::new(S::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", msg)
            }
            RegistryError::BlobUploadInvalid(r) => {
                ApiError::new(S::BAD_REQUEST, "BLOB_UPLOAD_INVALID", msg)
                    .detail(json!({ "reason": r }))
            }
            RegistryError::UploadRangeInvalid { offset } => {
                ApiError::new(S::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", msg)
                    .detail(json!({ "offset": offset }))
                    .with_header("range", &upload_range(offset))
            }
            RegistryError::BlobRangeInvalid { size } => {
                ApiError::new(S::RANGE_NOT_SATISFIABLE, "RANGE_INVALID", msg)
                    .with_header("content-range", &format!("bytes */{size}"))
            }
            RegistryError::ManifestUnknown(r) => {
                ApiError::new(S::NOT_FOUND, "MANIFEST_UNKNOWN", msg)
                    .detail(json!({ "reference": r }))
            }
            RegistryError::ManifestInvalid(r) => {
                ApiError::new(S::BAD_REQUEST, "MANIFEST_INVALID", msg)
                    .detail(json!({ "reason": r }))
            }
            RegistryError::ManifestBlobUnknown(d) => {
                ApiError::new(S::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", msg)
                    .detail(json!({ "digest": d.to_string() }))
            }
            RegistryError::ManifestTooLarge { limit } => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, "SIZE_INVALID", msg)
                    .detail(json!({ "limit": limit }))
            }
            RegistryError::SizeInvalid(r) => {
                ApiError::new(S::BAD_REQUEST, "SIZE_INVALID", msg).detail(json!({ "reason": r }))
            }
            RegistryError::Unsupported(r) => {
                ApiError::new(S::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg)
                    .detail(json!({ "reason": r }))
            }
            RegistryError::Conflict(r) => ApiError::new(S::CONFLICT, "BLOB_UPLOAD_INVALID", msg)
                .detail(json!({ "reason": r })),
            // 409, not 403: docker retries a 403 for a minute; this answer will not change.
            RegistryError::TagImmutable { tag, rule } => ApiError::new(S::CONFLICT, "DENIED", msg)
                .detail(json!({ "tag": tag, "rule": rule })),
            RegistryError::QuotaExceeded {
                rule,
                limit,
                usage,
                adds,
            } => ApiError::new(S::FORBIDDEN, "DENIED", msg)
                .detail(json!({ "quota": rule, "limit": limit, "usage": usage, "adds": adds })),
            RegistryError::Storage(StorageError::Full(detail)) => {
                tracing::error!(error = %detail, "storage full");
                // 507 says what is wrong without naming paths; no OCI code is closer than UNKNOWN.
                ApiError::new(
                    S::INSUFFICIENT_STORAGE,
                    "UNKNOWN",
                    "the registry's storage is full",
                )
            }
            RegistryError::Storage(StorageError::Unavailable(detail)) => {
                tracing::error!(error = %detail, "storage unavailable");
                // The store may be back in moments: say when to try again.
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the registry's storage is not answering: try again shortly",
                )
                .with_header("retry-after", "10")
            }
            RegistryError::Storage(inner) => {
                // Store details can name buckets and keys: log them, tell the client only the kind.
                tracing::error!(error = %inner, "storage failure");
                ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "storage backend failure",
                )
            }
        }
    }
}

impl From<crate::upstream::UpstreamError> for ApiError {
    fn from(e: crate::upstream::UpstreamError) -> Self {
        use crate::upstream::UpstreamError as U;
        // The details (hosts, network errors) are for the operator only.
        tracing::warn!(error = %e, "upstream registry");
        let status = match e {
            U::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            // The upstream failed, not the client: 502, whatever the upstream said.
            U::Unreachable(_) | U::Refused(_) | U::BadAnswer(_) => StatusCode::BAD_GATEWAY,
        };
        let code = if status == StatusCode::TOO_MANY_REQUESTS {
            "TOOMANYREQUESTS"
        } else {
            "UNKNOWN"
        };
        ApiError::new(status, code, e.public_message())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        let message = e.to_string();
        match e {
            A::Unauthenticated { challenge } | A::InvalidLogin { challenge } => {
                ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                    .with_header("www-authenticate", &challenge)
            }
            // As distribution answers a token without the scope: 401 UNAUTHORIZED with the
            // challenge's insufficient_scope. docker gives up at once on it and says "denied";
            // on a 403 DENIED it retried a refused push for 50 s.
            A::Denied { challenge } => {
                ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                    .with_header("www-authenticate", &challenge)
            }
            A::Throttled { retry_after } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
                    .with_header("retry-after", &retry_after.to_string())
            }
            A::Busy => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
                .with_header("retry-after", "1"),
            A::BadTokenRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", message),
            A::NoIssuer => ApiError::no_route(),
        }
    }
}

impl From<crate::content::ContentError> for ApiError {
    fn from(e: crate::content::ContentError) -> Self {
        use crate::content::ContentError as C;
        match e {
            C::Registry(r) => r.into(),
            C::Upstream(u) => u.into(),
            C::CachedRepository => {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "errors": [{ "code": self.code, "message": self.message, "detail": self.detail }] });
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().extend(*self.headers);
        resp
    }
}

/// Result of a handler.
pub type ApiResult = Result<Response, ApiError>;
