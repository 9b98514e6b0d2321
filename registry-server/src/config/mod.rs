//! Configuration in the shape of distribution's `config.yml`, with `REGISTRY_*` overrides.
//!
//! Unknown keys are reported (a distribution config carries many Berth has no use for) but not
//! fatal; a key with a wrong type or an impossible value is fatal and named.

mod auth;
mod env;
mod operations;
mod proxy;
mod replication;
mod storage;
mod telemetry;

pub use crate::connections::tls::TlsFiles;
use auth::authorizer;
use operations::{endpoints, gc_settings, purge_settings};
pub use proxy::{PrefixedProxyConfig, ProxyConfig, UpstreamSettings};
pub use replication::{
    DownstreamSettings, ReplicationConfig, ReplicationSettings, SyncRepository, SyncSettings,
};
use storage::{azure_options, gcs_options, s3_options};
pub use telemetry::{OtlpProtocol, TracingConfig, TracingSettings};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use storage_drivers::azure::AzureOptions;
use storage_drivers::gcs::GcsOptions;
use storage_drivers::s3::S3Options;

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

pub(crate) fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
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
    /// Pull-through cache of one upstream registry (distribution's `proxy`).
    pub proxy: Option<ProxyConfig>,
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
    /// Berth: write blob data with O_DIRECT and fdatasync it before linking (default true);
    /// false writes through the page cache without a sync, as distribution does.
    pub directwrites: Option<bool>,
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
    /// The debug server: `/metrics`, `/healthz` and `/readyz` on an address of their own.
    pub debug: Option<DebugConfig>,
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
    /// Berth: a key each event body is signed with (HMAC-SHA256, `X-Berth-Signature-256`).
    pub signingsecret: Option<String>,
    /// Berth: `distribution` (its envelope, the default) or `cloudevents` (one CloudEvents
    /// 1.0 event per request, structured mode).
    pub format: Option<String>,
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

/// A value that is a string or a list of strings, as a list (anything else: empty).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
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
    /// PEM bundles of the CAs whose client certificates are accepted (a path or a list).
    pub clientcas: Option<Value>,
    /// Whether a client certificate is `required` (the default, as in distribution) or
    /// `optional` (a client without one authenticates another way).
    pub clientauth: Option<String>,
    /// Let's Encrypt (not supported).
    pub letsencrypt: Option<Value>,
    /// Accepted for compatibility (rustls speaks TLS 1.2 and 1.3 only).
    pub minimumtls: Option<String>,
    /// Accepted for compatibility.
    pub ciphersuites: Option<Value>,
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
    /// Pull-through caches of several upstreams, each under a repository prefix.
    pub proxies: Vec<PrefixedProxyConfig>,
    /// Limits on client connections.
    pub connections: Option<ConnectionsConfig>,
    /// Failed-login throttling.
    pub logins: Option<LoginsConfig>,
    /// How object-store requests are retried.
    pub storage: Option<BerthStorageConfig>,
    /// The access policy.
    pub policy: Option<PolicyConfig>,
    /// Trusted OIDC issuers, whose ID tokens are passwords.
    pub oidc: Vec<OidcIssuerConfig>,
    /// Usage reporting.
    pub usage: Option<UsageConfig>,
    /// The web UI.
    pub ui: Option<UiConfig>,
    /// Push mirroring to downstream registries.
    pub replication: Option<ReplicationConfig>,
    /// Traces over OTLP.
    pub tracing: Option<TracingConfig>,
}

/// `http.debug`, in distribution's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DebugConfig {
    /// Where it listens, e.g. `:5001` (plain HTTP: keep it inside the cluster).
    pub addr: Option<String>,
    /// `prometheus.enabled` and `prometheus.path` (default `/metrics`).
    pub prometheus: Option<PrometheusConfig>,
}

/// `http.debug.prometheus`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// Serve metrics there (default true once `http.debug.addr` is set).
    pub enabled: Option<bool>,
    /// Their path (default `/metrics`).
    pub path: Option<String>,
}

/// Where the debug endpoints are served, when apart from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugSettings {
    /// The address.
    pub addr: SocketAddr,
    /// The metrics' path there; `None`: not served.
    pub metrics_path: Option<String>,
}

/// `berth.ui`: the web UI at `/ui/`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve it (default true).
    pub enabled: Option<bool>,
    /// Log people in with an OpenID provider (authorization code flow with PKCE).
    pub oidc: Option<UiOidcConfig>,
}

/// `berth.ui.oidc`: the OpenID provider people log in with in the browser.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiOidcConfig {
    /// The issuer; it must be one of `berth.oidc` with `clientid` among its audiences.
    pub issuer: Option<String>,
    /// The client the provider knows Berth's UI as.
    pub clientid: Option<String>,
    /// Its secret, for providers that want one besides PKCE (or `BERTH_UI_OIDC_CLIENTSECRET`).
    pub clientsecret: Option<String>,
    /// Scopes asked for (default `openid profile email`).
    pub scopes: Vec<String>,
    /// Where the provider sends the browser back (default: `http.host` or the page's own
    /// origin, then `/ui/login/oidc/callback`).
    pub redirecturl: Option<String>,
    /// The button's text (default `Log in with OIDC`).
    pub label: Option<String>,
}

/// How the UI logs people in with an OpenID provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiOidcSettings {
    /// The issuer URL (one of the trusted issuers).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, if the provider wants one.
    pub client_secret: Option<String>,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// The redirect URL, when configured.
    pub redirect_url: Option<String>,
    /// The login button's text.
    pub label: String,
}

/// `berth.usage`: how usage is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UsageConfig {
    /// How often a replica writes the pulls it saw to the store (default 5m).
    pub pullflush: Option<String>,
}

/// `berth.oidc[]`: one trusted OIDC issuer.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer URL, as its tokens name it in `iss`.
    pub issuer: Option<String>,
    /// The audience tokens must name (a string or a list).
    pub audience: Option<Value>,
    /// The claim that names the account (default `sub`).
    pub account: Option<String>,
}

/// `berth.policy`: who may do what, for every kind of identity.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// The policy file (groups and rules); read again when it changes.
    pub file: Option<PathBuf>,
}

/// `berth.storage`: how a slow or failing object store is ridden out.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BerthStorageConfig {
    /// How long one store operation may keep trying before the client gets 503 (default 30s).
    pub retrybudget: Option<String>,
    /// How long a store's answer may stall before the request is cut and sent again
    /// (default 30s).
    pub stalltimeout: Option<String>,
    /// How long a replica answers a manifest GET by tag from what the tag named before,
    /// without asking the store (default 0s: off).
    pub tagcachettl: Option<String>,
    /// Run on a store that ignores conditional writes, as its only writer (default false:
    /// such a store stops Berth at startup).
    pub singlewriter: Option<bool>,
}

/// `berth.logins`: how failed password logins are slowed down.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginsConfig {
    /// Failures from one client address before lockouts start (default 5).
    pub freefailures: Option<u32>,
    /// Longest lockout of a client address (default 5m).
    pub maxdelay: Option<String>,
    /// Failures for one account, from anywhere, before lockouts start (default 20).
    pub accountfreefailures: Option<u32>,
    /// Longest lockout of an account (default 30s: an attacker can only delay its owner).
    pub accountmaxdelay: Option<String>,
    /// Count clients by the last `X-Forwarded-For` entry, for a Berth behind a balancer that
    /// appends it (default false: the connection's peer).
    pub trustforwardedfor: bool,
}

/// `berth.connections`: how many connections, and how long each may sit idle or dribble.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectionsConfig {
    /// Most connections open at once (default: from the descriptor limit, at most 10,000).
    pub max: Option<usize>,
    /// Most connections from one client address (default 512).
    pub perclient: Option<usize>,
    /// From a connection's start or a request's first byte to its complete head (default 20s).
    pub headertimeout: Option<String>,
    /// Between requests of a keep-alive connection (default 120s).
    pub idletimeout: Option<String>,
    /// A request body that sends nothing (default 60s).
    pub bodytimeout: Option<String>,
    /// A response the client reads nothing of (default 60s).
    pub sendtimeout: Option<String>,
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
    /// How long a collector that stopped renewing its lease (a killed pod) keeps others
    /// waiting (default 2m).
    pub leasettl: Option<String>,
    /// Set, runs are incremental (only what changed since the last run) and a full one runs
    /// when the last is older than this (e.g. 168h); unset, every run is full.
    pub fullinterval: Option<String>,
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
    /// A lease not renewed for this long is taken over.
    pub lease_ttl: Duration,
    /// Runs are incremental, with a full one when the last is older than this.
    pub full_interval: Option<Duration>,
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
    /// Local disk under `root`.
    Filesystem {
        /// Directory holding `docker/registry/v2`.
        root: PathBuf,
        /// How blob data is written.
        write_mode: storage_drivers::local::WriteMode,
    },
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
pub(crate) const MIN_PART_SIZE: u64 = 5 << 20;

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
    /// The debug endpoints' own address (then `/metrics` is not on the API's).
    pub debug: Option<DebugSettings>,
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
    /// How long a tag's target is trusted by this replica (zero: off).
    pub tag_cache_ttl: Duration,
    /// Authentication and authorization.
    pub auth: std::sync::Arc<crate::auth::Authorizer>,
    /// The policy file (`berth.policy.file`): access rules (given to `auth`), immutable tags,
    /// retention and quotas.
    pub policy: Option<std::sync::Arc<crate::auth::policy::PolicyFileWatch>>,
    /// How often this replica writes the pulls it saw (`berth.usage.pullflush`).
    pub pull_flush: Duration,
    /// Serve the web UI at `/ui/`.
    pub ui: bool,
    /// The UI's login with an OpenID provider, when configured.
    pub ui_oidc: Option<UiOidcSettings>,
    /// Refuse every write (maintenance).
    pub read_only: bool,
    /// Abandoned-upload purging, when on.
    pub purge: Option<PurgeSettings>,
    /// Scheduled garbage collection, when on.
    pub gc: Option<GcSettings>,
    /// Webhook endpoints.
    pub notifications: Vec<crate::notify::EndpointSettings>,
    /// Push mirroring, when downstreams are configured.
    pub replication: Option<ReplicationSettings>,
    /// Trace export, when on.
    pub tracing: Option<TracingSettings>,
    /// Upstream registries this one caches, most specific prefix first.
    pub proxies: Vec<UpstreamSettings>,
    /// Limits on client connections.
    pub connections: crate::connections::ConnectionSettings,
    /// How object-store requests are retried.
    pub retry: storage_drivers::resilient::RetryPolicy,
    /// `berth.storage.singlewriter`: accept a store that ignores conditional writes.
    pub single_writer: bool,
    /// Log level filter.
    pub log_level: String,
    /// Emit JSON logs.
    pub log_json: bool,
}

/// `berth.ui.oidc`, checked against the trusted issuers: the ID tokens the provider returns
/// are verified as every OIDC login is, so its issuer must be trusted for this client.
fn ui_oidc_settings(
    c: Option<&UiOidcConfig>,
    trusted: &[OidcIssuerConfig],
) -> Result<Option<UiOidcSettings>, ConfigError> {
    let Some(c) = c else { return Ok(None) };
    let issuer = c
        .issuer
        .clone()
        .ok_or_else(|| key_err("berth.ui.oidc.issuer", "missing"))?;
    let client_id = c
        .clientid
        .clone()
        .ok_or_else(|| key_err("berth.ui.oidc.clientid", "missing"))?;
    let Some(t) = trusted.iter().find(|t| {
        t.issuer.as_deref().map(|i| i.trim_end_matches('/')) == Some(issuer.trim_end_matches('/'))
    }) else {
        return Err(key_err(
            "berth.ui.oidc.issuer",
            format!("{issuer:?} is not among berth.oidc's trusted issuers"),
        ));
    };
    let audiences = t.audience.as_ref().map(strings).unwrap_or_default();
    if !audiences.contains(&client_id) {
        return Err(key_err(
            "berth.ui.oidc.clientid",
            format!("{client_id:?} is not an audience berth.oidc trusts for {issuer:?}"),
        ));
    }
    if let Some(url) = &c.redirecturl
        && !url.ends_with("/ui/login/oidc/callback")
    {
        return Err(key_err(
            "berth.ui.oidc.redirecturl",
            "must end with /ui/login/oidc/callback",
        ));
    }
    Ok(Some(UiOidcSettings {
        issuer,
        client_id,
        client_secret: c
            .clientsecret
            .clone()
            .or_else(|| std::env::var("BERTH_UI_OIDC_CLIENTSECRET").ok()),
        scopes: if c.scopes.is_empty() {
            vec!["openid".into(), "profile".into(), "email".into()]
        } else {
            c.scopes.clone()
        },
        redirect_url: c.redirecturl.clone(),
        label: c.label.clone().unwrap_or_else(|| "Log in with OIDC".into()),
    }))
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
    let environment: Vec<(String, String)> = environment.into_iter().collect();
    let otel: std::collections::HashMap<String, String> = environment
        .iter()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .cloned()
        .collect();
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
    let tracing = telemetry::tracing_settings(config.berth.tracing.as_ref(), &otel)?;
    let mut settings = validate(config, &mut warnings)?;
    settings.tracing = tracing;
    Ok((settings, warnings))
}

/// `storage.filesystem.?.x` (serde's view, `?` for an Option) as the user wrote it.
fn dotted(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// `http.debug`; `None` without an address.
fn debug_settings(c: Option<&DebugConfig>) -> Result<Option<DebugSettings>, ConfigError> {
    let Some(addr) = c.and_then(|c| c.addr.as_deref()).filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let prometheus = c.and_then(|c| c.prometheus.as_ref());
    let path = prometheus
        .and_then(|p| p.path.clone())
        .unwrap_or_else(|| "/metrics".into());
    if !path.starts_with('/') {
        return Err(key_err(
            "http.debug.prometheus.path",
            format!("{path:?} must start with /"),
        ));
    }
    Ok(Some(DebugSettings {
        addr: parse_addr(addr).map_err(|_| {
            key_err(
                "http.debug.addr",
                format!("{addr:?} is not an address like :5001"),
            )
        })?,
        metrics_path: prometheus
            .and_then(|p| p.enabled)
            .unwrap_or(true)
            .then_some(path),
    }))
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
        let write_mode = if fs.directwrites.unwrap_or(true) {
            storage_drivers::local::WriteMode::Direct
        } else {
            storage_drivers::local::WriteMode::Buffered
        };
        chosen.push((
            "filesystem",
            Some(StorageChoice::Filesystem { root, write_mode }),
        ));
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
    let policy = match config.berth.policy.as_ref().and_then(|p| p.file.as_ref()) {
        None => None,
        Some(path) => Some(std::sync::Arc::new(
            crate::auth::policy::PolicyFileWatch::load(path)
                .map_err(|e| key_err("berth.policy.file", e))?,
        )),
    };
    let auth = std::sync::Arc::new(authorizer(
        config.auth.as_ref(),
        config.berth.tokenserver.as_ref(),
        config.berth.logins.as_ref(),
        policy.clone(),
        &config.berth.oidc,
    )?);
    let tls = match &config.http.tls {
        None => None,
        Some(t) => {
            let clients = match &t.clientcas {
                None => None,
                Some(v) => {
                    let cas: Vec<PathBuf> = strings(v).into_iter().map(PathBuf::from).collect();
                    if cas.is_empty() {
                        return Err(key_err("http.tls.clientcas", "lists no CA files"));
                    }
                    for ca in &cas {
                        read_file(ca, "http.tls.clientcas")?;
                    }
                    let required = match t.clientauth.as_deref() {
                        None | Some("required") => true,
                        Some("optional") => false,
                        Some(other) => {
                            return Err(key_err(
                                "http.tls.clientauth",
                                format!("{other:?} is not required or optional"),
                            ));
                        }
                    };
                    Some(crate::connections::tls::ClientCertificates { cas, required })
                }
            };
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
            Some(TlsFiles {
                certificate,
                key,
                clients,
            })
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
    let proxies = proxy::upstreams(config.proxy.as_ref(), &config.berth.proxies)?;
    let connections = connection_settings(config.berth.connections.as_ref())?;
    let mut retry = storage_drivers::resilient::RetryPolicy::default();
    let store_duration = |raw: Option<&str>, key: &str| -> Result<Option<Duration>, ConfigError> {
        raw.map(|text| {
            parse_duration(text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    key_err(
                        key,
                        format!("{text:?} is not a duration above zero like 30s"),
                    )
                })
        })
        .transpose()
    };
    let berth_storage = config.berth.storage.as_ref();
    if let Some(budget) = store_duration(
        berth_storage.and_then(|s| s.retrybudget.as_deref()),
        "berth.storage.retrybudget",
    )? {
        retry.budget = budget;
    }
    let stall = store_duration(
        berth_storage.and_then(|s| s.stalltimeout.as_deref()),
        "berth.storage.stalltimeout",
    )?;
    let tag_cache_ttl = match berth_storage.and_then(|s| s.tagcachettl.as_deref()) {
        None => Duration::ZERO,
        Some(text) => parse_duration(text).ok_or_else(|| {
            key_err(
                "berth.storage.tagcachettl",
                format!("{text:?} is not a duration like 5s"),
            )
        })?,
    };
    let pull_flush = match config
        .berth
        .usage
        .as_ref()
        .and_then(|u| u.pullflush.as_deref())
    {
        None => Duration::from_secs(300),
        Some(text) => parse_duration(text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                key_err(
                    "berth.usage.pullflush",
                    format!("{text:?} is not a duration like 5m"),
                )
            })?,
    };
    let mut storage = storage;
    match &mut storage {
        StorageChoice::S3(o) => o.stall_timeout = stall,
        StorageChoice::Azure(o) => o.stall_timeout = stall,
        StorageChoice::Gcs(o) => o.stall_timeout = stall,
        StorageChoice::Filesystem { .. } | StorageChoice::InMemory => {}
    }
    Ok(Settings {
        connections,
        retry,
        single_writer: berth_storage.and_then(|s| s.singlewriter).unwrap_or(false),
        tls,
        addr: parse_addr(config.http.addr.as_deref().unwrap_or(":5000"))?,
        debug: debug_settings(config.http.debug.as_ref())?,
        host: config.http.host.map(|h| h.trim_end_matches('/').to_owned()),
        storage,
        delete_enabled: s.delete.as_ref().is_some_and(|d| d.enabled),
        redirect: !s.redirect.as_ref().is_some_and(|r| r.disable),
        redirect_expiry: Duration::from_secs(expiry),
        redirect_public_endpoint: public_endpoint,
        max_manifest_bytes,
        tag_cache_ttl,
        auth,
        policy,
        pull_flush,
        ui: config
            .berth
            .ui
            .as_ref()
            .and_then(|u| u.enabled)
            .unwrap_or(true),
        ui_oidc: ui_oidc_settings(
            config.berth.ui.as_ref().and_then(|u| u.oidc.as_ref()),
            &config.berth.oidc,
        )?,
        read_only: s
            .maintenance
            .as_ref()
            .and_then(|m| m.readonly.as_ref())
            .is_some_and(|r| r.enabled),
        gc: gc_settings(
            config.berth.gc.as_ref(),
            proxies.iter().any(|u| u.ttl.is_some()),
        )?,
        notifications: endpoints(config.notifications.as_ref())?,
        replication: replication::replication_settings(config.berth.replication.as_ref())?,
        tracing: None,
        proxies,
        purge: purge_settings(
            s.maintenance
                .as_ref()
                .and_then(|m| m.uploadpurging.as_ref()),
        )?,
        log_level: level,
        log_json,
    })
}

fn connection_settings(
    c: Option<&ConnectionsConfig>,
) -> Result<crate::connections::ConnectionSettings, ConfigError> {
    let mut out = crate::connections::ConnectionSettings::default();
    let Some(c) = c else {
        return Ok(out);
    };
    let duration = |raw: &Option<String>, key: &str, default: Duration| match raw {
        None => Ok(default),
        Some(text) => match parse_duration(text) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(key_err(
                &format!("berth.connections.{key}"),
                format!("{text:?} is not a duration above zero like 30s"),
            )),
        },
    };
    if c.max == Some(0) {
        return Err(key_err("berth.connections.max", "must be at least 1"));
    }
    if c.perclient == Some(0) {
        return Err(key_err("berth.connections.perclient", "must be at least 1"));
    }
    out.max = c.max;
    out.per_client = c.perclient.unwrap_or(out.per_client);
    out.timeouts.header = duration(&c.headertimeout, "headertimeout", out.timeouts.header)?;
    out.timeouts.idle = duration(&c.idletimeout, "idletimeout", out.timeouts.idle)?;
    out.timeouts.send = duration(&c.sendtimeout, "sendtimeout", out.timeouts.send)?;
    out.body_idle = duration(&c.bodytimeout, "bodytimeout", out.body_idle)?;
    Ok(out)
}

pub(crate) fn read_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| key_err(key, format!("cannot read {}: {e}", path.display())))
}

pub(crate) fn required(v: &Option<String>, key: &str) -> Result<String, ConfigError> {
    match v.as_deref().map(str::trim) {
        Some(x) if !x.is_empty() => Ok(x.to_owned()),
        _ => Err(key_err(key, "is required")),
    }
}

#[cfg(test)]
mod tests;
