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
    /// Authentication (not yet implemented: refused when present so nothing runs open by surprise).
    pub auth: Option<Value>,
    /// Webhook notifications (reserved).
    pub notifications: Option<Value>,
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
    pub s3: Option<Value>,
    /// Azure Blob Storage.
    pub azure: Option<Value>,
    /// Google Cloud Storage.
    pub gcs: Option<Value>,
    /// `delete.enabled`.
    pub delete: Option<DeleteConfig>,
    /// `redirect.disable`.
    pub redirect: Option<RedirectConfig>,
    /// Maintenance (upload purging, read-only).
    pub maintenance: Option<Value>,
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
    /// TLS (not yet implemented: refused when present).
    pub tls: Option<Value>,
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

/// `berth`: settings distribution has no equivalent for.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BerthConfig {
    /// Largest manifest accepted, in bytes (default 4 MiB).
    pub maxmanifestbytes: Option<usize>,
}

/// Which backend to build, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageChoice {
    /// Local disk under this directory.
    Filesystem(PathBuf),
    /// Memory.
    InMemory,
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub addr: SocketAddr,
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
    /// Manifest size limit.
    pub max_manifest_bytes: usize,
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
    for (name, v) in [("s3", &s.s3), ("azure", &s.azure), ("gcs", &s.gcs)] {
        if v.is_some() {
            chosen.push((name, None));
        }
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
    if config.auth.as_ref().is_some_and(|a| !a.is_null()) {
        return Err(key_err(
            "auth",
            "authentication is not implemented yet; remove the section to run without auth",
        ));
    }
    if config.http.tls.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(key_err(
            "http.tls",
            "TLS is not implemented yet; terminate TLS in front of Berth",
        ));
    }
    if config.http.secret.is_some() {
        warnings.push("http.secret is not needed: upload state lives in the store, so any replica serves any request".into());
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
        addr: parse_addr(config.http.addr.as_deref().unwrap_or(":5000"))?,
        host: config.http.host.map(|h| h.trim_end_matches('/').to_owned()),
        storage,
        delete_enabled: s.delete.as_ref().is_some_and(|d| d.enabled),
        redirect: !s.redirect.as_ref().is_some_and(|r| r.disable),
        redirect_expiry: Duration::from_secs(20 * 60),
        max_manifest_bytes,
        log_level: level,
        log_json,
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
    fn unknown_keys_warn() {
        let (_, w) = load_str("storage: {filesystem: {rootdirectroy: /x}}\n", &[]).unwrap();
        assert!(
            w.iter()
                .any(|w| w.contains("storage.filesystem.rootdirectroy")),
            "{w:?}"
        );
    }
}
