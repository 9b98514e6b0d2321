//! Robot tokens: credentials for CI jobs and machines, created, listed and revoked by an admin.
//!
//! A token is shown once, when it is created; the store keeps a record of its name, a SHA-256
//! of the token (the token is 244 random bits, so a plain hash is as good as a slow one), its
//! access, its expiry and when it was last used. Every replica reads the records from the store
//! and trusts what it read for a few seconds, so a revocation takes effect everywhere within
//! [`RECORD_TRUST`]. A token is used as a password (`docker login -u ci-bot -p brt_...`), with
//! htpasswd auth and with the built-in token issuer alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use registry_core::StorageDriver;
use registry_core::layout;
use registry_core::storage::{ObjectVersion, PutCondition, StorageError};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::scope::{Access, glob_match};

/// What every robot token starts with: a password that does not is never looked up here.
pub const TOKEN_PREFIX: &str = "brt_";

/// How long a replica trusts a record it read (and the absence of one).
pub const RECORD_TRUST: Duration = Duration::from_secs(5);

/// A token's last use is written at most this often by one replica.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    /// The name is not 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    #[error(
        "invalid robot name {0:?}: 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    )]
    InvalidName(String),
    /// An access rule is not `REPOSITORY-GLOB:ACTION[,ACTION...]`.
    #[error("invalid access {0:?}: expected REPOSITORY-GLOB:ACTIONS, e.g. 'team/*:pull,push'")]
    InvalidAccess(String),
    /// A token of that name exists.
    #[error("a robot token named {0:?} exists: revoke it first")]
    Exists(String),
    /// No token of that name.
    #[error("no robot token named {0:?}")]
    Unknown(String),
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// What a robot may do in repositories matching a glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotAccess {
    /// Repository name glob (`team/*`).
    pub repository: String,
    /// `pull`, `push`, `delete`, or `*`.
    pub actions: Vec<String>,
}

impl RobotAccess {
    /// Parses `team/*:pull,push`.
    pub fn parse(s: &str) -> Result<RobotAccess, RobotError> {
        let bad = || RobotError::InvalidAccess(s.to_owned());
        let (repository, actions) = s.rsplit_once(':').ok_or_else(bad)?;
        let actions: Vec<String> = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let known = |a: &String| matches!(a.as_str(), "pull" | "push" | "delete" | "*");
        if repository.is_empty() || actions.is_empty() || !actions.iter().all(known) {
            return Err(bad());
        }
        Ok(RobotAccess {
            repository: repository.to_owned(),
            actions,
        })
    }
}

impl std::fmt::Display for RobotAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.actions.join(","))
    }
}

/// A robot token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotRecord {
    /// The account name the token logs in as.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// What it may do.
    pub access: Vec<RobotAccess>,
    /// Groups the access policy sees it in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; `None`: never expires.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Unix seconds, to within a minute.
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

impl RobotRecord {
    /// What listings show of it: everything but the hash.
    pub fn shown(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "access": self.access.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "groups": self.groups,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
        })
    }

    /// Who it is to the access policy: its name, kind robot, its groups.
    pub fn subject(&self) -> super::policy::Subject {
        super::policy::Subject::account(&self.name, super::policy::IdentityKind::Robot)
            .with_groups(self.groups.clone())
    }

    /// Whether it has expired at `now` (unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// The actions its rules give on `repository`.
    fn actions_on(&self, repository: &str) -> Vec<&str> {
        self.access
            .iter()
            .filter(|a| glob_match(&a.repository, repository))
            .flat_map(|a| a.actions.iter().map(String::as_str))
            .collect()
    }

    /// What of `requested` it may have (repositories only: a robot never lists the catalog).
    pub fn grant(&self, requested: &[Access]) -> Vec<Access> {
        requested
            .iter()
            .filter(|r| r.kind == "repository")
            .filter_map(|r| {
                let mine = self.actions_on(&r.name);
                let actions: Vec<String> = r
                    .actions
                    .iter()
                    .filter(|a| mine.iter().any(|m| *m == "*" || m == a))
                    .cloned()
                    .collect();
                (!actions.is_empty()).then(|| Access {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    actions,
                })
            })
            .collect()
    }

    /// Whether it may do everything `need` names.
    pub fn allows(&self, need: &[Access]) -> bool {
        let granted = self.grant(need);
        need.iter().all(|n| n.satisfied_by(&granted))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hash_of(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Compares two strings in time that depends on their length only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// A record read from the store (`None`: there is none) and when.
type Cached = (Option<(RobotRecord, ObjectVersion)>, Instant);

/// The robot tokens of a store.
pub struct RobotTokens {
    store: Arc<dyn StorageDriver>,
    read: Mutex<HashMap<String, Cached>>,
    marked_used: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for RobotTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RobotTokens")
    }
}

impl RobotTokens {
    /// The tokens kept in `store`.
    pub fn new(store: Arc<dyn StorageDriver>) -> RobotTokens {
        RobotTokens {
            store,
            read: Mutex::new(HashMap::new()),
            marked_used: Mutex::new(HashMap::new()),
        }
    }

    /// Creates a token; returns it (the only time it is shown) and its record.
    pub async fn create(
        &self,
        name: &str,
        access: Vec<RobotAccess>,
        groups: Vec<String>,
        expires_in: Option<Duration>,
    ) -> Result<(String, RobotRecord), RobotError> {
        if !valid_name(name) {
            return Err(RobotError::InvalidName(name.to_owned()));
        }
        let token = format!(
            "{TOKEN_PREFIX}{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = now_secs();
        let record = RobotRecord {
            name: name.to_owned(),
            hash: hash_of(&token),
            access,
            groups,
            created_at: now,
            expires_at: expires_in.map(|d| now + d.as_secs()),
            last_used_at: None,
        };
        let body = serde_json::to_vec(&record).map_err(|e| StorageError::Backend(e.to_string()))?;
        match self
            .store
            .put_bytes(
                &layout::robot_token(name),
                Bytes::from(body),
                PutCondition::CreateOnly,
            )
            .await
        {
            Ok(_) => Ok((token, record)),
            Err(StorageError::AlreadyExists(_)) => Err(RobotError::Exists(name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Every token's record, by name.
    pub async fn list(&self) -> Result<Vec<RobotRecord>, RobotError> {
        let keys: Vec<String> = self
            .store
            .list_recursive(&layout::robot_tokens_prefix())
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for key in keys {
            match self.store.read_small(&key).await {
                Ok((body, _)) => {
                    if let Ok(r) = serde_json::from_slice::<RobotRecord>(&body) {
                        out.push(r);
                    }
                }
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Revokes a token: every replica refuses it within [`RECORD_TRUST`].
    pub async fn revoke(&self, name: &str) -> Result<(), RobotError> {
        let key = layout::robot_token(name);
        match self.store.stat(&key).await {
            Ok(_) => {}
            Err(StorageError::NotFound(_)) => return Err(RobotError::Unknown(name.to_owned())),
            Err(e) => return Err(e.into()),
        }
        self.store.delete(&key).await?;
        self.lock_read().remove(name);
        Ok(())
    }

    fn lock_read(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of `name`, from what this replica read within [`RECORD_TRUST`] or the store.
    async fn record(
        &self,
        name: &str,
    ) -> Result<Option<(RobotRecord, ObjectVersion)>, StorageError> {
        if let Some((r, at)) = self.lock_read().get(name)
            && at.elapsed() < RECORD_TRUST
        {
            return Ok(r.clone());
        }
        let found = match self.store.read_small(&layout::robot_token(name)).await {
            Ok((body, info)) => serde_json::from_slice::<RobotRecord>(&body)
                .ok()
                .map(|r| (r, info.version)),
            Err(StorageError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let mut read = self.lock_read();
        if read.len() > 10_000 {
            read.clear();
        }
        read.insert(name.to_owned(), (found.clone(), Instant::now()));
        Ok(found)
    }

    /// The record of a valid (known, unexpired) token `token` of robot `name`, else `None`.
    pub async fn authenticate(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Option<RobotRecord>, StorageError> {
        if !valid_name(name) || !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let Some(found) = self.record(name).await? else {
            return Ok(None);
        };
        Ok(self.matching(found, token).await)
    }

    /// Like [`RobotTokens::authenticate`], from what this replica read within
    /// [`RECORD_TRUST`] only, with no store read: a token that logged in a moment ago, which
    /// is no guess.
    pub async fn remembered(&self, name: &str, token: &str) -> Option<RobotRecord> {
        let found = self
            .lock_read()
            .get(name)
            .filter(|(_, at)| at.elapsed() < RECORD_TRUST)
            .and_then(|(r, _)| r.clone())?;
        self.matching(found, token).await
    }

    /// The record if `token` is its token and it has not expired (its use then recorded).
    async fn matching(
        &self,
        (record, version): (RobotRecord, ObjectVersion),
        token: &str,
    ) -> Option<RobotRecord> {
        if !same(&record.hash, &hash_of(token)) || record.expired(now_secs()) {
            return None;
        }
        self.mark_used(&record, version).await;
        Some(record)
    }

    /// The record of robot `name` if it is still valid (not revoked, not expired): for tokens
    /// the built-in issuer signed for it, which outlive the check of its password.
    pub async fn still_valid(&self, name: &str) -> Result<Option<RobotRecord>, StorageError> {
        Ok(self
            .record(name)
            .await?
            .map(|(r, _)| r)
            .filter(|r| !r.expired(now_secs())))
    }

    /// Writes the last use, at most once a minute per replica; only over the version read, so
    /// that a token revoked meanwhile is never written back.
    async fn mark_used(&self, record: &RobotRecord, version: ObjectVersion) {
        {
            let mut marked = self
                .marked_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if marked
                .get(&record.name)
                .is_some_and(|at| at.elapsed() < LAST_USED_EVERY)
            {
                return;
            }
            if marked.len() > 10_000 {
                marked.clear();
            }
            marked.insert(record.name.clone(), Instant::now());
        }
        let mut used = record.clone();
        used.last_used_at = Some(now_secs());
        let Ok(body) = serde_json::to_vec(&used) else {
            return;
        };
        let written = self
            .store
            .put_bytes(
                &layout::robot_token(&record.name),
                Bytes::from(body),
                PutCondition::IfVersion(version),
            )
            .await;
        if let Ok(info) = written {
            self.lock_read().insert(
                record.name.clone(),
                (Some((used, info.version)), Instant::now()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robot(access: &[&str]) -> RobotRecord {
        RobotRecord {
            name: "ci".into(),
            hash: String::new(),
            access: access
                .iter()
                .map(|a| RobotAccess::parse(a).unwrap())
                .collect(),
            groups: Vec::new(),
            created_at: 0,
            expires_at: Some(100),
            last_used_at: None,
        }
    }

    #[test]
    fn access_is_a_glob_and_actions() {
        assert_eq!(
            RobotAccess::parse("team/*:pull,push").unwrap().to_string(),
            "team/*:pull,push"
        );
        for bad in ["team/*", ":pull", "team/*:", "team/*:fly"] {
            assert!(RobotAccess::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_only_what_its_rules_give() {
        let r = robot(&["team/*:pull,push", "base/*:pull"]);
        assert!(r.allows(&[Access::repository("team/app", &["pull", "push"])]));
        assert!(r.allows(&[Access::repository("base/os", &["pull"])]));
        assert!(!r.allows(&[Access::repository("base/os", &["push"])]));
        assert!(!r.allows(&[Access::repository("other/app", &["pull"])]));
        assert!(!r.allows(&[Access::catalog()]));
        assert!(r.allows(&[]));
        assert_eq!(
            r.grant(&[Access::repository("base/os", &["pull", "push"])]),
            vec![Access::repository("base/os", &["pull"])]
        );
        assert!(r.expired(100) && !r.expired(99));
    }

    #[test]
    fn names_and_comparisons() {
        assert!(valid_name("ci-bot.1_x"));
        for bad in ["", "-x", "CI", "a/b", "a:b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[tokio::test]
    async fn created_known_then_revoked() {
        let store: Arc<dyn StorageDriver> = Arc::new(storage_drivers::memory_driver(1 << 20));
        let tokens = RobotTokens::new(store.clone());
        let (token, _) = tokens
            .create(
                "ci",
                vec![RobotAccess::parse("team/*:push").unwrap()],
                Vec::new(),
                None,
            )
            .await
            .unwrap();
        assert!(matches!(
            tokens.create("ci", vec![], Vec::new(), None).await,
            Err(RobotError::Exists(_))
        ));
        assert!(tokens.authenticate("ci", &token).await.unwrap().is_some());
        assert!(
            tokens
                .authenticate("ci", "brt_wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            tokens
                .authenticate("other", &token)
                .await
                .unwrap()
                .is_none()
        );
        // Another replica that read the record before the revocation trusts it a few seconds.
        let elsewhere = RobotTokens::new(store);
        assert!(
            elsewhere
                .authenticate("ci", &token)
                .await
                .unwrap()
                .is_some()
        );
        tokens.revoke("ci").await.unwrap();
        assert!(tokens.authenticate("ci", &token).await.unwrap().is_none());
        assert!(matches!(
            tokens.revoke("ci").await,
            Err(RobotError::Unknown(_))
        ));
        assert_eq!(tokens.list().await.unwrap(), vec![]);
    }
}
