//! Configuration in the shape of distribution's `config.yml`, with `REGISTRY_*` overrides.
//!
//! Unknown keys are reported (a distribution config carries many Berth has no use for) but not
//! fatal; a key with a wrong type or an impossible value is fatal and named.

mod env;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use storage_drivers::azure::AzureOptions;
use storage_drivers::gcs::GcsOptions;
use storage_drivers::s3::{COPY_OBJECT_LIMIT, S3Options};

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse.
    #[error("config is not valid YAML: {0}")]
    Yaml(String),
    /// A key has the wrong type or an invalid value.
    #[error("config key `{key}`: {message}")]
    Key {
        /// Dotted path of the key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Config format version (accepted for compatibility; only 0.1 exists).
    pub version: Option<Value>,
    /// Logging.
    pub log: LogConfig,
    /// Storage backend and storage behaviour.
    pub storage: StorageConfig,
    /// HTTP listener.
    pub http: HttpConfig,
    /// Authentication.
    pub auth: Option<AuthConfig>,
    /// Webhook notifications.
    pub notifications: Option<NotificationsConfig>,
    /// Health checks (accepted for compatibility, unused).
    pub health: Option<Value>,
    /// Redis (accepted for compatibility, unused: Berth keeps no shared cache).
    pub redis: Option<Value>,
    /// Berth-only settings.
    pub berth: BerthConfig,
}

/// `log`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// error | warn | info | debug | trace.
    pub level: Option<String>,
    /// text | json.
    pub formatter: Option<String>,
    /// Extra fields (accepted for compatibility).
    pub fields: Option<Value>,
    /// Access log settings (accepted for compatibility).
    pub accesslog: Option<Value>,
}

/// `storage`: exactly one backend section plus behaviour sections.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Local disk.
    pub filesystem: Option<FilesystemConfig>,
    /// Process memory (tests and demos only).
    pub inmemory: Option<Value>,
    /// Amazon S3 or a compatible store.
    pub s3: Option<S3Config>,
    /// Azure Blob Storage.
    pub azure: Option<AzureConfig>,
    /// Google Cloud Storage.
    pub gcs: Option<GcsConfig>,
    /// `delete.enabled`.
    pub delete: Option<DeleteConfig>,
    /// `redirect.disable`.
    pub redirect: Option<RedirectConfig>,
    /// Maintenance (upload purging, read-only).
    pub maintenance: Option<MaintenanceConfig>,
    /// Cache (accepted for compatibility: Berth's caches need no configuration).
    pub cache: Option<Value>,
    /// Tag concurrency (accepted for compatibility).
    pub tag: Option<Value>,
}

/// `storage.filesystem`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilesystemConfig {
    /// Directory holding `docker/registry/v2`.
    pub rootdirectory: Option<PathBuf>,
    /// Accepted for compatibility.
    pub maxthreads: Option<Value>,
}

/// `storage.s3` (distribution's keys).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Static access key (else the AWS credential chain: env, IRSA, Pod Identity, IMDS).
    pub accesskey: Option<String>,
    /// Static secret key.
    pub secretkey: Option<String>,
    /// Session token for temporary static keys.
    pub sessiontoken: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store.
    pub regionendpoint: Option<String>,
    /// Bucket.
    pub bucket: Option<String>,
    /// Path-style addressing.
    pub forcepathstyle: Option<bool>,
    /// Key prefix inside the bucket.
    pub rootdirectory: Option<String>,
    /// Upload part size in bytes (at least 5 MiB).
    pub chunksize: Option<u64>,
    /// Objects above this size are copied part by part (UploadPartCopy).
    pub multipartcopythresholdsize: Option<u64>,
    /// Part size of those copies.
    pub multipartcopychunksize: Option<u64>,
    /// Use HTTPS to a `regionendpoint` given without a scheme (default true).
    pub secure: Option<bool>,
    /// Accepted for compatibility (SigV4 is always used).
    pub v4auth: Option<bool>,
    /// Accepted for compatibility.
    pub multipartcopymaxconcurrency: Option<Value>,
}

/// `storage.azure` (distribution's keys plus `endpoint`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AzureConfig {
    /// Storage account.
    pub accountname: Option<String>,
    /// Shared key (else workload identity / managed identity from the environment).
    pub accountkey: Option<String>,
    /// Container.
    pub container: Option<String>,
    /// Cloud domain (default `core.windows.net`).
    pub realm: Option<String>,
    /// Key prefix inside the container.
    pub rootdirectory: Option<String>,
    /// Full blob endpoint, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1` (Berth only).
    pub endpoint: Option<String>,
    /// Block size in bytes.
    pub chunksize: Option<u64>,
}

/// `storage.gcs` (distribution's keys plus `endpoint` and `anonymous`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GcsConfig {
    /// Bucket.
    pub bucket: Option<String>,
    /// Path of a service-account key JSON (else Application Default Credentials).
    pub keyfile: Option<PathBuf>,
    /// A service-account key given inline, as distribution allows.
    pub credentials: Option<Value>,
    /// Key prefix inside the bucket.
    pub rootdirectory: Option<String>,
    /// Upload part size in bytes.
    pub chunksize: Option<u64>,
    /// API endpoint, e.g. an emulator's `http://127.0.0.1:4443` (Berth only).
    pub endpoint: Option<String>,
    /// Send no credentials (emulators only; Berth only).
    pub anonymous: Option<bool>,
}

/// `storage.delete`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteConfig {
    /// Whether deletes are allowed.
    pub enabled: bool,
}

/// `storage.redirect`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RedirectConfig {
    /// Serve blobs through Berth instead of redirecting to the store.
    pub disable: bool,
    /// Lifetime of presigned URLs in seconds (Berth only; default 1200).
    pub expiry: Option<u64>,
    /// Scheme and host clients reach the store at (a CDN or public endpoint; Berth only).
    pub publicendpoint: Option<String>,
}

/// `http`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Listen address: `host:port` or distribution's `:port`.
    pub addr: Option<String>,
    /// Externally visible base URL (`https://registry.example.com`) used in Location headers.
    pub host: Option<String>,
    /// Accepted for compatibility: Berth keeps upload state in the store and needs no shared secret.
    pub secret: Option<String>,
    /// Accepted for compatibility.
    pub net: Option<String>,
    /// Accepted for compatibility.
    pub prefix: Option<String>,
    /// Extra response headers (accepted for compatibility).
    pub headers: Option<Value>,
    /// TLS.
    pub tls: Option<TlsConfig>,
    /// Debug server (accepted for compatibility).
    pub debug: Option<Value>,
    /// HTTP/2 settings (accepted for compatibility).
    pub http2: Option<Value>,
    /// Draining timeout (accepted for compatibility).
    pub draintimeout: Option<Value>,
    /// Relative URLs (accepted for compatibility: Berth always sends relative Location headers
    /// unless `http.host` is set).
    pub relativeurls: Option<bool>,
}

/// `notifications`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NotificationsConfig {
    /// Where events go.
    pub endpoints: Vec<EndpointConfig>,
    /// Accepted for compatibility.
    pub events: Option<Value>,
}

/// `notifications.endpoints[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointConfig {
    /// Name for logs.
    pub name: Option<String>,
    /// Skip this endpoint.
    pub disabled: bool,
    /// URL events are POSTed to.
    pub url: Option<String>,
    /// Extra headers: name to list of values.
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    /// Request timeout (default 1s).
    pub timeout: Option<String>,
    /// Attempts per event (default 10).
    pub threshold: Option<u32>,
    /// Pause between attempts (default 1s).
    pub backoff: Option<String>,
    /// Media types not sent.
    pub ignoredmediatypes: Vec<String>,
    /// `mediatypes` and `actions` not sent.
    pub ignore: Option<IgnoreConfig>,
}

/// `notifications.endpoints[].ignore`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IgnoreConfig {
    /// Media types not sent.
    pub mediatypes: Vec<String>,
    /// Actions not sent.
    pub actions: Vec<String>,
}

/// `storage.maintenance`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    /// `readonly.enabled`: refuse every write.
    pub readonly: Option<ReadOnlyConfig>,
    /// Removal of abandoned upload sessions.
    pub uploadpurging: Option<UploadPurgingConfig>,
}

/// `storage.maintenance.readonly`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReadOnlyConfig {
    /// Refuse writes.
    pub enabled: bool,
}

/// `storage.maintenance.uploadpurging` (distribution's keys; durations like `168h`, `24h`, `30m`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UploadPurgingConfig {
    /// Run purging (default true).
    pub enabled: Option<bool>,
    /// Uploads older than this are removed (default 168h).
    pub age: Option<String>,
    /// How often to look (default 24h).
    pub interval: Option<String>,
    /// Only log what would be removed.
    pub dryrun: Option<bool>,
}

/// When and what to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeSettings {
    /// Uploads older than this go.
    pub age: Duration,
    /// Pause between runs.
    pub interval: Duration,
    /// Log only.
    pub dry_run: bool,
}

/// Parses distribution's Go-style durations: `168h`, `30m`, `45s`, `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += match c {
            'h' => n * 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                n
            }
            'm' => n * 60_000,
            's' => n * 1000,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then_some(Duration::from_millis(total))
}

/// `http.tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Client certificate authorities (not supported).
    pub clientcas: Option<Value>,
    /// Let's Encrypt (not supported).
    pub letsencrypt: Option<Value>,
    /// Accepted for compatibility (rustls speaks TLS 1.2 and 1.3 only).
    pub minimumtls: Option<String>,
    /// Accepted for compatibility.
    pub ciphersuites: Option<Value>,
}

/// Certificate and key files to serve TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `berth`: settings distribution has no equivalent for.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BerthConfig {
    /// Largest manifest accepted, in bytes (default 4 MiB).
    pub maxmanifestbytes: Option<usize>,
    /// The built-in token issuer.
    pub tokenserver: Option<TokenServerConfig>,
    /// Scheduled online garbage collection.
    pub gc: Option<GcConfig>,
}

/// `berth.gc`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GcConfig {
    /// Run on a schedule (default false; `berth gc` runs it by hand).
    pub enabled: bool,
    /// Pause between runs (default 24h).
    pub interval: Option<String>,
    /// Keep anything younger than this (default 2h).
    pub grace: Option<String>,
    /// Only report.
    pub dryrun: bool,
    /// Also remove manifests no tag reaches.
    pub deleteuntagged: bool,
}

/// Scheduled collection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// Pause between runs.
    pub interval: Duration,
    /// Grace window.
    pub grace: Duration,
    /// Report only.
    pub dry_run: bool,
    /// Remove untagged manifests too.
    pub delete_untagged: bool,
}

/// `auth`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Basic auth from an htpasswd file.
    pub htpasswd: Option<HtpasswdConfig>,
    /// Docker token auth.
    pub token: Option<TokenConfig>,
    /// distribution's test-only `silly` auth (refused).
    pub silly: Option<Value>,
}

/// `auth.htpasswd`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HtpasswdConfig {
    /// Realm of the Basic challenge.
    pub realm: Option<String>,
    /// The htpasswd file (bcrypt entries).
    pub path: Option<PathBuf>,
}

/// `auth.token`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Token service URL; defaults to Berth's own `/auth/token` when `berth.tokenserver` is set.
    pub realm: Option<String>,
    /// Service name: the tokens' audience.
    pub service: Option<String>,
    /// Expected token issuer.
    pub issuer: Option<String>,
    /// PEM certificates or public keys that sign tokens.
    pub rootcertbundle: Option<PathBuf>,
    /// A JWKS file with the signing keys.
    pub jwks: Option<PathBuf>,
    /// Allowed JWT algorithms (default: RS256/384/512, ES256/384/512, EdDSA).
    pub signingalgorithms: Option<Vec<String>>,
    /// Accepted for compatibility.
    pub autoredirect: Option<bool>,
}

/// `berth.tokenserver`: Berth issues tokens itself, for teams without an auth server.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenServerConfig {
    /// PKCS#8 PEM private key (EC P-256 for ES256, or RSA for RS256); its public key goes in
    /// `auth.token.rootcertbundle`.
    pub privatekey: Option<PathBuf>,
    /// Token lifetime in seconds (default 300).
    pub expiry: Option<u64>,
    /// htpasswd file with the users who may log in.
    pub users: Option<PathBuf>,
    /// Access rules: account (user, `*` any user, `anonymous`), repository glob, actions.
    pub access: Vec<crate::auth::token::AccessRule>,
}

/// Which backend to build, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageChoice {
    /// Local disk under this directory.
    Filesystem(PathBuf),
    /// Memory.
    InMemory,
    /// Amazon S3 or compatible.
    S3(S3Options),
    /// Azure Blob Storage.
    Azure(AzureOptions),
    /// Google Cloud Storage.
    Gcs(GcsOptions),
}

/// Default upload part size on object stores.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
const MIN_PART_SIZE: u64 = 5 << 20;

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
    /// Base URL for absolute Location headers, if configured.
    pub host: Option<String>,
    /// The storage backend.
    pub storage: StorageChoice,
    /// Deletes allowed.
    pub delete_enabled: bool,
    /// Redirect blob GETs to presigned URLs where the backend can sign.
    pub redirect: bool,
    /// Lifetime of presigned URLs.
    pub redirect_expiry: Duration,
    /// Rewrites the scheme and host of presigned URLs.
    pub redirect_public_endpoint: Option<url::Url>,
    /// Manifest size limit.
    pub max_manifest_bytes: usize,
    /// Authentication and authorization.
    pub auth: std::sync::Arc<crate::auth::Authorizer>,
    /// Refuse every write (maintenance).
    pub read_only: bool,
    /// Abandoned-upload purging, when on.
    pub purge: Option<PurgeSettings>,
    /// Scheduled garbage collection, when on.
    pub gc: Option<GcSettings>,
    /// Webhook endpoints.
    pub notifications: Vec<crate::notify::EndpointSettings>,
    /// Log level filter.
    pub log_level: String,
    /// Emit JSON logs.
    pub log_json: bool,
}

/// Where the configuration comes from.
pub enum Source<'a> {
    /// No file: the embedded default (local disk under ./data, 127.0.0.1:5000, deletes on).
    Embedded,
    /// A distribution-style YAML file.
    File(&'a Path),
}

const EMBEDDED: &str = "
version: 0.1
http:
  addr: 127.0.0.1:5000
storage:
  filesystem:
    rootdirectory: ./data
  delete:
    enabled: true
";

/// Loads, overrides from the environment, and validates. Returns the settings and warnings.
pub fn load(
    source: Source<'_>,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let text = match source {
        Source::Embedded => EMBEDDED.to_owned(),
        Source::File(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
            path: p.to_owned(),
            source: e,
        })?,
    };
    let mut value: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
    if value.is_null() {
        value = Value::Mapping(Default::default());
    }
    env::apply_overrides(&mut value, environment)?;
    let mut warnings = Vec::new();
    let config: Config = {
        let mut on_ignored = |path: serde_ignored::Path<'_>| {
            warnings.push(format!(
                "config key `{}` is not used by Berth and was ignored",
                dotted(&path.to_string())
            ));
        };
        let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = dotted(&e.path().to_string());
            key_err(&key, e.into_inner().to_string())
        })?
    };
    let settings = validate(config, &mut warnings)?;
    Ok((settings, warnings))
}

/// `storage.filesystem.?.x` (serde's view, `?` for an Option) as the user wrote it.
fn dotted(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

fn parse_addr(addr: &str) -> Result<SocketAddr, ConfigError> {
    // distribution writes `:5000` for "all interfaces".
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    full.parse()
        .map_err(|_| key_err("http.addr", format!("{addr:?} is not host:port")))
}

fn validate(config: Config, warnings: &mut Vec<String>) -> Result<Settings, ConfigError> {
    let s = &config.storage;
    let mut chosen = Vec::new();
    if let Some(fs) = &s.filesystem {
        let root = fs
            .rootdirectory
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/registry"));
        chosen.push(("filesystem", Some(StorageChoice::Filesystem(root))));
    }
    if s.inmemory.is_some() {
        chosen.push(("inmemory", Some(StorageChoice::InMemory)));
    }
    let public_endpoint = match s
        .redirect
        .as_ref()
        .and_then(|r| r.publicendpoint.as_deref())
    {
        None => None,
        Some(p) => Some(
            url::Url::parse(p)
                .map_err(|e| key_err("storage.redirect.publicendpoint", format!("{p:?}: {e}")))?,
        ),
    };
    if let Some(c) = &s.s3 {
        chosen.push((
            "s3",
            Some(StorageChoice::S3(s3_options(c, public_endpoint.as_ref())?)),
        ));
    }
    if let Some(c) = &s.azure {
        chosen.push(("azure", Some(StorageChoice::Azure(azure_options(c)?))));
    }
    if let Some(c) = &s.gcs {
        chosen.push(("gcs", Some(StorageChoice::Gcs(gcs_options(c)?))));
    }
    let storage = match chosen.as_slice() {
        [] => {
            return Err(key_err(
                "storage",
                "no storage backend configured (filesystem, s3, azure, gcs, inmemory)",
            ));
        }
        [(_, Some(choice))] => choice.clone(),
        [(name, None)] => {
            return Err(key_err(
                &format!("storage.{name}"),
                "this backend is not available in this build yet",
            ));
        }
        many => {
            let names: Vec<_> = many.iter().map(|(n, _)| *n).collect();
            return Err(key_err(
                "storage",
                format!(
                    "exactly one backend may be configured, found {}",
                    names.join(", ")
                ),
            ));
        }
    };
    let auth = std::sync::Arc::new(authorizer(
        config.auth.as_ref(),
        config.berth.tokenserver.as_ref(),
    )?);
    let tls = match &config.http.tls {
        None => None,
        Some(t) => {
            if t.clientcas.is_some() {
                return Err(key_err(
                    "http.tls.clientcas",
                    "client certificate authentication is not supported",
                ));
            }
            if t.letsencrypt.is_some() {
                return Err(key_err(
                    "http.tls.letsencrypt",
                    "not supported: give certificate and key files",
                ));
            }
            let certificate = t
                .certificate
                .clone()
                .ok_or_else(|| key_err("http.tls.certificate", "is required"))?;
            let key = t
                .key
                .clone()
                .ok_or_else(|| key_err("http.tls.key", "is required"))?;
            read_file(&certificate, "http.tls.certificate")?;
            read_file(&key, "http.tls.key")?;
            Some(TlsFiles { certificate, key })
        }
    };
    if config.http.secret.is_some() {
        warnings.push("http.secret is not needed: upload state lives in the store, so any replica serves any request".into());
    }
    let expiry = s
        .redirect
        .as_ref()
        .and_then(|r| r.expiry)
        .unwrap_or(20 * 60);
    if expiry == 0 || expiry > 7 * 24 * 3600 {
        return Err(key_err(
            "storage.redirect.expiry",
            "must be between 1 second and 7 days (604800)",
        ));
    }
    let level = config.log.level.clone().unwrap_or_else(|| "info".into());
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(key_err(
            "log.level",
            format!("{level:?} is not one of error, warn, info, debug, trace"),
        ));
    }
    let log_json = match config.log.formatter.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some("logstash") => true,
        Some(other) => {
            return Err(key_err(
                "log.formatter",
                format!("{other:?} is not text or json"),
            ));
        }
    };
    if let Some(h) = &config.http.host {
        url::Url::parse(h).map_err(|e| key_err("http.host", format!("{h:?} is not a URL: {e}")))?;
    }
    let max_manifest_bytes = config.berth.maxmanifestbytes.unwrap_or(4 << 20);
    if max_manifest_bytes < 4 << 20 {
        return Err(key_err(
            "berth.maxmanifestbytes",
            "must be at least 4194304 (4 MiB), as the OCI spec requires",
        ));
    }
    Ok(Settings {
        tls,
        addr: parse_addr(config.http.addr.as_deref().unwrap_or(":5000"))?,
        host: config.http.host.map(|h| h.trim_end_matches('/').to_owned()),
        storage,
        delete_enabled: s.delete.as_ref().is_some_and(|d| d.enabled),
        redirect: !s.redirect.as_ref().is_some_and(|r| r.disable),
        redirect_expiry: Duration::from_secs(expiry),
        redirect_public_endpoint: public_endpoint,
        max_manifest_bytes,
        auth,
        read_only: s
            .maintenance
            .as_ref()
            .and_then(|m| m.readonly.as_ref())
            .is_some_and(|r| r.enabled),
        gc: gc_settings(config.berth.gc.as_ref())?,
        notifications: endpoints(config.notifications.as_ref())?,
        purge: purge_settings(
            s.maintenance
                .as_ref()
                .and_then(|m| m.uploadpurging.as_ref()),
        )?,
        log_level: level,
        log_json,
    })
}

fn endpoints(
    c: Option<&NotificationsConfig>,
) -> Result<Vec<crate::notify::EndpointSettings>, ConfigError> {
    let Some(c) = c else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, e) in c.endpoints.iter().enumerate().filter(|(_, e)| !e.disabled) {
        let key = |k: &str| format!("notifications.endpoints[{i}].{k}");
        let url = required(&e.url, &key("url"))?;
        url::Url::parse(&url).map_err(|err| key_err(&key("url"), format!("{url:?}: {err}")))?;
        let mut ignored_media_types = e.ignoredmediatypes.clone();
        let mut ignored_actions = Vec::new();
        if let Some(ig) = &e.ignore {
            ignored_media_types.extend(ig.mediatypes.iter().cloned());
            ignored_actions.extend(ig.actions.iter().cloned());
        }
        out.push(crate::notify::EndpointSettings {
            name: e.name.clone().unwrap_or_else(|| format!("endpoint{i}")),
            headers: e
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            timeout: duration_key(&e.timeout, "1s", &key("timeout"))?,
            threshold: e.threshold.unwrap_or(10).max(1),
            backoff: duration_key(&e.backoff, "1s", &key("backoff"))?,
            ignored_actions,
            ignored_media_types,
            url,
        });
    }
    Ok(out)
}

/// A duration setting (`30m`, `24h`, `500ms`), its default when absent, an error naming the key.
fn duration_key(v: &Option<String>, default: &str, key: &str) -> Result<Duration, ConfigError> {
    let text = v.as_deref().unwrap_or(default);
    parse_duration(text).ok_or_else(|| {
        key_err(
            key,
            format!("{text:?} is not a duration like 24h, 30m or 500ms"),
        )
    })
}

fn gc_settings(c: Option<&GcConfig>) -> Result<Option<GcSettings>, ConfigError> {
    let Some(c) = c.filter(|c| c.enabled) else {
        return Ok(None);
    };
    Ok(Some(GcSettings {
        interval: duration_key(&c.interval, "24h", "berth.gc.interval")?,
        grace: duration_key(&c.grace, "2h", "berth.gc.grace")?,
        dry_run: c.dryrun,
        delete_untagged: c.deleteuntagged,
    }))
}

fn purge_settings(c: Option<&UploadPurgingConfig>) -> Result<Option<PurgeSettings>, ConfigError> {
    let default = UploadPurgingConfig::default();
    let c = c.unwrap_or(&default);
    if c.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(PurgeSettings {
        age: duration_key(&c.age, "168h", "storage.maintenance.uploadpurging.age")?,
        interval: duration_key(
            &c.interval,
            "24h",
            "storage.maintenance.uploadpurging.interval",
        )?,
        dry_run: c.dryrun.unwrap_or(false),
    }))
}

fn read_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| key_err(key, format!("cannot read {}: {e}", path.display())))
}

fn authorizer(
    auth: Option<&AuthConfig>,
    server: Option<&TokenServerConfig>,
) -> Result<crate::auth::Authorizer, ConfigError> {
    use crate::auth::{Auth, Authorizer, htpasswd::Htpasswd, token};
    let Some(auth) = auth else {
        if server.is_some() {
            return Err(key_err(
                "berth.tokenserver",
                "needs auth.token (service, issuer, rootcertbundle)",
            ));
        }
        return Ok(Authorizer::open());
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
    Ok(Authorizer { auth: mode, issuer })
}

fn required(v: &Option<String>, key: &str) -> Result<String, ConfigError> {
    match v.as_deref().map(str::trim) {
        Some(x) if !x.is_empty() => Ok(x.to_owned()),
        _ => Err(key_err(key, "is required")),
    }
}

fn part_size(v: Option<u64>, key: &str) -> Result<u64, ConfigError> {
    let size = v.unwrap_or(DEFAULT_PART_SIZE);
    if size < MIN_PART_SIZE {
        return Err(key_err(
            key,
            format!("{size} is below the 5 MiB minimum part size of object stores"),
        ));
    }
    if size > 5 << 30 {
        return Err(key_err(
            key,
            "must be at most 5 GiB (the largest part object stores accept)",
        ));
    }
    Ok(size)
}

fn s3_options(c: &S3Config, public: Option<&url::Url>) -> Result<S3Options, ConfigError> {
    let endpoint = match c.regionendpoint.as_deref().filter(|e| !e.is_empty()) {
        None => None,
        Some(e) if e.contains("://") => {
            url::Url::parse(e)
                .map_err(|err| key_err("storage.s3.regionendpoint", format!("{e:?}: {err}")))?;
            Some(e.trim_end_matches('/').to_owned())
        }
        Some(e) => Some(format!(
            "{}://{e}",
            if c.secure.unwrap_or(true) {
                "https"
            } else {
                "http"
            }
        )),
    };
    if c.accesskey.is_some() != c.secretkey.is_some() {
        return Err(key_err(
            "storage.s3.secretkey",
            "accesskey and secretkey go together",
        ));
    }
    if endpoint.is_none() && c.region.is_none() && std::env::var_os("AWS_REGION").is_none() {
        return Err(key_err(
            "storage.s3.region",
            "is required (or set AWS_REGION)",
        ));
    }
    let copy_threshold = c
        .multipartcopythresholdsize
        .unwrap_or(COPY_OBJECT_LIMIT)
        .min(COPY_OBJECT_LIMIT);
    Ok(S3Options {
        bucket: required(&c.bucket, "storage.s3.bucket")?,
        region: c.region.clone(),
        endpoint,
        access_key: c.accesskey.clone().filter(|k| !k.is_empty()),
        secret_key: c.secretkey.clone().filter(|k| !k.is_empty()),
        session_token: c.sessiontoken.clone().filter(|k| !k.is_empty()),
        force_path_style: c.forcepathstyle.unwrap_or(false),
        root: c
            .rootdirectory
            .clone()
            .unwrap_or_default()
            .trim_matches('/')
            .to_owned(),
        part_size: part_size(c.chunksize, "storage.s3.chunksize")?,
        copy_threshold,
        copy_part_size: part_size(
            Some(c.multipartcopychunksize.unwrap_or(1 << 30)),
            "storage.s3.multipartcopychunksize",
        )?,
        public_endpoint: public.map(|u| u.as_str().trim_end_matches('/').to_owned()),
    })
}

fn azure_options(c: &AzureConfig) -> Result<AzureOptions, ConfigError> {
    let account = required(&c.accountname, "storage.azure.accountname")?;
    let endpoint = match (&c.endpoint, &c.realm) {
        (Some(e), _) => {
            url::Url::parse(e)
                .map_err(|err| key_err("storage.azure.endpoint", format!("{e:?}: {err}")))?;
            Some(e.trim_end_matches('/').to_owned())
        }
        (None, Some(realm)) if realm != "core.windows.net" => {
            Some(AzureOptions::endpoint_for_realm(&account, realm))
        }
        (None, _) => None,
    };
    Ok(AzureOptions {
        account,
        account_key: c.accountkey.clone().filter(|k| !k.is_empty()),
        container: required(&c.container, "storage.azure.container")?,
        endpoint,
        root: c
            .rootdirectory
            .clone()
            .unwrap_or_default()
            .trim_matches('/')
            .to_owned(),
        part_size: part_size(c.chunksize, "storage.azure.chunksize")?,
    })
}

fn gcs_options(c: &GcsConfig) -> Result<GcsOptions, ConfigError> {
    let key = match (&c.keyfile, &c.credentials) {
        (Some(_), Some(_)) => {
            return Err(key_err(
                "storage.gcs.credentials",
                "give keyfile or credentials, not both",
            ));
        }
        (Some(path), None) => Some(std::fs::read_to_string(path).map_err(|e| {
            key_err(
                "storage.gcs.keyfile",
                format!("cannot read {}: {e}", path.display()),
            )
        })?),
        (None, Some(inline)) => Some(
            serde_json::to_string(inline)
                .map_err(|e| key_err("storage.gcs.credentials", e.to_string()))?,
        ),
        (None, None) => None,
    };
    if let Some(k) = &key {
        let v: serde_json::Value = serde_json::from_str(k).map_err(|e| {
            key_err(
                "storage.gcs.keyfile",
                format!("not a service-account key JSON: {e}"),
            )
        })?;
        if v.get("private_key").and_then(|p| p.as_str()).is_none()
            || v.get("client_email").is_none()
        {
            return Err(key_err(
                "storage.gcs.keyfile",
                "a service-account key needs private_key and client_email",
            ));
        }
    }
    if let Some(e) = &c.endpoint {
        url::Url::parse(e)
            .map_err(|err| key_err("storage.gcs.endpoint", format!("{e:?}: {err}")))?;
    }
    Ok(GcsOptions {
        bucket: required(&c.bucket, "storage.gcs.bucket")?,
        root: c
            .rootdirectory
            .clone()
            .unwrap_or_default()
            .trim_matches('/')
            .to_owned(),
        endpoint: c.endpoint.clone(),
        service_account_key: key,
        anonymous: c.anonymous.unwrap_or(false),
        part_size: part_size(c.chunksize, "storage.gcs.chunksize")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<(Settings, Vec<String>), ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yml");
        std::fs::write(&p, yaml).unwrap();
        load(
            Source::File(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn embedded_default_is_local_disk_on_loopback() {
        let (s, w) = load(Source::Embedded, Vec::new()).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(
            s.storage,
            StorageChoice::Filesystem(PathBuf::from("./data"))
        );
        assert!(s.delete_enabled);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn distribution_config_is_accepted() {
        let yaml = "
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
";
        let (s, _) = load_str(yaml, &[]).unwrap();
        assert_eq!(s.addr.to_string(), "0.0.0.0:5000");
        assert!(!s.delete_enabled, "distribution's default: deletes off");
        assert!(s.redirect);
    }

    #[test]
    fn env_overrides_keys() {
        let (s, _) = load_str(
            "storage: {filesystem: {rootdirectory: /a}}\n",
            &[
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/b"),
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:7000"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(s.storage, StorageChoice::Filesystem(PathBuf::from("/b")));
        assert_eq!(s.addr.to_string(), "127.0.0.1:7000");
        assert!(s.delete_enabled);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load_str("storage: {filesystem: {}}\nhttp: {addr: nonsense}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("http.addr"), "{e}");
        let e = load_str("storage: {filesystem: {}, delete: {enabled: maybe}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage.delete.enabled"), "{e}");
        let e = load_str("storage: {filesystem: {}, inmemory: {}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("exactly one backend"), "{e}");
        let e = load_str("log: {level: loud}\nstorage: {inmemory: {}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("log.level"), "{e}");
        let e = load_str("version: 0.1\n", &[]).unwrap_err();
        assert!(e.to_string().contains("`storage`"), "{e}");
        let e = load_str("storage: [1, 2]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage"), "{e}");
    }

    #[test]
    fn s3_section_in_distribution_shape() {
        let yaml = "
storage:
  s3:
    region: eu-west-1
    bucket: images
    regionendpoint: http://127.0.0.1:9000
    accesskey: AK
    secretkey: SK
    forcepathstyle: true
    rootdirectory: /registry
    chunksize: 10485760
  redirect:
    expiry: 60
    publicendpoint: https://cdn.example.com
";
        let (s, w) = load_str(yaml, &[("REGISTRY_STORAGE_S3_BUCKET", "other")]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let StorageChoice::S3(o) = s.storage else {
            panic!("not s3")
        };
        assert_eq!(o.bucket, "other");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(o.root, "registry");
        assert_eq!(o.part_size, 10 << 20);
        assert!(o.force_path_style);
        assert_eq!(
            o.public_endpoint.as_deref(),
            Some("https://cdn.example.com")
        );
        assert_eq!(s.redirect_expiry, Duration::from_secs(60));
        let e = load_str(
            "storage: {s3: {bucket: b, region: r, chunksize: 1000}}\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("storage.s3.chunksize"), "{e}");
        let e = load_str("storage: {s3: {region: r}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage.s3.bucket"), "{e}");
        let e = load_str("storage: {s3: {bucket: b, region: r, accesskey: a}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage.s3.secretkey"), "{e}");
    }

    #[test]
    fn azure_section() {
        let (s, _) = load_str(
            "storage: {azure: {accountname: acct, accountkey: k, container: c, realm: core.chinacloudapi.cn}}\n",
            &[],
        )
        .unwrap();
        let StorageChoice::Azure(o) = s.storage else {
            panic!("not azure")
        };
        assert_eq!(
            o.endpoint.as_deref(),
            Some("https://acct.blob.core.chinacloudapi.cn")
        );
        assert_eq!(o.part_size, DEFAULT_PART_SIZE);
        let e = load_str("storage: {azure: {accountname: a}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage.azure.container"), "{e}");
    }

    #[test]
    fn gcs_section() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        std::fs::write(
            &key,
            r#"{"type":"service_account","private_key":"x","client_email":"a@b"}"#,
        )
        .unwrap();
        let yaml = format!(
            "storage: {{gcs: {{bucket: b, keyfile: {}, rootdirectory: /r}}}}\n",
            key.display()
        );
        let (s, w) = load_str(&yaml, &[]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let StorageChoice::Gcs(o) = s.storage else {
            panic!("not gcs")
        };
        assert_eq!((o.bucket.as_str(), o.root.as_str()), ("b", "r"));
        assert!(o.service_account_key.unwrap().contains("client_email"));
        let inline = "storage:\n  gcs:\n    bucket: b\n    credentials:\n      type: service_account\n      private_key: k\n      client_email: e@x\n";
        assert!(load_str(inline, &[]).is_ok());
        let e = load_str(
            "storage: {gcs: {bucket: b, keyfile: /nonexistent/key.json}}\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("storage.gcs.keyfile"), "{e}");
        let e = load_str("storage: {gcs: {bucket: b, credentials: {type: x}}}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage.gcs.keyfile"), "{e}");
    }

    #[test]
    fn maintenance() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("168h"),
            Some(Duration::from_secs(168 * 3600))
        );
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5d"), None);
        let yaml = "storage:\n  inmemory: {}\n  maintenance:\n    readonly: {enabled: true}\n    uploadpurging: {age: 2h, interval: 10m, dryrun: true}\n";
        let (s, w) = load_str(yaml, &[]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(s.read_only);
        assert_eq!(
            s.purge,
            Some(PurgeSettings {
                age: Duration::from_secs(7200),
                interval: Duration::from_secs(600),
                dry_run: true
            })
        );
        let e = load_str(
            "storage: {inmemory: {}, maintenance: {uploadpurging: {age: soon}}}\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("storage.maintenance.uploadpurging.age"),
            "{e}"
        );
        let (s, _) = load_str(
            "storage: {inmemory: {}, maintenance: {uploadpurging: {enabled: false}}}\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.purge, None);
    }

    #[test]
    fn container_image_default_config_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.yml");
        let (s, w) = load(Source::File(&path), Vec::new()).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.addr.to_string(), "0.0.0.0:5000");
        assert_eq!(
            s.storage,
            StorageChoice::Filesystem(PathBuf::from("/var/lib/registry"))
        );
        assert!(s.log_json && s.delete_enabled);
    }

    #[test]
    fn unknown_keys_warn() {
        let (_, w) = load_str("storage: {filesystem: {rootdirectroy: /x}}\n", &[]).unwrap();
        assert!(
            w.iter()
                .any(|w| w.contains("storage.filesystem.rootdirectroy")),
            "{w:?}"
        );
    }
}
