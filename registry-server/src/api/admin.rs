//! The admin API: robot tokens created, listed and revoked over HTTP, and repositories' usage,
//! for whoever the access policy gives `admin` (`registry:admin:*` in a token). Without a
//! policy, nobody.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::{App, authorize};
use crate::auth::Access;
use crate::auth::robots::{RobotAccess, RobotError, RobotRecord, RobotTokens};

/// Where robot tokens are managed.
pub(crate) const TOKENS_PATH: &str = "/berth/admin/tokens";
/// Where repositories' usage is read.
pub(crate) const USAGE_PATH: &str = "/berth/admin/usage";

/// A token to create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    access: Vec<String>,
    /// Groups the access policy sees it in.
    #[serde(default)]
    groups: Vec<String>,
    /// Seconds until it expires; never, without it.
    #[serde(default)]
    expires_in: Option<u64>,
}

fn refused(e: RobotError) -> Response {
    let (status, code) = match &e {
        RobotError::InvalidName(_) | RobotError::InvalidAccess(_) => {
            (StatusCode::BAD_REQUEST, "INVALID")
        }
        RobotError::Exists(_) => (StatusCode::CONFLICT, "EXISTS"),
        RobotError::Unknown(_) => (StatusCode::NOT_FOUND, "UNKNOWN"),
        RobotError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
    };
    ApiError::new(status, code, e.to_string()).into_response()
}

/// Admits an admin and gives the tokens, or the refusal. Without a policy nobody administers:
/// "any valid htpasswd user may do anything" stops short of minting credentials.
async fn admitted(app: &App, req: Request) -> Result<(Arc<RobotTokens>, Bytes), Response> {
    let (parts, body) = req.into_parts();
    if app.settings.auth.policy.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            "the admin API needs an access policy (berth.policy) that gives someone admin",
        )
        .into_response());
    }
    authorize(app, &parts, &[Access::admin()])
        .await
        .map_err(IntoResponse::into_response)?;
    let tokens = app.settings.auth.robots.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "no store").into_response()
    })?;
    let body = axum::body::to_bytes(axum::body::Body::new(body), 64 << 10)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                "body over 64 KiB",
            )
            .into_response()
        })?;
    Ok((tokens, body))
}

/// `GET /berth/admin/tokens`.
pub(crate) async fn list_tokens(State(app): State<Arc<App>>, req: Request) -> Response {
    let (tokens, _) = match admitted(&app, req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match tokens.list().await {
        Ok(records) => {
            axum::Json(records.iter().map(RobotRecord::shown).collect::<Vec<_>>()).into_response()
        }
        Err(e) => refused(e),
    }
}

/// `POST /berth/admin/tokens` with `{"name", "access": ["team/*:pull,push"], "expires_in"}`:
/// the token, shown this once.
pub(crate) async fn create_token(State(app): State<Arc<App>>, req: Request) -> Response {
    let (tokens, body) = match admitted(&app, req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let asked: CreateToken = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "INVALID", e.to_string())
                .into_response();
        }
    };
    let access: Result<Vec<RobotAccess>, _> =
        asked.access.iter().map(|a| RobotAccess::parse(a)).collect();
    let created = match access {
        Ok(access) => {
            tokens
                .create(
                    &asked.name,
                    access,
                    asked.groups,
                    asked.expires_in.map(std::time::Duration::from_secs),
                )
                .await
        }
        Err(e) => Err(e),
    };
    match created {
        Ok((token, record)) => {
            let mut body = record.shown();
            body["token"] = serde_json::Value::String(token);
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Err(e) => refused(e),
    }
}

/// `DELETE /berth/admin/tokens/<name>`.
pub(crate) async fn revoke_token(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (tokens, _) = match admitted(&app, req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match tokens.revoke(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}

/// `GET /berth/admin/usage`: what `berth usage` prints.
pub(crate) async fn usage(State(app): State<Arc<App>>, req: Request) -> Response {
    if let Err(r) = admitted(&app, req).await {
        return r;
    }
    match app.registry.usage().await {
        Ok(u) => axum::Json(u).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
