//! Access scopes (`repository:team/app:pull,push`, `registry:catalog:*`) and what a request needs.

use std::collections::BTreeSet;

/// One grant or requirement: a resource and the actions on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, or `*` for all.
    pub actions: Vec<String>,
}

impl Access {
    /// Access to a repository.
    pub fn repository(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Access to the catalog.
    pub fn catalog() -> Access {
        Access {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }

    /// Administration (robot tokens): `registry:admin:*`.
    pub fn admin() -> Access {
        Access {
            kind: "registry".into(),
            name: "admin".into(),
            actions: vec!["*".into()],
        }
    }

    /// The scope string used in challenges and token requests.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }

    /// Parses `type:name:actions`; names may contain `:` only in a registry host part, which
    /// repository names here never have, so the first and last `:` split the parts.
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions: Vec<String> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Access {
            kind: kind.into(),
            name: name.into(),
            actions,
        })
    }

    /// Whether `grants` cover every action this requirement names.
    pub fn satisfied_by(&self, grants: &[Access]) -> bool {
        let granted: BTreeSet<&str> = grants
            .iter()
            .filter(|g| g.kind == self.kind && g.name == self.name)
            .flat_map(|g| g.actions.iter().map(String::as_str))
            .collect();
        granted.contains("*") || self.actions.iter().all(|a| granted.contains(a.as_str()))
    }
}

pub use registry_core::names::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        let a = Access::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(a, Access::repository("team/app", &["pull", "push"]));
        assert_eq!(a.scope(), "repository:team/app:pull,push");
        assert_eq!(
            Access::parse("registry:catalog:*").unwrap(),
            Access::catalog()
        );
        assert!(Access::parse("nonsense").is_none());
        assert!(Access::parse(":x:pull").is_none());
    }

    #[test]
    fn satisfaction() {
        let need = Access::repository("a", &["pull", "push"]);
        assert!(need.satisfied_by(&[
            Access::repository("a", &["pull"]),
            Access::repository("a", &["push"])
        ]));
        assert!(need.satisfied_by(&[Access::repository("a", &["*"])]));
        assert!(!need.satisfied_by(&[Access::repository("a", &["pull"])]));
        assert!(!need.satisfied_by(&[Access::repository("b", &["*"])]));
    }

    #[test]
    fn globs() {
        assert!(glob_match("team/*", "team/app"));
        assert!(glob_match("team/*", "team/a/b"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("team/*", "other/app"));
        assert!(!glob_match("exact", "exactly"));
    }
}
