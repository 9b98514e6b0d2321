//! `proxy` (distribution's pull-through cache of one upstream) and `berth.proxies` (several
//! upstreams, each serving the repositories under a prefix).

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ConfigError, key_err, parse_duration};

/// `proxy`: every repository is a cache of `remoteurl`, as in distribution.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// The upstream registry, e.g. `https://registry-1.docker.io`.
    pub remoteurl: Option<String>,
    /// Account at the upstream.
    pub username: Option<String>,
    /// Its password or access token.
    pub password: Option<String>,
    /// How long cached tags and manifests live after their last pull; their blobs go with
    /// the next garbage collection. Default 168h (distribution's week); `0` keeps them forever.
    pub ttl: Option<Value>,
}

/// `berth.proxies[]`: repositories under `prefix/` are a cache of `remoteurl`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PrefixedProxyConfig {
    /// Local repository prefix, e.g. `dockerhub`: `dockerhub/library/alpine` is fetched as
    /// `library/alpine`.
    pub prefix: Option<String>,
    /// The upstream registry.
    pub remoteurl: Option<String>,
    /// Account at the upstream.
    pub username: Option<String>,
    /// Its password or access token.
    pub password: Option<String>,
    /// As `proxy.ttl`.
    pub ttl: Option<Value>,
}

/// One upstream registry and the repositories it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Local repositories under this prefix come from the upstream with the prefix removed;
    /// `None`: every repository, by the same name.
    pub prefix: Option<String>,
    /// Scheme, host and port of the upstream.
    pub url: url::Url,
    /// Account and password at the upstream.
    pub credentials: Option<(String, String)>,
    /// Cached content not pulled for this long is removed; `None`: never.
    pub ttl: Option<Duration>,
}

/// What caches keep when the configuration says nothing: distribution's fixed week.
const DEFAULT_TTL: Duration = Duration::from_secs(168 * 3600);

/// A TTL as written: a duration like `72h`, or `0` (a YAML number or string) for "forever".
fn cache_ttl(raw: Option<&Value>, key: &str) -> Result<Option<Duration>, ConfigError> {
    let text = match raw {
        None => return Ok(Some(DEFAULT_TTL)),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(t)) => t.trim().to_owned(),
        Some(other) => format!("{other:?}"),
    };
    if text == "0" {
        return Ok(None);
    }
    match parse_duration(&text) {
        Some(d) if d.is_zero() => Ok(None),
        Some(d) => Ok(Some(d)),
        None => Err(key_err(
            key,
            format!("{text:?} is not a duration like 72h (or 0 for never)"),
        )),
    }
}

fn upstream_url(raw: Option<&str>, key: &str) -> Result<url::Url, ConfigError> {
    let raw = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| key_err(key, "is required"))?;
    let url =
        url::Url::parse(raw).map_err(|e| key_err(key, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(key_err(key, format!("{raw:?} is not an http(s) URL")));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(key_err(
            key,
            format!("{raw:?}: give the registry's origin only (Berth adds /v2/...)"),
        ));
    }
    Ok(url)
}

fn credentials(
    username: &Option<String>,
    password: &Option<String>,
    key: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    match (username, password) {
        (None, None) => Ok(None),
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u.clone(), p.clone()))),
        _ => Err(key_err(
            key,
            "username and password go together (or neither, for anonymous pulls)",
        )),
    }
}

/// Validates both sections into upstreams, longest prefix first and the catch-all last.
pub(super) fn upstreams(
    proxy: Option<&ProxyConfig>,
    prefixed: &[PrefixedProxyConfig],
) -> Result<Vec<UpstreamSettings>, ConfigError> {
    let mut out = Vec::new();
    for (i, p) in prefixed.iter().enumerate() {
        let key = format!("berth.proxies[{i}]");
        let prefix = p
            .prefix
            .as_deref()
            .map(|x| x.trim_matches('/'))
            .filter(|x| !x.is_empty())
            .ok_or_else(|| key_err(&format!("{key}.prefix"), "is required"))?;
        // The prefix must itself be a valid start of repository names.
        if prefix.parse::<registry_core::RepositoryName>().is_err() {
            return Err(key_err(
                &format!("{key}.prefix"),
                format!("{prefix:?} is not a repository name prefix"),
            ));
        }
        if out
            .iter()
            .any(|u: &UpstreamSettings| u.prefix.as_deref() == Some(prefix))
        {
            return Err(key_err(
                &format!("{key}.prefix"),
                format!("{prefix:?} is given twice"),
            ));
        }
        out.push(UpstreamSettings {
            prefix: Some(prefix.to_owned()),
            url: upstream_url(p.remoteurl.as_deref(), &format!("{key}.remoteurl"))?,
            credentials: credentials(&p.username, &p.password, &key)?,
            ttl: cache_ttl(p.ttl.as_ref(), &format!("{key}.ttl"))?,
        });
    }
    out.sort_by_key(|u| std::cmp::Reverse(u.prefix.as_ref().map_or(0, String::len)));
    if let Some(p) = proxy {
        out.push(UpstreamSettings {
            prefix: None,
            url: upstream_url(p.remoteurl.as_deref(), "proxy.remoteurl")?,
            credentials: credentials(&p.username, &p.password, "proxy")?,
            ttl: cache_ttl(p.ttl.as_ref(), "proxy.ttl")?,
        });
    }
    Ok(out)
}
