//! What the repository policy says of one repository: which tags are immutable, which tags
//! retention keeps, how many bytes it may hold. The policy itself (a file, reloaded) lives
//! with the server; the registry only asks.

use std::time::Duration;

use crate::names::{RepositoryName, Tag};

/// Which tags of a repository a collection keeps; the rest are untagged and swept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// The rule's name, for reports.
    pub name: String,
    /// Keep the newest N tags by push time.
    pub newest: Option<usize>,
    /// Keep tags pulled (or pushed) within this long.
    pub pulled_within: Option<Duration>,
    /// Keep the N highest semantic versions.
    pub semver: Option<usize>,
    /// Always keep tags matching these globs.
    pub always: Vec<String>,
}

/// How many bytes a repository may hold (each blob counted once per repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The rule's name, for refusals.
    pub name: String,
    /// The limit.
    pub bytes: u64,
}

/// The repository policy the registry asks; `Send + Sync` because every request may.
pub trait RepositoryRules: Send + Sync {
    /// The name of the rule that makes `tag` of `name` immutable, if one does.
    fn immutable(&self, name: &RepositoryName, tag: &Tag) -> Option<String>;
    /// The retention rule that covers `name`, if one does.
    fn retention(&self, name: &RepositoryName) -> Option<Retention>;
    /// The quota that covers `name`, if one does.
    fn quota(&self, name: &RepositoryName) -> Option<Quota>;
}
