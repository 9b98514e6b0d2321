//! Authentication and authorization: htpasswd basic auth, Docker token auth, and Berth's
//! built-in token issuer. Every API request is checked here before its handler runs.

pub mod htpasswd;
pub mod logins;
pub mod scope;
pub mod throttle;
pub mod token;

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;

use crate::observe::Metrics;
use logins::{LoginRefused, Logins, Origin};
pub use scope::Access;
use token::{TokenIssuer, TokenVerifier};

/// Who a request was made by, as far as its credentials say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials (or an open registry).
    Anonymous,
    /// An htpasswd user, or the subject of a token.
    Account(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::Account(a) => f.write_str(a),
        }
    }
}

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
    /// Password checks: throttled, off the async workers.
    pub logins: Logins,
}

impl Authorizer {
    /// No authentication at all.
    pub fn open() -> Authorizer {
        Authorizer {
            auth: Auth::None,
            issuer: None,
            logins: Logins::new(Default::default()),
        }
    }
}

/// What an `Authorization: Basic` header holds.
enum BasicCredentials {
    /// No Authorization header.
    Absent,
    /// An account and its password.
    Given(String, String),
    /// Something that is not Basic credentials (bad base64, no colon, another scheme).
    Malformed,
}

fn basic_credentials(headers: &HeaderMap) -> BasicCredentials {
    let Some(value) = headers.get("authorization") else {
        return BasicCredentials::Absent;
    };
    let given = || -> Option<(String, String)> {
        let value = value.to_str().ok()?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_owned(), p.to_owned()))
    };
    match given() {
        Some((u, p)) => BasicCredentials::Given(u, p),
        None => BasicCredentials::Malformed,
    }
}

/// Why a request was not admitted; the API turns it into a 401, 403, 429 or 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: the client should authenticate as `challenge` says.
    #[error("authentication required")]
    Unauthenticated {
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// Wrong account or password.
    #[error("invalid username or password")]
    InvalidLogin {
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// Valid credentials without the access needed.
    #[error("requested access to the resource is denied")]
    Denied {
        /// The `WWW-Authenticate` value (with `error="insufficient_scope"`).
        challenge: String,
    },
    /// Too many failed logins from this client or for this account.
    #[error("too many failed logins: try again later")]
    Throttled {
        /// Seconds until a login will be checked again.
        retry_after: u64,
    },
    /// Too many password checks waiting already.
    #[error("too many logins at once: try again later")]
    Busy,
    /// A token request the issuer cannot serve (an unknown service).
    #[error("{0}")]
    BadTokenRequest(String),
    /// No token issuer is configured.
    #[error("no token issuer here")]
    NoIssuer,
}

fn refused_login(refusal: LoginRefused, challenge: &str) -> AuthError {
    match refusal {
        LoginRefused::Invalid => AuthError::InvalidLogin {
            challenge: challenge.to_owned(),
        },
        LoginRefused::Throttled(wait) => AuthError::Throttled {
            retry_after: wait.as_secs().max(1),
        },
        LoginRefused::Busy => AuthError::Busy,
    }
}

/// Whether a Host header is a host name or address with an optional port, and nothing else
/// (it ends up inside a quoted challenge parameter).
fn valid_authority(h: &str) -> bool {
    let (host, port) = match h.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) => (
                addr,
                if rest.is_empty() {
                    None
                } else {
                    match rest.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    }
                },
            ),
            None => return false,
        },
        None => match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        },
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
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
            // Both come from the client: anything but a plain authority and scheme is ignored.
            let authority = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .filter(|h| valid_authority(h))
                .unwrap_or("localhost");
            let scheme = match headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
            {
                Some(p) if p.eq_ignore_ascii_case("https") => "https",
                _ => "http",
            };
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
    /// Admits a request needing `need` and says who made it, or answers 401 (no or bad
    /// credentials), 403 (too little access) or 429 (too many failed logins).
    pub async fn check(
        &self,
        headers: &HeaderMap,
        need: &[Access],
        host: Option<&str>,
        origin: Origin,
        metrics: &Metrics,
    ) -> Result<Identity, AuthError> {
        match &self.auth {
            Auth::None => Ok(Identity::Anonymous),
            Auth::Htpasswd { realm, users } => {
                let challenge = format!("Basic realm=\"{realm}\"");
                match basic_credentials(headers) {
                    BasicCredentials::Given(u, p) => {
                        match self.logins.check(users, &u, &p, origin, metrics).await {
                            Ok(()) => Ok(Identity::Account(u)),
                            Err(refusal) => Err(refused_login(refusal, &challenge)),
                        }
                    }
                    BasicCredentials::Absent | BasicCredentials::Malformed => {
                        Err(AuthError::Unauthenticated { challenge })
                    }
                }
            }
            Auth::Token(verifier) => {
                let unauthorized = |error: Option<&str>| AuthError::Unauthenticated {
                    challenge: challenge(verifier, headers, host, need, error),
                };
                let Some(token) = bearer(headers) else {
                    return Err(unauthorized(None));
                };
                let (subject, grants) = verifier
                    .verify(token)
                    .map_err(|_| unauthorized(Some("invalid_token")))?;
                if need.iter().all(|n| n.satisfied_by(&grants)) {
                    Ok(if subject.is_empty() {
                        Identity::Anonymous
                    } else {
                        Identity::Account(subject)
                    })
                } else {
                    Err(AuthError::Denied {
                        challenge: challenge(
                            verifier,
                            headers,
                            host,
                            need,
                            Some("insufficient_scope"),
                        ),
                    })
                }
            }
        }
    }

    /// The built-in token endpoint: Basic credentials (or none, for anonymous), `service` and
    /// `scope` parameters in, a signed token out. Credentials that cannot be read are refused,
    /// never taken for anonymous.
    pub async fn token_endpoint(
        &self,
        headers: &HeaderMap,
        service: Option<&str>,
        scopes: &[&str],
        origin: Origin,
        metrics: &Metrics,
    ) -> Result<token::TokenResponse, AuthError> {
        let issuer = self.issuer.as_ref().ok_or(AuthError::NoIssuer)?;
        const CHALLENGE: &str = "Basic realm=\"berth\"";
        let account = match basic_credentials(headers) {
            BasicCredentials::Absent => None,
            BasicCredentials::Malformed => {
                return Err(refused_login(LoginRefused::Invalid, CHALLENGE));
            }
            BasicCredentials::Given(u, p) => {
                let Some(users) = issuer.users() else {
                    return Err(refused_login(LoginRefused::Invalid, CHALLENGE));
                };
                self.logins
                    .check(users, &u, &p, origin, metrics)
                    .await
                    .map_err(|r| refused_login(r, CHALLENGE))?;
                Some(u)
            }
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
            .map_err(AuthError::BadTokenRequest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_challenges_are_plain_authorities() {
        for ok in [
            "registry.example.com",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[fe80::1]",
            "a-b.c",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "evil\",x=\"y",
            "host:port",
            "a b",
            "",
            "[::1",
            "[::1]x",
            "h:123456",
            "h/path",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_basic_credentials_are_not_absent_ones() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            basic_credentials(&h)
        };
        assert!(matches!(
            basic_credentials(&HeaderMap::new()),
            BasicCredentials::Absent
        ));
        assert!(matches!(with("Basic !!!!"), BasicCredentials::Malformed));
        assert!(matches!(
            with("Basic bm9jb2xvbg=="),
            BasicCredentials::Malformed
        ));
        assert!(matches!(with("Bearer abc"), BasicCredentials::Malformed));
        assert!(
            matches!(with("basic YTpi"), BasicCredentials::Given(u, p) if u == "a" && p == "b")
        );
    }
}
