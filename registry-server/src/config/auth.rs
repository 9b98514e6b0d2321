//! The authorizer from `auth` and `berth.tokenserver`.

use std::time::Duration;

use super::{
    AuthConfig, ConfigError, LoginsConfig, OidcIssuerConfig, TokenServerConfig, key_err,
    parse_duration, read_file, required, strings,
};

pub(super) fn authorizer(
    auth: Option<&AuthConfig>,
    server: Option<&TokenServerConfig>,
    logins: Option<&LoginsConfig>,
    policy: Option<std::sync::Arc<crate::auth::policy::PolicyFileWatch>>,
    oidc: &[OidcIssuerConfig],
) -> Result<crate::auth::Authorizer, ConfigError> {
    use crate::auth::{Auth, Authorizer, htpasswd::Htpasswd, logins::Logins, token};
    let logins = Logins::new(login_settings(logins)?);
    let open = auth.is_none_or(|a| a.htpasswd.is_none() && a.token.is_none());
    if open
        && policy
            .as_ref()
            .is_some_and(|p| p.current().has_access_rules())
    {
        return Err(key_err(
            "berth.policy",
            "access rules need auth (htpasswd or token): without it every client is anonymous",
        ));
    }
    // Repository rules alone (immutable tags, retention, quotas) need no identities.
    let policy = policy.filter(|_| !open);
    let oidc = oidc_issuers(oidc, policy.is_some())?;
    let Some(auth) = auth else {
        if server.is_some() {
            return Err(key_err(
                "berth.tokenserver",
                "needs auth.token (service, issuer, rootcertbundle)",
            ));
        }
        return Ok(Authorizer {
            logins,
            ..Authorizer::open()
        });
    };
    if auth.silly.is_some() {
        return Err(key_err(
            "auth.silly",
            "silly auth is for distribution's tests only; use htpasswd or token",
        ));
    }
    let mode = match (&auth.htpasswd, &auth.token) {
        (Some(_), Some(_)) => return Err(key_err("auth", "configure htpasswd or token, not both")),
        (None, None) => Auth::None,
        (Some(h), None) => {
            let path = h
                .path
                .as_ref()
                .ok_or_else(|| key_err("auth.htpasswd.path", "is required"))?;
            let users = Htpasswd::load(path).map_err(|e| key_err("auth.htpasswd.path", e))?;
            Auth::Htpasswd {
                realm: h.realm.clone().unwrap_or_else(|| "berth".into()),
                users: std::sync::Arc::new(users),
            }
        }
        (None, Some(t)) => {
            let service = required(&t.service, "auth.token.service")?;
            let issuer = required(&t.issuer, "auth.token.issuer")?;
            let bundle = t
                .rootcertbundle
                .as_ref()
                .map(|p| read_file(p, "auth.token.rootcertbundle"))
                .transpose()?;
            let jwks = t
                .jwks
                .as_ref()
                .map(|p| read_file(p, "auth.token.jwks"))
                .transpose()?;
            let names = t.signingalgorithms.clone().unwrap_or_else(|| {
                ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
            let algorithms = names
                .iter()
                .map(|n| token::parse_algorithm(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| key_err("auth.token.signingalgorithms", e))?;
            if t.realm.is_none() && server.is_none() {
                return Err(key_err(
                    "auth.token.realm",
                    "is required (or set berth.tokenserver to issue tokens here)",
                ));
            }
            let verifier = token::TokenVerifier::new(
                t.realm.clone(),
                service,
                issuer,
                bundle.as_deref(),
                jwks.as_deref(),
                algorithms,
            )
            .map_err(|e| key_err("auth.token.rootcertbundle", e))?;
            Auth::Token(verifier)
        }
    };
    let issuer = match server {
        None => None,
        Some(s) => {
            let Some(t) = &auth.token else {
                return Err(key_err(
                    "berth.tokenserver",
                    "needs auth.token (service, issuer, rootcertbundle)",
                ));
            };
            let path = s
                .privatekey
                .as_ref()
                .ok_or_else(|| key_err("berth.tokenserver.privatekey", "is required"))?;
            let pem = read_file(path, "berth.tokenserver.privatekey")?;
            let users = s
                .users
                .as_ref()
                .map(|p| Htpasswd::load(p).map(std::sync::Arc::new))
                .transpose()
                .map_err(|e| key_err("berth.tokenserver.users", e))?;
            let expiry = Duration::from_secs(s.expiry.unwrap_or(300).clamp(10, 24 * 3600));
            let issuer = token::TokenIssuer::new(
                required(&t.service, "auth.token.service")?,
                required(&t.issuer, "auth.token.issuer")?,
                pem.as_bytes(),
                expiry,
                users,
                s.access.clone(),
            )
            .map_err(|e| key_err("berth.tokenserver.privatekey", e))?;
            Some(issuer)
        }
    };
    Ok(Authorizer {
        auth: mode,
        issuer,
        logins,
        robots: Default::default(),
        policy,
        oidc,
    })
}

/// The trusted OIDC issuers (`berth.oidc`); they need a policy, which alone says what their
/// tokens' identities may do.
fn oidc_issuers(
    configs: &[OidcIssuerConfig],
    have_policy: bool,
) -> Result<Option<std::sync::Arc<crate::auth::oidc::OidcIssuers>>, ConfigError> {
    use crate::auth::oidc::{IssuerSettings, OidcIssuers};
    if configs.is_empty() {
        return Ok(None);
    }
    if !have_policy {
        return Err(key_err(
            "berth.oidc",
            "needs berth.policy: its rules say what an issuer's identities may do",
        ));
    }
    let mut settings = Vec::new();
    for c in configs {
        let issuer = required(&c.issuer, "berth.oidc.issuer")?;
        let audiences = c.audience.as_ref().map(strings).unwrap_or_default();
        settings.push(IssuerSettings {
            issuer,
            audiences,
            account_claim: c.account.clone().unwrap_or_else(|| "sub".into()),
        });
    }
    OidcIssuers::new(settings)
        .map(|i| Some(std::sync::Arc::new(i)))
        .map_err(|e| key_err("berth.oidc", e))
}

fn login_settings(
    c: Option<&LoginsConfig>,
) -> Result<crate::auth::logins::LoginSettings, ConfigError> {
    let mut out = crate::auth::logins::LoginSettings::default();
    let Some(c) = c else {
        return Ok(out);
    };
    let t = &mut out.throttle;
    t.free_per_client = c.freefailures.unwrap_or(t.free_per_client);
    t.free_per_account = c.accountfreefailures.unwrap_or(t.free_per_account);
    for (raw, slot, key) in [
        (
            &c.maxdelay,
            &mut t.max_client_delay,
            "berth.logins.maxdelay",
        ),
        (
            &c.accountmaxdelay,
            &mut t.max_account_delay,
            "berth.logins.accountmaxdelay",
        ),
    ] {
        if let Some(text) = raw {
            *slot = parse_duration(text)
                .ok_or_else(|| key_err(key, format!("{text:?} is not a duration like 5m")))?;
        }
    }
    out.trust_forwarded_for = c.trustforwardedfor;
    Ok(out)
}
