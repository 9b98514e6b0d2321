//! Someone using the web UI: logging in with the credentials the API takes, and what the
//! identity they logged in as may do, decided as the API decides it.

use std::sync::Arc;

use super::logins::{LoginRefused, Origin};
use super::policy::{IdentityKind, Policy, Subject};
use super::robots::{self, RobotRecord};
use super::{Access, Auth, AuthError, Authorizer, refused_login};
use crate::observe::Metrics;

/// A UI visitor, with what their identity needs to be asked about (read once per page).
pub struct Viewer {
    /// Who they are.
    pub subject: Subject,
    /// The robot record behind a robot login (its access bounds the policy's).
    robot: Option<RobotRecord>,
    /// False when the identity no longer stands (a revoked robot, a removed account).
    valid: bool,
    /// The policy in force, if any, read once for the whole page.
    policy: Option<Arc<Policy>>,
    authorizer: Arc<Authorizer>,
}

/// The kind of identity a name stands for (the names [`IdentityKind::name`] gives).
pub fn kind_named(name: &str) -> Option<IdentityKind> {
    [
        IdentityKind::Anonymous,
        IdentityKind::Password,
        IdentityKind::Robot,
        IdentityKind::Token,
        IdentityKind::Certificate,
        IdentityKind::Oidc,
    ]
    .into_iter()
    .find(|k| k.name() == name)
}

impl Authorizer {
    /// Whether people can log in here at all (an open registry has no accounts; a registry
    /// whose tokens another service signs cannot check passwords).
    pub fn has_logins(&self) -> bool {
        match &self.auth {
            Auth::None => false,
            Auth::Htpasswd { .. } => true,
            Auth::Token(_) => self.issuer.is_some(),
        }
    }

    /// Checks a login typed into the UI: an htpasswd password, a robot token or an OIDC ID
    /// token, through the same throttled gate as the API's logins.
    pub async fn browser_login(
        &self,
        user: &str,
        password: &str,
        origin: Origin,
        metrics: &Metrics,
    ) -> Result<Subject, AuthError> {
        if !self.has_logins() {
            return Err(AuthError::NoIssuer);
        }
        if password.starts_with(robots::TOKEN_PREFIX) {
            let record = self
                .robot_login(user, password, "", origin, metrics)
                .await?;
            return Ok(record.subject());
        }
        if self.takes_oidc(password) {
            return self.oidc_login(user, password, "", origin, metrics).await;
        }
        let users = match &self.auth {
            Auth::Htpasswd { users, .. } => Some(users),
            Auth::Token(_) => self.issuer.as_ref().and_then(|i| i.users()),
            Auth::None => None,
        };
        let Some(users) = users else {
            return Err(refused_login(LoginRefused::Invalid, ""));
        };
        self.logins
            .check(users, user, password, origin, metrics)
            .await
            .map_err(|r| refused_login(r, ""))?;
        Ok(Subject::account(user, IdentityKind::Password))
    }

    /// What `subject` (as a UI session names it) stands for now: a revoked robot or an
    /// account gone from the htpasswd file may do nothing.
    pub async fn viewer(self: &Arc<Self>, subject: Subject) -> Viewer {
        let mut robot = None;
        let valid = match subject.kind {
            IdentityKind::Robot => {
                let name = subject.account.as_deref().unwrap_or_default();
                robot = match self.robots.get() {
                    Some(robots) => robots.still_valid(name).await.ok().flatten(),
                    None => None,
                };
                robot.is_some()
            }
            IdentityKind::Password => {
                let name = subject.account.as_deref().unwrap_or_default();
                match &self.auth {
                    Auth::Htpasswd { users, .. } => users.knows(name),
                    Auth::Token(_) => self
                        .issuer
                        .as_ref()
                        .and_then(|i| i.users())
                        .is_some_and(|u| u.knows(name)),
                    Auth::None => false,
                }
            }
            _ => true,
        };
        Viewer {
            subject: robot.as_ref().map_or(subject, RobotRecord::subject),
            robot,
            valid,
            policy: self.policy.as_ref().map(|p| p.current()),
            authorizer: self.clone(),
        }
    }
}

impl Viewer {
    /// Whether they may do `action` (`pull`, `push`, `delete`) to `repository`, as the API
    /// would decide for a request with their credentials. Not written to the audit log: a
    /// page asks this for every repository it lists.
    pub fn may(&self, repository: &str, action: &str) -> bool {
        let need = [Access::repository(repository, &[action])];
        if !self.valid {
            return false;
        }
        let who = &self.subject;
        match &self.authorizer.auth {
            Auth::None => true,
            Auth::Htpasswd { .. } => {
                if self.robot.as_ref().is_some_and(|r| !r.allows(&need)) {
                    return false;
                }
                match &self.policy {
                    Some(p) => p.check(who, &need).is_ok(),
                    None => who.account.is_some(),
                }
            }
            Auth::Token(_) => {
                let Some(issuer) = &self.authorizer.issuer else {
                    return false;
                };
                let mut grants = need.to_vec();
                if let Some(r) = &self.robot {
                    grants = r.grant(&grants);
                }
                grants = match (&self.policy, who.kind) {
                    (Some(p), _) => p.grant(who, &grants),
                    (None, IdentityKind::Robot) => grants,
                    (None, IdentityKind::Oidc) => Vec::new(),
                    (None, _) => issuer.grant(who.account.as_deref(), &grants),
                };
                need.iter().all(|n| n.satisfied_by(&grants))
            }
        }
    }

    /// The account they logged in as (`None`: anonymous).
    pub fn account(&self) -> Option<&str> {
        self.subject.account.as_deref().filter(|_| self.valid)
    }
}
