//! One access policy for every kind of identity: people with passwords, robot tokens, token
//! subjects, anonymous clients. A YAML file of groups and an ordered rule list; the first rule
//! that matches a request's account (or its groups), repository and action decides, allow or
//! deny, and nothing matching means deny. The file is read again when it changes.
//!
//! The same file holds the repository rules, which need no identities: an `immutable` list
//! protects tags (once pushed, they never move and are never deleted), a `retention` list says
//! which tags each collection keeps (the rest are untagged and swept), and a `quotas` list caps
//! the bytes a repository holds. For each, the first entry whose glob matches a repository
//! decides.
//!
//! ```yaml
//! immutable:
//!   - name: releases
//!     repository: prod/*
//!     tags: ['v*']
//!     except: [latest]
//! retention:
//!   - name: ci builds
//!     repository: ci/*
//!     keep: {newest: 10, pulledwithin: 30d, semver: 5, tags: [latest, 'release-*']}
//! quotas:
//!   - name: team space
//!     repository: team/*
//!     bytes: 10GiB
//! groups:
//!   devs: [alice, bob]
//! rules:
//!   - name: devs push to team
//!     repository: team/*
//!     actions: [pull, push]
//!     groups: [devs]
//!   - name: everyone pulls public
//!     repository: public/*
//!     actions: [pull]
//!     accounts: [anonymous, "*"]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::scope::{Access, glob_match};

/// What kind of credentials an identity came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// None at all.
    Anonymous,
    /// An htpasswd account's password.
    Password,
    /// A robot token.
    Robot,
    /// A bearer token another token service signed.
    Token,
    /// A client certificate a configured CA signed.
    Certificate,
    /// An ID token from a trusted OIDC issuer.
    Oidc,
}

impl IdentityKind {
    /// The name rules and the audit log use.
    pub fn name(self) -> &'static str {
        match self {
            IdentityKind::Anonymous => "anonymous",
            IdentityKind::Password => "password",
            IdentityKind::Robot => "robot",
            IdentityKind::Token => "token",
            IdentityKind::Certificate => "certificate",
            IdentityKind::Oidc => "oidc",
        }
    }
}

/// Who asks, as the policy sees them.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The account; `None` for anonymous.
    pub account: Option<String>,
    /// How it authenticated.
    pub kind: IdentityKind,
    /// The claims of its ID token (OIDC), for rules' conditions.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Groups its credentials carry (a robot token's, an ID token's `groups` claim), besides
    /// those the policy file gives its account.
    pub groups: Vec<String>,
}

impl Subject {
    /// An anonymous client.
    pub fn anonymous() -> Subject {
        Subject {
            account: None,
            kind: IdentityKind::Anonymous,
            claims: None,
            groups: Vec::new(),
        }
    }

    /// An account that authenticated as `kind` says.
    pub fn account(name: &str, kind: IdentityKind) -> Subject {
        Subject {
            account: Some(name.to_owned()),
            kind,
            claims: None,
            groups: Vec::new(),
        }
    }

    /// The same, with groups its credentials carry.
    pub fn with_groups(mut self, groups: Vec<String>) -> Subject {
        self.groups = groups;
        self
    }

    /// An OIDC identity with its token's claims (its `groups` claim, a list of names, are its
    /// groups).
    pub fn oidc(name: &str, claims: Arc<serde_json::Map<String, serde_json::Value>>) -> Subject {
        let groups = claims
            .get("groups")
            .and_then(|g| g.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Subject {
            account: Some(name.to_owned()),
            kind: IdentityKind::Oidc,
            claims: Some(claims),
            groups,
        }
    }

    /// A claim's value as text (strings as they are, other values as JSON).
    fn claim(&self, name: &str) -> Option<String> {
        let v = self.claims.as_ref()?.get(name)?;
        Some(match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// What the rule matches is allowed.
    #[default]
    Allow,
    /// What the rule matches is refused, whatever later rules say.
    Deny,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for `explain` and the audit log (default: its position).
    #[serde(default)]
    pub name: Option<String>,
    /// Repository name glob (`*` matches `/` too); `catalog` and `admin` ignore it. `{name}`
    /// stands for the value of the identity's claim `name` (OIDC), e.g. `{repository}/*`; a
    /// rule naming a claim the identity lacks does not match.
    #[serde(default = "any_repository")]
    pub repository: String,
    /// `pull`, `push`, `delete`, `catalog`, `admin`, or `*`.
    pub actions: Vec<String>,
    /// Accounts: names, `*` for any authenticated account, `anonymous`.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Groups: from `groups` in the policy file, a robot token's, an ID token's `groups` claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only identities of these kinds (`password`, `robot`, `token`, `certificate`,
    /// `anonymous`); any, if empty.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Conditions on the identity's claims (OIDC): claim name to glob, all of which must match.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Allow (the default) or deny.
    #[serde(default)]
    pub effect: Effect,
}

/// `pattern` with each `{claim}` replaced by the subject's claim; `None` if one is missing or
/// would reach outside its place (a claim holding `*` or `{`).
fn with_claims<'p>(pattern: &'p str, who: &Subject) -> Option<std::borrow::Cow<'p, str>> {
    // The common rule names no claim: no copy on the path every request takes.
    if !pattern.contains('{') {
        return Some(std::borrow::Cow::Borrowed(pattern));
    }
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')? + open;
        out.push_str(&rest[..open]);
        let value = who.claim(&rest[open + 1..close])?;
        if value.contains(['*', '{', '}']) {
            return None;
        }
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(std::borrow::Cow::Owned(out))
}

fn any_repository() -> String {
    "*".into()
}

const ACTIONS: [&str; 6] = ["pull", "push", "delete", "catalog", "admin", "*"];
const KINDS: [&str; 6] = [
    "anonymous",
    "password",
    "robot",
    "token",
    "certificate",
    "oidc",
];

/// Tags that, once pushed, never move and are never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableTags {
    /// A name for refusals (default: its position).
    #[serde(default)]
    pub name: Option<String>,
    /// Repository name glob.
    #[serde(default = "any_repository")]
    pub repository: String,
    /// Tag globs it protects.
    pub tags: Vec<String>,
    /// Tag globs it leaves mutable (`latest`).
    #[serde(default)]
    pub except: Vec<String>,
}

/// What a retention rule keeps; a tag any of these keeps stays.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepFile {
    newest: Option<usize>,
    pulledwithin: Option<String>,
    semver: Option<usize>,
    #[serde(default)]
    tags: Vec<String>,
}

/// A retention rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "any_repository")]
    repository: String,
    keep: KeepFile,
}

/// A quota as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "any_repository")]
    repository: String,
    bytes: serde_yaml_ng::Value,
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    immutable: Vec<ImmutableTags>,
    #[serde(default)]
    retention: Vec<RetentionFile>,
    #[serde(default)]
    quotas: Vec<QuotaFile>,
}

/// `30d`, `12h`, `90m`, or any Go-style duration.
fn parse_days_or_duration(s: &str) -> Option<Duration> {
    match s.trim().strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .ok()
            .map(|d| Duration::from_secs(d * 86_400)),
        None => crate::config::parse_duration(s),
    }
}

/// `10GiB`, `500MB`, `1024`: bytes, with binary (KiB...TiB) or decimal (KB...TB) units.
pub fn parse_bytes(v: &serde_yaml_ng::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    immutable: Vec<ImmutableTags>,
    retention: Vec<(String, registry_core::Retention)>,
    quotas: Vec<(String, registry_core::Quota)>,
    /// Account → its groups.
    membership: HashMap<String, Vec<String>>,
}

/// What the policy decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether it is allowed.
    pub allowed: bool,
    /// The deciding rule's name (or `#N`, 1-based), `None` when no rule matched.
    pub rule: Option<String>,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match &self.rule {
            Some(r) => write!(f, "{verdict} by rule {r}"),
            None => write!(f, "{verdict}: no rule matches"),
        }
    }
}

impl Policy {
    /// Parses a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        for (i, r) in file.rules.iter().enumerate() {
            let at = || {
                format!(
                    "rule {}",
                    r.name.clone().unwrap_or_else(|| format!("#{}", i + 1))
                )
            };
            if r.accounts.is_empty() && r.groups.is_empty() && r.claims.is_empty() {
                return Err(format!("{}: names no accounts, groups or claims", at()));
            }
            if r.actions.is_empty() {
                return Err(format!("{}: names no actions", at()));
            }
            if let Some(a) = r.actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
                return Err(format!("{}: unknown action {a:?}", at()));
            }
            if let Some(k) = r.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
                return Err(format!("{}: unknown identity kind {k:?}", at()));
            }
        }
        let mut membership: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in &file.groups {
            for m in members {
                membership.entry(m.clone()).or_default().push(group.clone());
            }
        }
        if let Some(i) = file.immutable.iter().position(|r| r.tags.is_empty()) {
            return Err(format!("immutable rule #{}: names no tags", i + 1));
        }
        let mut retention = Vec::new();
        for (i, r) in file.retention.into_iter().enumerate() {
            let name = r.name.unwrap_or_else(|| format!("retention #{}", i + 1));
            let k = r.keep;
            let pulled_within = match &k.pulledwithin {
                None => None,
                Some(d) => Some(parse_days_or_duration(d).ok_or_else(|| {
                    format!("{name}: keep.pulledwithin {d:?} is not a duration like 30d or 12h")
                })?),
            };
            if k.newest.is_none()
                && pulled_within.is_none()
                && k.semver.is_none()
                && k.tags.is_empty()
            {
                return Err(format!(
                    "{name}: keeps nothing (give keep.newest, pulledwithin, semver or tags)"
                ));
            }
            retention.push((
                r.repository,
                registry_core::Retention {
                    name,
                    newest: k.newest,
                    pulled_within,
                    semver: k.semver,
                    always: k.tags,
                },
            ));
        }
        let mut quotas = Vec::new();
        for (i, q) in file.quotas.into_iter().enumerate() {
            let name = q.name.unwrap_or_else(|| format!("quota #{}", i + 1));
            let bytes = parse_bytes(&q.bytes)
                .ok_or_else(|| format!("{name}: bytes {:?} is not a size like 10GiB", q.bytes))?;
            quotas.push((q.repository, registry_core::Quota { name, bytes }));
        }
        Ok(Policy {
            rules: file.rules,
            immutable: file.immutable,
            retention,
            quotas,
            membership,
        })
    }

    /// Whether the file has access rules or groups (which need identities: auth).
    pub fn has_access_rules(&self) -> bool {
        !self.rules.is_empty() || !self.membership.is_empty()
    }

    /// The retention rule that covers `repository` (the first whose glob matches).
    pub fn retention(&self, repository: &str) -> Option<&registry_core::Retention> {
        self.retention
            .iter()
            .find(|(glob, _)| glob_match(glob, repository))
            .map(|(_, r)| r)
    }

    /// The quota that covers `repository` (the first whose glob matches).
    pub fn quota(&self, repository: &str) -> Option<&registry_core::Quota> {
        self.quotas
            .iter()
            .find(|(glob, _)| glob_match(glob, repository))
            .map(|(_, q)| q)
    }

    /// The name of the rule that makes `tag` of `repository` immutable, if one does.
    pub fn immutable_rule(&self, repository: &str, tag: &str) -> Option<String> {
        self.immutable.iter().enumerate().find_map(|(i, r)| {
            let protects = glob_match(&r.repository, repository)
                && r.tags.iter().any(|g| glob_match(g, tag))
                && !r.except.iter().any(|g| glob_match(g, tag));
            protects.then(|| {
                r.name
                    .clone()
                    .unwrap_or_else(|| format!("immutable #{}", i + 1))
            })
        })
    }

    /// The groups `account` belongs to.
    pub fn groups_of(&self, account: &str) -> &[String] {
        self.membership.get(account).map_or(&[], Vec::as_slice)
    }

    fn matches_who(&self, rule: &Rule, who: &Subject) -> bool {
        if !rule.kinds.is_empty() && !rule.kinds.iter().any(|k| k == who.kind.name()) {
            return false;
        }
        let by_account = rule
            .accounts
            .iter()
            .any(|a| match (a.as_str(), &who.account) {
                ("anonymous", None) => true,
                ("*", Some(_)) => true,
                (name, Some(account)) => name == account,
                _ => false,
            });
        let by_group = who.account.as_deref().is_some_and(|account| {
            self.groups_of(account)
                .iter()
                .chain(&who.groups)
                .any(|g| rule.groups.contains(g))
        });
        let claims_hold = rule.claims.iter().all(|(name, glob)| {
            who.claim(name)
                .is_some_and(|value| glob_match(glob, &value))
        });
        let named = rule.accounts.is_empty() && rule.groups.is_empty();
        claims_hold && (by_account || by_group || (named && !rule.claims.is_empty()))
    }

    /// Decides one action (`pull`, `push`, `delete`, `catalog`, `admin`) on `repository`.
    pub fn decide(&self, who: &Subject, repository: Option<&str>, action: &str) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            let repository_ok = match (action, repository) {
                ("catalog" | "admin", _) | (_, None) => true,
                (_, Some(r)) => {
                    with_claims(&rule.repository, who).is_some_and(|glob| glob_match(&glob, r))
                }
            };
            let action_ok = rule.actions.iter().any(|a| a == "*" || a == action);
            if repository_ok && action_ok && self.matches_who(rule, who) {
                return Decision {
                    allowed: rule.effect == Effect::Allow,
                    rule: Some(rule.name.clone().unwrap_or_else(|| format!("#{}", i + 1))),
                };
            }
        }
        Decision {
            allowed: false,
            rule: None,
        }
    }

    /// What of `requested` the policy gives `who` (for the token issuer).
    pub fn grant(&self, who: &Subject, requested: &[Access]) -> Vec<Access> {
        requested
            .iter()
            .filter_map(|r| {
                let actions: Vec<String> = match r.kind.as_str() {
                    "repository" => r
                        .actions
                        .iter()
                        .filter(|a| self.decide(who, Some(&r.name), a).allowed)
                        .cloned()
                        .collect(),
                    "registry" if matches!(r.name.as_str(), "catalog" | "admin") => {
                        if self.decide(who, None, &r.name).allowed {
                            vec!["*".into()]
                        } else {
                            Vec::new()
                        }
                    }
                    _ => Vec::new(),
                };
                (!actions.is_empty()).then(|| Access {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    actions,
                })
            })
            .collect()
    }

    /// The first refusal among what `need` names, or `Ok` with the first decision that
    /// allowed it (`None` when `need` names nothing).
    pub fn check(&self, who: &Subject, need: &[Access]) -> Result<Option<Decision>, Decision> {
        let mut first = None;
        let mut ask = |repository: Option<&str>, action: &str| {
            let d = self.decide(who, repository, action);
            if !d.allowed {
                return Err(d);
            }
            first.get_or_insert(d);
            Ok(())
        };
        for n in need {
            match n.kind.as_str() {
                "registry" if n.name == "admin" => ask(None, "admin")?,
                "registry" => ask(None, "catalog")?,
                _ => {
                    for a in &n.actions {
                        ask(Some(&n.name), a)?;
                    }
                }
            }
        }
        Ok(first)
    }
}

/// The policy in force, read again from its file when the file changes.
#[derive(Debug)]
pub struct PolicyFileWatch {
    path: PathBuf,
    current: RwLock<(Arc<Policy>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl registry_core::RepositoryRules for PolicyFileWatch {
    fn immutable(
        &self,
        name: &registry_core::RepositoryName,
        tag: &registry_core::Tag,
    ) -> Option<String> {
        self.current().immutable_rule(name.as_str(), tag.as_str())
    }

    fn retention(&self, name: &registry_core::RepositoryName) -> Option<registry_core::Retention> {
        self.current().retention(name.as_str()).cloned()
    }

    fn quota(&self, name: &registry_core::RepositoryName) -> Option<registry_core::Quota> {
        self.current().quota(name.as_str()).cloned()
    }
}

/// How often the file's modification time is looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

impl PolicyFileWatch {
    /// Reads the policy at `path`.
    pub fn load(path: &Path) -> Result<PolicyFileWatch, String> {
        let stamp = modified(path);
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let policy = Policy::parse(&text)?;
        Ok(PolicyFileWatch {
            path: path.to_owned(),
            current: RwLock::new((Arc::new(policy), stamp)),
        })
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Reads the file again if it changed; a file that does not parse leaves the policy as
    /// it was (and is logged), so a typo never opens or closes the registry.
    pub fn reload_if_changed(&self) {
        let stamp = modified(&self.path);
        let seen = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1;
        if stamp == seen {
            return;
        }
        let parsed = std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| Policy::parse(&t));
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.1 = stamp;
        match parsed {
            Ok(p) => {
                current.0 = Arc::new(p);
                tracing::info!(path = %self.path.display(), "access policy reloaded");
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "access policy not reloaded: it does not parse; the previous one stays");
            }
        }
    }

    /// Looks for changes every [`RELOAD_EVERY`], for as long as the process runs.
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            self.reload_if_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "
groups:
  devs: [alice, bob]
rules:
  - name: no one deletes base
    repository: base/*
    actions: [delete]
    accounts: ['*']
    effect: deny
  - name: devs work on team
    repository: team/*
    actions: [pull, push, delete]
    groups: [devs]
  - name: ci pushes team
    repository: team/*
    actions: [pull, push]
    accounts: [ci-bot]
    kinds: [robot]
  - name: everyone pulls
    actions: [pull]
    accounts: [anonymous, '*']
  - name: admin
    actions: ['*']
    accounts: [root]
";

    #[test]
    fn the_first_matching_rule_decides() {
        let p = Policy::parse(POLICY).unwrap();
        let alice = Subject::account("alice", IdentityKind::Password);
        let d = p.decide(&alice, Some("team/app"), "push");
        assert_eq!(d.to_string(), "allowed by rule devs work on team");
        assert!(!p.decide(&alice, Some("other/app"), "push").allowed);
        assert!(p.decide(&alice, Some("other/app"), "pull").allowed);
        let root = Subject::account("root", IdentityKind::Password);
        assert_eq!(
            p.decide(&root, Some("base/os"), "delete").to_string(),
            "denied by rule no one deletes base"
        );
        assert!(p.decide(&root, None, "catalog").allowed);
        assert!(!p.decide(&alice, None, "catalog").allowed);
        assert!(p.decide(&Subject::anonymous(), Some("x"), "pull").allowed);
        assert!(!p.decide(&Subject::anonymous(), Some("x"), "push").allowed);
        // A rule for robots only: the same name logging in with a password does not match.
        let robot = Subject::account("ci-bot", IdentityKind::Robot);
        assert!(p.decide(&robot, Some("team/app"), "push").allowed);
        let impostor = Subject::account("ci-bot", IdentityKind::Password);
        assert!(!p.decide(&impostor, Some("team/app"), "push").allowed);
        assert_eq!(
            p.decide(&impostor, Some("team/app"), "push").to_string(),
            "denied: no rule matches"
        );
    }

    #[test]
    fn grants_and_checks() {
        let p = Policy::parse(POLICY).unwrap();
        let bob = Subject::account("bob", IdentityKind::Token);
        assert_eq!(
            p.grant(
                &bob,
                &[
                    Access::repository("team/app", &["pull", "push"]),
                    Access::repository("base/os", &["push", "pull"]),
                    Access::catalog(),
                ]
            ),
            vec![
                Access::repository("team/app", &["pull", "push"]),
                Access::repository("base/os", &["pull"]),
            ]
        );
        assert!(
            p.check(&bob, &[Access::repository("team/a", &["push"])])
                .is_ok()
        );
        assert_eq!(
            p.check(&bob, &[Access::repository("base/a", &["pull", "delete"])])
                .unwrap_err()
                .rule
                .as_deref(),
            Some("no one deletes base")
        );
    }

    #[test]
    fn claims_condition_rules_and_fill_repository_names() {
        let p = Policy::parse(
            "rules:
  - name: main of a repo pushes its own images
    repository: 'gh/{repository}/*'
    actions: [pull, push]
    claims: {ref: refs/heads/main}
",
        )
        .unwrap();
        let token = |repo: &str, git_ref: &str| {
            let claims = serde_json::json!({"repository": repo, "ref": git_ref});
            Subject::oidc("repo:x", Arc::new(claims.as_object().unwrap().clone()))
        };
        let main = token("org/app", "refs/heads/main");
        assert!(p.decide(&main, Some("gh/org/app/web"), "push").allowed);
        assert!(!p.decide(&main, Some("gh/org/other/web"), "push").allowed);
        let branch = token("org/app", "refs/heads/feature");
        assert!(!p.decide(&branch, Some("gh/org/app/web"), "push").allowed);
        // A claim value cannot widen the glob it fills.
        let sneaky = token("*", "refs/heads/main");
        assert!(!p.decide(&sneaky, Some("gh/org/app/web"), "push").allowed);
        // Without claims (a password), the rule never matches.
        let alice = Subject::account("alice", IdentityKind::Password);
        assert!(!p.decide(&alice, Some("gh/org/app/web"), "pull").allowed);
    }

    #[test]
    fn groups_come_from_the_file_and_from_credentials() {
        let p = Policy::parse(
            "rules:
  - repository: ops/*
    actions: [push]
    groups: [ops]
",
        )
        .unwrap();
        let robot = Subject::account("deployer", IdentityKind::Robot);
        assert!(!p.decide(&robot, Some("ops/x"), "push").allowed);
        let robot = robot.with_groups(vec!["ops".into()]);
        assert!(p.decide(&robot, Some("ops/x"), "push").allowed);
        let claims = serde_json::json!({"groups": ["ops", "dev"]});
        let person = Subject::oidc("pat", Arc::new(claims.as_object().unwrap().clone()));
        assert!(p.decide(&person, Some("ops/x"), "push").allowed);
    }

    #[test]
    fn immutable_tags_by_repository_and_pattern() {
        let p = Policy::parse(
            "immutable:
  - name: releases
    repository: prod/*
    tags: ['v*', '*']
    except: [latest]
",
        )
        .unwrap();
        assert_eq!(
            p.immutable_rule("prod/app", "v1.2").as_deref(),
            Some("releases")
        );
        assert_eq!(p.immutable_rule("prod/app", "latest"), None);
        assert_eq!(p.immutable_rule("dev/app", "v1.2"), None);
        assert!(Policy::parse("immutable: [{tags: []}]").is_err());
    }

    #[test]
    fn retention_and_quotas_by_repository() {
        let p = Policy::parse(
            "retention:
  - name: ci
    repository: ci/*
    keep: {newest: 5, pulledwithin: 30d, semver: 3, tags: [latest]}
  - repository: '*'
    keep: {pulledwithin: 12h}
quotas:
  - name: team
    repository: team/*
    bytes: 10GiB
  - repository: '*'
    bytes: 500
",
        )
        .unwrap();
        assert!(!p.has_access_rules());
        let ci = p.retention("ci/app").unwrap();
        assert_eq!(ci.name, "ci");
        assert_eq!((ci.newest, ci.semver), (Some(5), Some(3)));
        assert_eq!(ci.pulled_within, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(ci.always, ["latest"]);
        let rest = p.retention("dev/app").unwrap();
        assert_eq!(rest.name, "retention #2");
        assert_eq!(rest.pulled_within, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(p.quota("team/app").unwrap().bytes, 10 << 30);
        assert_eq!(p.quota("other").unwrap().bytes, 500);
        assert_eq!(p.quota("other").unwrap().name, "quota #2");
        for bad in [
            "retention: [{keep: {}}]",
            "retention: [{keep: {pulledwithin: soon}}]",
            "retention: [{keep: {newest: 1, forever: true}}]",
            "quotas: [{bytes: 10 gigs}]",
            "quotas: [{bytes: -1}]",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        use serde_yaml_ng::Value;
        assert_eq!(parse_bytes(&Value::from("500MB")), Some(500_000_000));
        assert_eq!(parse_bytes(&Value::from("2KiB")), Some(2048));
        assert_eq!(parse_bytes(&Value::from("99999999999TiB")), None);
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            (
                "rules: [{actions: [pull]}]",
                "names no accounts, groups or claims",
            ),
            ("rules: [{actions: [fly], accounts: [a]}]", "unknown action"),
            (
                "rules: [{actions: [pull], accounts: [a], kinds: [x]}]",
                "unknown identity kind",
            ),
            (
                "rules: [{actions: [pull], accounts: [a], colour: red}]",
                "unknown field",
            ),
        ] {
            let e = Policy::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yml");
        std::fs::write(&path, "rules: [{actions: [pull], accounts: [anonymous]}]").unwrap();
        let watch = PolicyFileWatch::load(&path).unwrap();
        let anon = Subject::anonymous();
        assert!(!watch.current().decide(&anon, Some("a"), "push").allowed);
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::write(&path, "rules: [{actions: ['*'], accounts: [anonymous]}]").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        watch.reload_if_changed();
        assert!(watch.current().decide(&anon, Some("a"), "push").allowed);
        std::fs::write(&path, "rules: [{actions: [oops]}]").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        watch.reload_if_changed();
        assert!(watch.current().decide(&anon, Some("a"), "push").allowed);
    }
}
