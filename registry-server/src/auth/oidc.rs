//! OIDC federation: an ID token from a trusted issuer (GitHub Actions, GitLab CI, a Kubernetes
//! cluster's service accounts, any OpenID provider) is a password. Its signature is checked
//! against the issuer's published keys (its discovery document names them), fetched once and
//! again when a token names a key not seen yet (a rotation), at most every
//! [`REFRESH_AT_MOST_EVERY`]; its issuer, audience, expiry and not-before are checked. What it
//! may do is the access policy's to say, from its claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::Digest as _;

/// A token naming an unknown key makes the keys be fetched again, but not more often than this
/// (so that tokens with made-up key ids cannot make Berth flood the issuer).
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// How to trust one issuer (`berth.oidc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// The issuer URL, exactly as tokens name it in `iss` (https).
    pub issuer: String,
    /// Audiences a token must name one of.
    pub audiences: Vec<String>,
    /// The claim whose value is the account (default `sub`).
    pub account_claim: String,
}

/// Who an ID token says it is.
#[derive(Debug, Clone)]
pub struct OidcIdentity {
    /// The account (the configured claim's value).
    pub account: String,
    /// Every claim, for the policy's conditions.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// Where a provider takes browser logins: the authorization code flow's two endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEndpoints {
    /// Where the browser is sent to log in.
    pub authorization: String,
    /// Where Berth redeems the code for an ID token.
    pub token: String,
}

/// What a browser login redeems: the code the provider returned and what the login began with.
pub struct CodeRedemption<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// The authorization code.
    pub code: &'a str,
    /// The redirect URI the login began with.
    pub redirect_uri: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// The client secret, if the provider wants one.
    pub client_secret: Option<&'a str>,
    /// The PKCE verifier whose challenge the login began with.
    pub verifier: &'a str,
    /// The nonce the ID token must carry.
    pub nonce: &'a str,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

/// One trusted issuer and the keys it signs with.
struct Issuer {
    settings: IssuerSettings,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// When the keys were last fetched (`None`: never).
    fetched: Mutex<Option<Instant>>,
    /// Its browser login endpoints, once read.
    endpoints: RwLock<Option<LoginEndpoints>>,
    /// When its discovery document was last asked for them.
    endpoints_asked: Mutex<Option<Instant>>,
}

/// How long a verified ID token is taken as verified again without checking its signature
/// (never past its own expiry).
const REMEMBERED_FOR: Duration = Duration::from_secs(60);

/// The trusted issuers.
pub struct OidcIssuers {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
    /// ID tokens verified a moment ago, by their SHA-256, until when they are taken as such.
    verified: Mutex<HashMap<[u8; 32], (OidcIdentity, Instant)>>,
}

impl std::fmt::Debug for OidcIssuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .issuers
            .iter()
            .map(|i| i.settings.issuer.as_str())
            .collect();
        write!(f, "OidcIssuers({names:?})")
    }
}

/// Whether a password has the shape of a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(password: &str) -> bool {
    let mut parts = password.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|h| h.get("alg").is_some())
}

/// The `iss` of a token, unverified: only to pick the issuer whose keys verify it.
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

impl OidcIssuers {
    /// Issuers to trust; nothing is fetched until a token arrives.
    pub fn new(settings: Vec<IssuerSettings>) -> Result<OidcIssuers, String> {
        for s in &settings {
            if !s.issuer.starts_with("https://") {
                return Err(format!("issuer {:?} is not an https URL", s.issuer));
            }
            if s.audiences.is_empty() {
                return Err(format!("issuer {:?} names no audience", s.issuer));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (OIDC)"))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OidcIssuers {
            issuers: settings
                .into_iter()
                .map(|settings| Issuer {
                    settings,
                    keys: RwLock::new(HashMap::new()),
                    fetched: Mutex::new(None),
                    endpoints: RwLock::new(None),
                    endpoints_asked: Mutex::new(None),
                })
                .collect(),
            http,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The identity of an ID token verified within [`REMEMBERED_FOR`] (and not expired since):
    /// a token a client sends with every request is checked once a minute, not each time.
    pub fn remembered(&self, token: &str) -> Option<OidcIdentity> {
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified
            .get(&key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(id, _)| id.clone())
    }

    fn remember(&self, token: &str, id: &OidcIdentity) {
        let Some(exp) = id.claims.get("exp").and_then(serde_json::Value::as_u64) else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(exp.saturating_sub(now)).min(REMEMBERED_FOR);
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= 10_000 {
            verified.clear();
        }
        verified.insert(key, (id.clone(), Instant::now() + left));
    }

    /// Verifies an ID token from one of the issuers and says who it names.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, String> {
        let iss = claimed_issuer(token).ok_or("no issuer in the token")?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.settings.issuer == iss)
            .ok_or_else(|| format!("issuer {iss:?} is not trusted"))?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.clone().unwrap_or_default();
        let key = match issuer.key(&kid) {
            Some(k) => k,
            None => {
                self.refresh(issuer).await?;
                issuer
                    .key(&kid)
                    .ok_or_else(|| format!("the issuer publishes no key {kid:?}"))?
            }
        };
        if key.1 != header.alg {
            return Err(format!("key {kid:?} is not for {:?}", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.settings.issuer]);
        v.set_audience(&issuer.settings.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = 30;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.0, &v)
                .map_err(|e| e.to_string())?;
        let account = data
            .claims
            .get(&issuer.settings.account_claim)
            .and_then(|v| v.as_str())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("no {:?} claim", issuer.settings.account_claim))?
            .to_owned();
        let id = OidcIdentity {
            account,
            claims: Arc::new(data.claims),
        };
        self.remember(token, &id);
        Ok(id)
    }

    /// The issuer's discovery document, checked to name the issuer itself.
    async fn discover(&self, issuer: &Issuer) -> Result<Discovery, String> {
        let base = issuer.settings.issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .http
            .get(format!("{base}/.well-known/openid-configuration"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("discovery: {e}"))?
            .json()
            .await
            .map_err(|e| format!("discovery: {e}"))?;
        if discovery.issuer.trim_end_matches('/') != base {
            return Err(format!(
                "discovery names issuer {:?}, not {base:?}",
                discovery.issuer
            ));
        }
        Ok(discovery)
    }

    fn issuer(&self, url: &str) -> Result<&Issuer, String> {
        self.issuers
            .iter()
            .find(|i| i.settings.issuer.trim_end_matches('/') == url.trim_end_matches('/'))
            .ok_or_else(|| format!("issuer {url:?} is not trusted"))
    }

    /// Where `issuer` takes browser logins (read from its discovery document once).
    pub async fn login_endpoints(&self, issuer: &str) -> Result<LoginEndpoints, String> {
        let issuer = self.issuer(issuer)?;
        if let Some(e) = issuer
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(e);
        }
        // Anyone can start a login: a provider that does not answer is asked again at most
        // every REFRESH_AT_MOST_EVERY, not once per visitor.
        {
            let mut asked = issuer
                .endpoints_asked
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if asked.is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY) {
                return Err("the provider was asked a moment ago; try again shortly".into());
            }
            *asked = Some(Instant::now());
        }
        let d = self.discover(issuer).await?;
        let (Some(authorization), Some(token)) = (d.authorization_endpoint, d.token_endpoint)
        else {
            return Err("the issuer offers no authorization code flow".into());
        };
        if !authorization.starts_with("https://") || !token.starts_with("https://") {
            return Err("the issuer's login endpoints are not https".into());
        }
        let e = LoginEndpoints {
            authorization,
            token,
        };
        *issuer
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
        Ok(e)
    }

    /// Redeems a browser login's authorization code for its ID token (with the PKCE
    /// verifier), verifies the token as any OIDC login's, and checks it carries the login's
    /// nonce.
    pub async fn redeem(&self, r: &CodeRedemption<'_>) -> Result<OidcIdentity, String> {
        let endpoints = self.login_endpoints(r.issuer).await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", r.code),
            ("redirect_uri", r.redirect_uri),
            ("client_id", r.client_id),
            ("code_verifier", r.verifier),
        ];
        if let Some(secret) = r.client_secret {
            form.push(("client_secret", secret));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let answer: TokenAnswer = self
            .http
            .post(&endpoints.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("token endpoint: {e}"))?
            .json()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let id = self.verify(&answer.id_token).await?;
        if id.claims.get("nonce").and_then(|n| n.as_str()) != Some(r.nonce) {
            return Err("the ID token does not carry this login's nonce".into());
        }
        Ok(id)
    }

    /// Fetches the issuer's keys again, unless that was done within [`REFRESH_AT_MOST_EVERY`].
    async fn refresh(&self, issuer: &Issuer) -> Result<(), String> {
        {
            let mut fetched = issuer
                .fetched
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if fetched.is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY) {
                return Ok(());
            }
            *fetched = Some(Instant::now());
        }
        let base = issuer.settings.issuer.trim_end_matches('/');
        let discovery = self.discover(issuer).await?;
        if !discovery.jwks_uri.starts_with("https://") {
            return Err(format!("jwks_uri {:?} is not https", discovery.jwks_uri));
        }
        let set: JwkSet = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("keys: {e}"))?
            .json()
            .await
            .map_err(|e| format!("keys: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(a), _) => a.to_string().parse::<Algorithm>().ok(),
                (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                    Some(Algorithm::ES256)
                }
                _ => None,
            };
            if let Some(alg) = alg {
                keys.insert(kid, (key, alg));
            }
        }
        tracing::info!(issuer = %base, keys = keys.len(), "OIDC issuer keys fetched");
        *issuer.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(())
    }
}

impl Issuer {
    fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_provider_is_not_asked_once_per_visitor() {
        let issuers = OidcIssuers::new(vec![IssuerSettings {
            issuer: "https://127.0.0.1:1".into(),
            audiences: vec!["ui".into()],
            account_claim: "sub".into(),
        }])
        .unwrap();
        let first = issuers.login_endpoints("https://127.0.0.1:1").await;
        assert!(first.unwrap_err().starts_with("discovery"));
        let again = issuers.login_endpoints("https://127.0.0.1:1").await;
        assert!(again.unwrap_err().contains("a moment ago"));
    }

    #[test]
    fn jwt_shapes() {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        assert!(looks_like_jwt(&format!("{h}.e30.c2ln")));
        assert!(!looks_like_jwt("brt_0123"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt(&format!("{h}.e30")));
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"iss":"https://i.example"}"#);
        assert_eq!(
            claimed_issuer(&format!("{h}.{p}.x")).as_deref(),
            Some("https://i.example")
        );
    }
}
