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
    /// Berth: other origins (`host:port`) the upstream may redirect to or name as its token
    /// realm although they are loopback or private (its own storage, its auth server).
    pub trustedorigins: Vec<String>,
    /// Berth: largest blob taken from the upstream, in bytes (default 64 GiB).
    pub maxblobsize: Option<u64>,
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
    /// As `proxy.trustedorigins`.
    pub trustedorigins: Vec<String>,
    /// As `proxy.maxblobsize`.
    pub maxblobsize: Option<u64>,
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
    /// Loopback or private origins (host, port) besides the upstream's own that its redirects
    /// and token realm may name.
    pub trusted: Vec<(String, u16)>,
    /// Largest blob taken from the upstream.
    pub max_blob_bytes: u64,
}

/// Largest blob a cache takes from its upstream unless configured: a bound on what a broken or
/// hostile upstream can stream into the store, far above real layers.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 64 << 30;

impl UpstreamSettings {
    /// An upstream at `url` with the defaults: anonymous, a week's TTL, nothing else trusted.
    pub fn new(prefix: Option<&str>, url: url::Url) -> UpstreamSettings {
        UpstreamSettings {
            prefix: prefix.map(str::to_owned),
            url,
            credentials: None,
            ttl: Some(DEFAULT_TTL),
            trusted: Vec::new(),
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
        }
    }
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

/// Account and password written into the URL (`https://user:pass@host`, which Go's client
/// and so distribution accept), taken out of it so that it never reaches a log or a message.
fn split_userinfo(url: &mut url::Url) -> Option<(String, String)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let user = decode(url.username());
    let password = url.password().map(decode).unwrap_or_default();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some((user, password))
}

fn trusted_origins(raw: &[String], key: &str) -> Result<Vec<(String, u16)>, ConfigError> {
    raw.iter()
        .map(|o| {
            let text = o.trim();
            let text = text
                .strip_prefix("https://")
                .or_else(|| text.strip_prefix("http://"))
                .unwrap_or(text)
                .trim_end_matches('/');
            match text.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
                    Ok(port) => Ok((
                        h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                        port,
                    )),
                    Err(_) => Err(key_err(key, format!("{o:?}: the port is not a number"))),
                },
                _ => Err(key_err(key, format!("{o:?} is not host:port"))),
            }
        })
        .collect()
}

/// The checks both sections share, for the upstream at `key`.
#[allow(clippy::too_many_arguments)]
pub(super) fn upstream(
    key: &str,
    prefix: Option<&str>,
    remoteurl: Option<&str>,
    username: &Option<String>,
    password: &Option<String>,
    ttl: Option<&Value>,
    trusted: &[String],
    max_blob: Option<u64>,
) -> Result<UpstreamSettings, ConfigError> {
    let mut url = upstream_url(remoteurl, &format!("{key}.remoteurl"))?;
    let in_url = split_userinfo(&mut url);
    let mut credentials = credentials(username, password, key)?;
    if credentials.is_none() {
        credentials = in_url;
    }
    if max_blob == Some(0) {
        return Err(key_err(&format!("{key}.maxblobsize"), "must be above 0"));
    }
    Ok(UpstreamSettings {
        prefix: prefix.map(str::to_owned),
        url,
        credentials,
        ttl: cache_ttl(ttl, &format!("{key}.ttl"))?,
        trusted: trusted_origins(trusted, &format!("{key}.trustedorigins"))?,
        max_blob_bytes: max_blob.unwrap_or(DEFAULT_MAX_BLOB_BYTES),
    })
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
        out.push(upstream(
            &key,
            Some(prefix),
            p.remoteurl.as_deref(),
            &p.username,
            &p.password,
            p.ttl.as_ref(),
            &p.trustedorigins,
            p.maxblobsize,
        )?);
    }
    out.sort_by_key(|u| std::cmp::Reverse(u.prefix.as_ref().map_or(0, String::len)));
    if let Some(p) = proxy {
        out.push(upstream(
            "proxy",
            None,
            p.remoteurl.as_deref(),
            &p.username,
            &p.password,
            p.ttl.as_ref(),
            &p.trustedorigins,
            p.maxblobsize,
        )?);
    }
    Ok(out)
}
