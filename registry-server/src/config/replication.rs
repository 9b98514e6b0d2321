//! `berth.replication`: push mirroring of repositories to downstream registries, and
//! scheduled copies from upstream ones.

use std::time::Duration;

use serde::Deserialize;

use super::proxy::upstream;
use super::{ConfigError, UpstreamSettings, key_err, parse_duration};

/// `berth.replication`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Registries every push and delete of matching repositories is sent to.
    pub downstreams: Vec<DownstreamConfig>,
    /// How often the replica sending a downstream looks for events other replicas queued
    /// (default 5s; its own are sent at once).
    pub poll: Option<String>,
    /// How long a replica that stopped sending (killed, partitioned) keeps its downstreams'
    /// leases before another replica takes them over (default 30s).
    pub leasettl: Option<String>,
    /// Registries whose chosen repositories and tags are copied here on a schedule.
    pub sync: Vec<SyncConfig>,
}

/// `berth.replication.sync[]`: a scheduled copy from an upstream registry.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// A name for logs, metrics and its lease (`[a-z0-9._-]`).
    pub name: Option<String>,
    /// The upstream's origin.
    pub remoteurl: Option<String>,
    /// Account there.
    pub username: Option<String>,
    /// Its password or token.
    pub password: Option<String>,
    /// A file holding the password (a mounted Secret), instead of `password`.
    pub passwordfile: Option<String>,
    /// How often (default 1h).
    pub interval: Option<String>,
    /// What is copied.
    pub repositories: Vec<SyncRepositoryConfig>,
    /// As for downstreams.
    pub trustedorigins: Vec<String>,
}

/// `berth.replication.sync[].repositories[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncRepositoryConfig {
    /// The repository upstream (`library/alpine`).
    pub from: Option<String>,
    /// Its name here (default: the same).
    pub to: Option<String>,
    /// Tags copied, as globs (default all).
    pub tags: Vec<String>,
}

/// `berth.replication.downstreams[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownstreamConfig {
    /// A name for logs, metrics and the queue's place in the store (`[a-z0-9._-]`).
    pub name: Option<String>,
    /// The registry's origin, e.g. `https://dr.example.com`.
    pub remoteurl: Option<String>,
    /// Account there.
    pub username: Option<String>,
    /// Its password or token.
    pub password: Option<String>,
    /// A file holding the password (a mounted Secret), instead of `password`.
    pub passwordfile: Option<String>,
    /// Repositories sent, as globs (`*` matches any run, `/` included); default all.
    pub repositories: Vec<String>,
    /// Other origins (`host:port`) it may name as its token realm or upload location
    /// although they are loopback or private.
    pub trustedorigins: Vec<String>,
}

/// What replication does, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// The downstream registries.
    pub downstreams: Vec<DownstreamSettings>,
    /// How often queues are looked at for events other replicas queued.
    pub poll: Duration,
    /// How long a silent sender keeps a downstream's lease.
    pub lease_ttl: Duration,
    /// Scheduled copies from upstream registries.
    pub syncs: Vec<SyncSettings>,
}

/// One scheduled copy from an upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// Its name.
    pub name: String,
    /// Where the upstream is and how to log in.
    pub remote: UpstreamSettings,
    /// How often it runs.
    pub interval: Duration,
    /// What it copies.
    pub repositories: Vec<SyncRepository>,
}

/// One repository a sync copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRepository {
    /// Its name upstream.
    pub from: String,
    /// Its name here.
    pub to: registry_core::RepositoryName,
    /// Tag globs copied (empty: all).
    pub tags: Vec<String>,
}

impl SyncRepository {
    /// Whether `tag` is copied.
    pub fn wants(&self, tag: &str) -> bool {
        self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|g| registry_core::names::glob_match(g, tag))
    }
}

/// One downstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamSettings {
    /// Its name.
    pub name: String,
    /// Where it is and how to log in.
    pub remote: UpstreamSettings,
    /// Repository globs sent there (empty: all).
    pub repositories: Vec<String>,
}

impl DownstreamSettings {
    /// Whether `repository` is sent there.
    pub fn wants(&self, repository: &str) -> bool {
        self.repositories.is_empty()
            || self
                .repositories
                .iter()
                .any(|g| registry_core::names::glob_match(g, repository))
    }
}

/// Checks `berth.replication`; `None` when it names no downstream.
pub(super) fn replication_settings(
    c: Option<&ReplicationConfig>,
) -> Result<Option<ReplicationSettings>, ConfigError> {
    let Some(c) = c.filter(|c| !c.downstreams.is_empty() || !c.sync.is_empty()) else {
        return Ok(None);
    };
    let duration = |raw: Option<&str>, default: u64, key: &str| match raw {
        None => Ok(Duration::from_secs(default)),
        Some(t) => parse_duration(t)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| key_err(key, format!("{t:?} is not a duration like {default}s"))),
    };
    let poll = duration(c.poll.as_deref(), 5, "berth.replication.poll")?;
    let lease_ttl = duration(c.leasettl.as_deref(), 30, "berth.replication.leasettl")?;
    let mut downstreams: Vec<DownstreamSettings> = Vec::new();
    for (i, d) in c.downstreams.iter().enumerate() {
        let key = format!("berth.replication.downstreams[{i}]");
        let name = plain_name(d.name.as_deref(), &key)?;
        if downstreams.iter().any(|o| o.name == name) {
            return Err(key_err(
                &format!("{key}.name"),
                format!("{name:?} names two downstreams"),
            ));
        }
        let remote = upstream(
            &key,
            None,
            d.remoteurl.as_deref(),
            &d.username,
            &password(&d.password, d.passwordfile.as_deref(), &key)?,
            None,
            &d.trustedorigins,
            None,
        )?;
        downstreams.push(DownstreamSettings {
            name,
            remote,
            repositories: d.repositories.clone(),
        });
    }
    let mut syncs: Vec<SyncSettings> = Vec::new();
    for (i, j) in c.sync.iter().enumerate() {
        let key = format!("berth.replication.sync[{i}]");
        let name = plain_name(j.name.as_deref(), &key)?;
        if syncs.iter().any(|o| o.name == name) {
            return Err(key_err(
                &format!("{key}.name"),
                format!("{name:?} names two syncs"),
            ));
        }
        let remote = upstream(
            &key,
            None,
            j.remoteurl.as_deref(),
            &j.username,
            &password(&j.password, j.passwordfile.as_deref(), &key)?,
            None,
            &j.trustedorigins,
            None,
        )?;
        if j.repositories.is_empty() {
            return Err(key_err(
                &format!("{key}.repositories"),
                "name at least one repository to copy",
            ));
        }
        let mut repositories = Vec::new();
        for (r, rc) in j.repositories.iter().enumerate() {
            let rkey = format!("{key}.repositories[{r}]");
            let from = rc
                .from
                .clone()
                .filter(|f| f.parse::<registry_core::RepositoryName>().is_ok())
                .ok_or_else(|| key_err(&format!("{rkey}.from"), "give a repository name"))?;
            let to = rc.to.clone().unwrap_or_else(|| from.clone());
            let to = to.parse().map_err(|_| {
                key_err(
                    &format!("{rkey}.to"),
                    format!("{to:?} is not a repository name"),
                )
            })?;
            repositories.push(SyncRepository {
                from,
                to,
                tags: rc.tags.clone(),
            });
        }
        syncs.push(SyncSettings {
            name,
            remote,
            interval: duration(j.interval.as_deref(), 3600, &format!("{key}.interval"))?,
            repositories,
        });
    }
    Ok(Some(ReplicationSettings {
        downstreams,
        poll,
        lease_ttl,
        syncs,
    }))
}

/// The password written in the file, or read from `file` (its trailing newline dropped).
fn password(
    written: &Option<String>,
    file: Option<&str>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match (written, file) {
        (Some(_), Some(_)) => Err(key_err(
            &format!("{key}.passwordfile"),
            "give password or passwordfile, not both",
        )),
        (_, Some(f)) => std::fs::read_to_string(f)
            .map(|p| Some(p.trim_end_matches(['\r', '\n']).to_owned()))
            .map_err(|e| key_err(&format!("{key}.passwordfile"), format!("{f}: {e}"))),
        (w, None) => Ok(w.clone()),
    }
}

/// A name for logs, metrics and keys in the store: `[a-z0-9._-]`, not starting with a dot.
fn plain_name(raw: Option<&str>, key: &str) -> Result<String, ConfigError> {
    let name = raw.unwrap_or_default().to_owned();
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if name.is_empty() || !plain || name.starts_with('.') {
        return Err(key_err(
            &format!("{key}.name"),
            format!("{name:?}: give a name of a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    Ok(name)
}
