//! Docker token auth: verifying bearer JWTs as distribution does, and Berth's built-in issuer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::htpasswd::Htpasswd;
use super::scope::{Access, glob_match};

/// The claims of a registry token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject (the account).
    #[serde(default)]
    pub sub: String,
    /// Audience: the registry's service name.
    pub aud: serde_json::Value,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Not before, unix seconds.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Issued at, unix seconds.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// Granted access.
    #[serde(default)]
    pub access: Vec<Access>,
    /// Issued here for a robot token's login: checked against the token's record on every
    /// request, so that a revocation outruns the JWT's expiry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub robot: bool,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The account (empty: anonymous).
    pub subject: String,
    /// What it grants.
    pub access: Vec<Access>,
    /// Whether the account is a robot token's.
    pub robot: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses an algorithm name as distribution's `signingalgorithms` lists them.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse::<Algorithm>()
        .map_err(|_| format!("unknown signing algorithm {name:?}"))
}

/// Every public key in a PEM bundle of certificates or public keys.
fn keys_from_pem_bundle(text: &str) -> Result<Vec<DecodingKey>, String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let end_marker = rest[start..]
            .find("-----END ")
            .ok_or("unterminated PEM block")?
            + start;
        let end = rest[end_marker..]
            .find("\n")
            .map_or(rest.len(), |e| end_marker + e);
        let block = &rest.as_bytes()[start..end];
        let key = DecodingKey::from_rsa_pem(block)
            .or_else(|_| DecodingKey::from_ec_pem(block))
            .or_else(|_| DecodingKey::from_ed_pem(block));
        if let Ok(k) = key {
            keys.push(k);
        }
        rest = &rest[end..];
    }
    if keys.is_empty() {
        return Err("no RSA, EC or Ed25519 public key or certificate found".into());
    }
    Ok(keys)
}

/// Checks bearer tokens: signature by a trusted key, issuer, audience, expiry and not-before.
pub struct TokenVerifier {
    /// Where clients get tokens (`realm` of the challenge); `None` means this server's token path.
    pub realm: Option<String>,
    /// The registry's service name (token audience).
    pub service: String,
    issuer: String,
    keys: Vec<DecodingKey>,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenVerifier(service={}, issuer={}, {} keys)",
            self.service,
            self.issuer,
            self.keys.len()
        )
    }
}

impl TokenVerifier {
    /// A verifier trusting the keys in a PEM bundle and/or a JWKS document.
    pub fn new(
        realm: Option<String>,
        service: String,
        issuer: String,
        pem_bundle: Option<&str>,
        jwks: Option<&str>,
        algorithms: Vec<Algorithm>,
    ) -> Result<TokenVerifier, String> {
        let mut keys = Vec::new();
        if let Some(pem) = pem_bundle {
            keys.extend(keys_from_pem_bundle(pem)?);
        }
        if let Some(j) = jwks {
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_str(j).map_err(|e| format!("jwks: {e}"))?;
            for k in &set.keys {
                keys.push(DecodingKey::from_jwk(k).map_err(|e| format!("jwks: {e}"))?);
            }
        }
        if keys.is_empty() {
            return Err("no trusted keys: set rootcertbundle or jwks".into());
        }
        Ok(TokenVerifier {
            realm,
            service,
            issuer,
            keys,
            algorithms,
        })
    }

    /// What a valid token says, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not allowed", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = 30;
        let mut last = String::from("no key verified the signature");
        for key in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    return Ok(Verified {
                        subject: data.claims.sub,
                        access: data.claims.access,
                        robot: data.claims.robot,
                    });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// Who a built-in rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// An htpasswd user, `*` for any authenticated user, or `anonymous`.
    pub account: String,
    /// Repository name glob (`team/*`).
    #[serde(default)]
    pub repository: Option<String>,
    /// Actions granted: `pull`, `push`, `delete`, `*`.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Grants `registry:catalog:*`.
    #[serde(default)]
    pub catalog: bool,
}

/// Berth's built-in token issuer: users from htpasswd, access from rules, tokens signed here.
pub struct TokenIssuer {
    service: String,
    issuer: String,
    key: EncodingKey,
    algorithm: Algorithm,
    expiry: Duration,
    users: Option<Arc<Htpasswd>>,
    rules: Vec<AccessRule>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenIssuer(service={}, issuer={}, {} rules)",
            self.service,
            self.issuer,
            self.rules.len()
        )
    }
}

/// A token answer as docker, skopeo and oci-client expect it.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub token: String,
    /// The same JWT (OAuth2 spelling).
    pub access_token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

impl TokenIssuer {
    /// An issuer signing with a PKCS#8 PEM private key (EC P-256 → ES256, RSA → RS256).
    pub fn new(
        service: String,
        issuer: String,
        private_key_pem: &[u8],
        expiry: Duration,
        users: Option<Arc<Htpasswd>>,
        rules: Vec<AccessRule>,
    ) -> Result<TokenIssuer, String> {
        let (key, algorithm) = match EncodingKey::from_ec_pem(private_key_pem) {
            Ok(k) => (k, Algorithm::ES256),
            Err(_) => (
                EncodingKey::from_rsa_pem(private_key_pem)
                    .map_err(|e| format!("not an EC or RSA private key: {e}"))?,
                Algorithm::RS256,
            ),
        };
        Ok(TokenIssuer {
            service,
            issuer,
            key,
            algorithm,
            expiry,
            users,
            rules,
        })
    }

    /// The users who may log in, if any.
    pub fn users(&self) -> Option<&Arc<Htpasswd>> {
        self.users.as_ref()
    }

    fn rule_applies(rule: &AccessRule, account: Option<&str>) -> bool {
        match (rule.account.as_str(), account) {
            ("anonymous", _) => true,
            ("*", Some(_)) => true,
            (name, Some(a)) => name == a,
            (_, None) => false,
        }
    }

    /// What of `requested` the account may have.
    pub fn grant(&self, account: Option<&str>, requested: &[Access]) -> Vec<Access> {
        let mut out = Vec::new();
        for req in requested {
            let mut allowed: Vec<String> = Vec::new();
            for rule in self.rules.iter().filter(|r| Self::rule_applies(r, account)) {
                let matches = match req.kind.as_str() {
                    "registry" => req.name == "catalog" && rule.catalog,
                    "repository" => rule
                        .repository
                        .as_deref()
                        .is_some_and(|g| glob_match(g, &req.name)),
                    _ => false,
                };
                if !matches {
                    continue;
                }
                if req.kind == "registry" {
                    allowed.push("*".into());
                }
                for a in &req.actions {
                    if rule.actions.iter().any(|r| r == "*" || r == a) {
                        allowed.push(a.clone());
                    }
                }
            }
            allowed.sort();
            allowed.dedup();
            if !allowed.is_empty() {
                out.push(Access {
                    kind: req.kind.clone(),
                    name: req.name.clone(),
                    actions: allowed,
                });
            }
        }
        out
    }

    /// Issues a token for `account` with what it may have of `requested`.
    pub fn issue(
        &self,
        service: &str,
        account: Option<&str>,
        requested: &[Access],
    ) -> Result<TokenResponse, String> {
        self.sign(service, account, self.grant(account, requested), false)
    }

    /// Issues a token for robot `name` granting `access` (what its record allows).
    pub fn issue_for_robot(
        &self,
        service: &str,
        name: &str,
        access: Vec<Access>,
    ) -> Result<TokenResponse, String> {
        self.sign(service, Some(name), access, true)
    }

    /// Issues a token granting `access` as decided elsewhere (by the access policy).
    pub fn sign(
        &self,
        service: &str,
        account: Option<&str>,
        access: Vec<Access>,
        robot: bool,
    ) -> Result<TokenResponse, String> {
        if service != self.service {
            return Err(format!("unknown service {service:?}"));
        }
        let now = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: account.unwrap_or("").to_owned(),
            aud: serde_json::Value::String(self.service.clone()),
            exp: now + self.expiry.as_secs(),
            nbf: Some(now.saturating_sub(5)),
            iat: Some(now),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            access,
            robot,
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|e| e.to_string())?;
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: self.expiry.as_secs(),
        })
    }
}
