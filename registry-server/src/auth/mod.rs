//! Authentication and authorization: htpasswd basic auth, Docker token auth, and Berth's
//! built-in token issuer. Every API request is checked here before its handler runs.

pub mod htpasswd;
pub mod logins;
pub mod oidc;
pub mod policy;
pub mod robots;
pub mod scope;
pub mod throttle;
pub mod token;
pub mod viewer;

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;

use crate::observe::Metrics;
use logins::{LoginRefused, Logins, Origin};
use policy::{IdentityKind, Subject};
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
    /// Robot tokens, once the store they are kept in is open.
    pub robots: std::sync::OnceLock<Arc<robots::RobotTokens>>,
    /// The access policy (`berth.policy`): without it, every htpasswd account may do
    /// everything (as in distribution) and the built-in issuer grants by its `access` rules.
    pub policy: Option<Arc<policy::PolicyFileWatch>>,
    /// Trusted OIDC issuers (`berth.oidc`): their ID tokens are passwords.
    pub oidc: Option<Arc<oidc::OidcIssuers>>,
}

impl Authorizer {
    /// No authentication at all.
    pub fn open() -> Authorizer {
        Authorizer {
            auth: Auth::None,
            issuer: None,
            logins: Logins::new(Default::default()),
            robots: Default::default(),
            policy: None,
            oidc: None,
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
pub(crate) fn valid_authority(h: &str) -> bool {
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
    /// credentials, or too little access) or 429 (too many failed logins). `certificate`: the
    /// account of the connection's verified client certificate, if any; credentials in the
    /// request come first.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        need: &[Access],
        host: Option<&str>,
        origin: Origin,
        certificate: Option<&str>,
        metrics: &Metrics,
    ) -> Result<Identity, AuthError> {
        match &self.auth {
            Auth::None => {
                Ok(certificate.map_or(Identity::Anonymous, |c| Identity::Account(c.into())))
            }
            Auth::Htpasswd { realm, users } => {
                let challenge = format!("Basic realm=\"{realm}\"");
                let denied = || AuthError::Denied {
                    challenge: challenge.clone(),
                };
                match basic_credentials(headers) {
                    BasicCredentials::Given(u, p) if p.starts_with(robots::TOKEN_PREFIX) => {
                        let robot = self
                            .robot_login(&u, &p, &challenge, origin, metrics)
                            .await?;
                        if !robot.allows(need) {
                            audit_access(
                                &u,
                                IdentityKind::Robot,
                                need,
                                "the token's access",
                                false,
                            );
                            return Err(denied());
                        }
                        self.by_policy(&robot.subject(), need)
                            .map_err(|()| denied())?;
                        Ok(Identity::Account(u))
                    }
                    BasicCredentials::Given(u, p) if self.takes_oidc(&p) => {
                        let who = self.oidc_login(&u, &p, &challenge, origin, metrics).await?;
                        self.by_policy(&who, need).map_err(|()| denied())?;
                        Ok(Identity::Account(who.account.unwrap_or_default()))
                    }
                    BasicCredentials::Given(u, p) => {
                        match self.logins.check(users, &u, &p, origin, metrics).await {
                            Ok(()) => {
                                self.by_policy(&Subject::account(&u, IdentityKind::Password), need)
                                    .map_err(|()| denied())?;
                                Ok(Identity::Account(u))
                            }
                            Err(refusal) => Err(refused_login(refusal, &challenge)),
                        }
                    }
                    // A verified client certificate is an account, as a password is.
                    BasicCredentials::Absent if let Some(c) = certificate => {
                        self.by_policy(&Subject::account(c, IdentityKind::Certificate), need)
                            .map_err(|()| denied())?;
                        Ok(Identity::Account(c.to_owned()))
                    }
                    // Anonymous clients get what the policy gives them, but never the base
                    // endpoint: `docker login` takes a 200 there for a login that worked.
                    BasicCredentials::Absent
                        if !need.is_empty()
                            && self.policy.is_some()
                            && self.by_policy(&Subject::anonymous(), need).is_ok() =>
                    {
                        Ok(Identity::Anonymous)
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
                let verified = verifier
                    .verify(token)
                    .map_err(|_| unauthorized(Some("invalid_token")))?;
                if verified.robot && !self.robot_still_valid(&verified.subject).await {
                    return Err(unauthorized(Some("invalid_token")));
                }
                let (subject, grants) = (verified.subject, verified.access);
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
            BasicCredentials::Given(u, p) if p.starts_with(robots::TOKEN_PREFIX) => {
                let robot = self.robot_login(&u, &p, CHALLENGE, origin, metrics).await?;
                let mut access = robot.grant(&requested_scopes(scopes));
                if let Some(policy) = &self.policy {
                    access = policy.current().grant(&robot.subject(), &access);
                }
                return issuer
                    .issue_for_robot(service.unwrap_or_default(), &u, access)
                    .map_err(AuthError::BadTokenRequest);
            }
            BasicCredentials::Given(u, p) if self.takes_oidc(&p) => {
                let who = self.oidc_login(&u, &p, CHALLENGE, origin, metrics).await?;
                let access = match &self.policy {
                    Some(policy) => policy.current().grant(&who, &requested_scopes(scopes)),
                    None => Vec::new(),
                };
                return issuer
                    .sign(
                        service.unwrap_or_default(),
                        who.account.as_deref(),
                        access,
                        false,
                    )
                    .map_err(AuthError::BadTokenRequest);
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
        let requested = requested_scopes(scopes);
        let service = service.unwrap_or_default();
        match &self.policy {
            Some(policy) => {
                let who = match &account {
                    Some(a) => Subject::account(a, IdentityKind::Password),
                    None => Subject::anonymous(),
                };
                let access = policy.current().grant(&who, &requested);
                issuer.sign(service, account.as_deref(), access, false)
            }
            None => issuer.issue(service, account.as_deref(), &requested),
        }
        .map_err(AuthError::BadTokenRequest)
    }

    /// Asks the policy (when there is one) about everything `need` names, and writes the
    /// decision to the audit log.
    fn by_policy(&self, who: &Subject, need: &[Access]) -> Result<(), ()> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let account = who.account.as_deref().unwrap_or("anonymous");
        match policy.current().check(who, need) {
            Ok(decision) => {
                if let Some(d) = decision {
                    audit_access(
                        account,
                        who.kind,
                        need,
                        d.rule.as_deref().unwrap_or(""),
                        true,
                    );
                }
                Ok(())
            }
            Err(d) => {
                let rule = d.rule.as_deref().unwrap_or("(none)");
                audit_access(account, who.kind, need, rule, false);
                Err(())
            }
        }
    }

    /// A robot token's login: its record, or a refusal as for a wrong password. Through the
    /// login gate: a token cannot be guessed, but every unknown name costs a store read, so
    /// a client failing again and again is locked out as for passwords.
    async fn robot_login(
        &self,
        name: &str,
        token: &str,
        challenge: &str,
        origin: Origin,
        metrics: &Metrics,
    ) -> Result<robots::RobotRecord, AuthError> {
        let Some(robots) = self.robots.get() else {
            return Err(refused_login(LoginRefused::Invalid, challenge));
        };
        // As a password verified a moment ago: no guess, no gate, no log line per request.
        if let Some(r) = robots.remembered(name, token).await {
            return Ok(r);
        }
        let check = async {
            match robots.authenticate(name, token).await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(LoginRefused::Invalid),
                Err(e) => {
                    tracing::warn!(robot = name, error = %e, "robot tokens could not be read");
                    Err(LoginRefused::Busy)
                }
            }
        };
        self.logins
            .gate(name, "robot", origin, metrics, check)
            .await
            .map_err(|r| refused_login(r, challenge))
    }

    /// Whether a password is an ID token for the trusted OIDC issuers to check.
    fn takes_oidc(&self, password: &str) -> bool {
        self.oidc.is_some() && oidc::looks_like_jwt(password)
    }

    /// An OIDC login (`user` as the client named itself): the identity its ID token names, or
    /// a refusal as for a wrong password, through the login gate.
    async fn oidc_login(
        &self,
        user: &str,
        token: &str,
        challenge: &str,
        origin: Origin,
        metrics: &Metrics,
    ) -> Result<Subject, AuthError> {
        let Some(issuers) = &self.oidc else {
            return Err(refused_login(LoginRefused::Invalid, challenge));
        };
        // As a password verified a moment ago: no guess, no gate, no log line per request.
        if let Some(id) = issuers.remembered(token) {
            return Ok(Subject::oidc(&id.account, id.claims));
        }
        let check = async {
            issuers
                .verify(token)
                .await
                .map(|id| Subject::oidc(&id.account, id.claims))
                .map_err(|why| {
                    tracing::info!(reason = %why, "an ID token was refused");
                    LoginRefused::Invalid
                })
        };
        self.logins
            .gate(user, "oidc", origin, metrics, check)
            .await
            .map_err(|r| refused_login(r, challenge))
    }

    /// Whether robot `name` (whose token the issuer signed) is neither revoked nor expired.
    async fn robot_still_valid(&self, name: &str) -> bool {
        match self.robots.get() {
            Some(robots) => matches!(robots.still_valid(name).await, Ok(Some(_))),
            None => false,
        }
    }
}

fn scopes_of(need: &[Access]) -> String {
    need.iter().map(Access::scope).collect::<Vec<_>>().join(" ")
}

/// One access decision in the audit log: who, which kind of identity, what it needed, which
/// rule decided (or what else did), and whether it was allowed.
fn audit_access(account: &str, kind: IdentityKind, need: &[Access], rule: &str, allowed: bool) {
    tracing::info!(
        target: "berth::audit",
        event = "access",
        account,
        kind = kind.name(),
        need = %scopes_of(need),
        rule,
        allowed,
    );
}

/// The scopes a token request names (`scope` may repeat and hold several, space-separated).
fn requested_scopes(scopes: &[&str]) -> Vec<Access> {
    scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .filter_map(Access::parse)
        .collect()
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
