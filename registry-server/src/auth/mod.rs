//! Authentication and authorization: htpasswd basic auth, Docker token auth, and Berth's
//! built-in token issuer. Every API request is checked here before its handler runs.

pub mod htpasswd;
pub mod scope;
pub mod token;

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine;

use crate::api::error::ApiError;
use crate::api::route::Route;
pub use scope::Access;
use token::{TokenIssuer, TokenVerifier};

/// The path of the built-in token issuer.
pub const TOKEN_PATH: &str = "/auth/token";

/// How requests are authenticated.
#[derive(Debug)]
pub enum Auth {
    /// Open registry.
    None,
    /// Basic auth against an htpasswd file; any valid user may do anything (as in distribution).
    Htpasswd {
        /// Realm of the Basic challenge.
        realm: String,
        /// The users.
        users: Arc<htpasswd::Htpasswd>,
    },
    /// Bearer tokens from a token service (external, or Berth's own issuer).
    Token(TokenVerifier),
}

/// The authenticator plus, when configured, the built-in issuer.
#[derive(Debug)]
pub struct Authorizer {
    /// How requests are checked.
    pub auth: Auth,
    /// Berth's own token endpoint.
    pub issuer: Option<TokenIssuer>,
}

impl Authorizer {
    /// No authentication at all.
    pub fn open() -> Authorizer {
        Authorizer {
            auth: Auth::None,
            issuer: None,
        }
    }
}

/// What a request needs, from its route and method (distribution's mapping).
pub fn required_access(route: &Route, method: &Method, mount_from: Option<&str>) -> Vec<Access> {
    let read = |n: &str| vec![Access::repository(n, &["pull"])];
    let write = |n: &str| vec![Access::repository(n, &["pull", "push"])];
    match route {
        Route::Base => vec![],
        Route::Catalog => vec![Access::catalog()],
        Route::Tags { name } | Route::Referrers { name, .. } => read(name),
        Route::Manifest { name, .. } | Route::Blob { name, .. } => match *method {
            Method::GET | Method::HEAD => read(name),
            Method::DELETE => vec![Access::repository(name, &["delete"])],
            _ => write(name),
        },
        Route::UploadStart { name } => {
            let mut need = write(name);
            if let Some(from) = mount_from {
                need.push(Access::repository(from, &["pull"]));
            }
            need
        }
        Route::Upload { name, .. } => write(name),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Where clients fetch tokens: the configured realm, or this server's own token path.
fn realm_of(verifier: &TokenVerifier, headers: &HeaderMap, host: Option<&str>) -> String {
    if let Some(r) = &verifier.realm {
        return r.clone();
    }
    let base = match host {
        Some(h) => h.to_owned(),
        None => {
            let authority = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("http");
            format!("{scheme}://{authority}")
        }
    };
    format!("{base}{TOKEN_PATH}")
}

fn challenge(
    verifier: &TokenVerifier,
    headers: &HeaderMap,
    host: Option<&str>,
    need: &[Access],
    error: Option<&str>,
) -> String {
    let mut c = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        realm_of(verifier, headers, host),
        verifier.service
    );
    if !need.is_empty() {
        let scopes: Vec<String> = need.iter().map(Access::scope).collect();
        c.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

impl Authorizer {
    /// Admits a request needing `need`, or answers 401 (no or bad credentials) / 403 (too little).
    pub fn check(
        &self,
        headers: &HeaderMap,
        need: &[Access],
        host: Option<&str>,
    ) -> Result<(), ApiError> {
        match &self.auth {
            Auth::None => Ok(()),
            Auth::Htpasswd { realm, users } => match basic_credentials(headers) {
                Some((u, p)) if users.verify(&u, &p) => Ok(()),
                _ => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "authentication required",
                )
                .with_header("www-authenticate", &format!("Basic realm=\"{realm}\""))),
            },
            Auth::Token(verifier) => {
                let unauthorized = |error: Option<&str>| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "authentication required",
                    )
                    .with_header(
                        "www-authenticate",
                        &challenge(verifier, headers, host, need, error),
                    )
                };
                let Some(token) = bearer(headers) else {
                    return Err(unauthorized(None));
                };
                let grants = verifier
                    .verify(token)
                    .map_err(|_| unauthorized(Some("invalid_token")))?;
                if need.iter().all(|n| n.satisfied_by(&grants)) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "DENIED",
                        "requested access to the resource is denied",
                    )
                    .with_header(
                        "www-authenticate",
                        &challenge(verifier, headers, host, need, Some("insufficient_scope")),
                    ))
                }
            }
        }
    }

    /// The built-in token endpoint: Basic credentials (or none, for anonymous), `service` and
    /// `scope` parameters in, a signed token out.
    pub fn token_endpoint(
        &self,
        headers: &HeaderMap,
        service: Option<&str>,
        scopes: &[&str],
    ) -> Result<token::TokenResponse, ApiError> {
        let issuer = self.issuer.as_ref().ok_or_else(ApiError::no_route)?;
        let account = match basic_credentials(headers) {
            Some((u, p)) if issuer.authenticate(&u, &p) => Some(u),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "invalid username or password",
                )
                .with_header("www-authenticate", "Basic realm=\"berth\""));
            }
            None => None,
        };
        let requested: Vec<Access> = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
            .filter_map(Access::parse)
            .collect();
        let service = service.unwrap_or_default();
        issuer
            .issue(service, account.as_deref(), &requested)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", e))
    }
}
