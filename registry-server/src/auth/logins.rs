//! Password logins: throttled, checked off the async workers, and written to the audit log.
//!
//! bcrypt at cost 12 takes about half a second of a core. Run on the async workers, sixteen
//! clients sending wrong passwords made `/healthz` take seconds. Here a check runs on a
//! blocking thread, at most half the cores at once, with a bounded queue: a flood of logins
//! slows logins (and is answered 429 past the queue), never other requests.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::htpasswd::Htpasswd;
use super::throttle::{LoginThrottle, ThrottleSettings};
use crate::observe::Metrics;

/// Password checks that may wait for a thread; more are refused at once.
const MAX_WAITING: usize = 256;

/// Why a login did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// Wrong account or password.
    Invalid,
    /// Too many failures from this client or for this account: try again after this long.
    Throttled(Duration),
    /// Too many checks waiting already.
    Busy,
}

/// `berth.logins`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginSettings {
    /// The failure throttle.
    pub throttle: ThrottleSettings,
    /// Take the client's address from the last `X-Forwarded-For` entry (the one the balancer
    /// in front of Berth appended) instead of the connection's peer.
    pub trust_forwarded_for: bool,
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client's address, as the throttle and the audit log count it.
    pub client: IpAddr,
}

impl Origin {
    /// The client of a request from `peer` with `headers`.
    pub fn of(peer: IpAddr, headers: &axum::http::HeaderMap, settings: &LoginSettings) -> Origin {
        let forwarded = settings
            .trust_forwarded_for
            .then(|| {
                headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .next_back()
                    .and_then(|last| last.trim().parse::<IpAddr>().ok())
            })
            .flatten();
        Origin {
            client: forwarded.unwrap_or(peer),
        }
    }
}

/// The login gate of one process.
pub struct Logins {
    throttle: LoginThrottle,
    threads: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// The settings it was made with.
    pub settings: LoginSettings,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Logins({:?})", self.settings)
    }
}

impl Logins {
    /// A gate with `settings`, checking on at most half the cores at once.
    pub fn new(settings: LoginSettings) -> Logins {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Logins {
            throttle: LoginThrottle::new(&settings.throttle),
            threads: Arc::new(Semaphore::new((cores / 2).max(1))),
            waiting: AtomicUsize::new(0),
            settings,
        }
    }

    /// Checks `user`'s `password` against `users` for a client at `origin`.
    pub async fn check(
        &self,
        users: &Arc<Htpasswd>,
        user: &str,
        password: &str,
        origin: Origin,
        metrics: &Metrics,
    ) -> Result<(), LoginRefused> {
        // A password verified a moment ago costs nothing and cannot be a guess.
        if users.remembered(user, password) {
            return Ok(());
        }
        self.gate(
            user,
            "password",
            origin,
            metrics,
            self.bcrypt(users, user, password),
        )
        .await
    }

    /// Runs a credential check (`kind`: a password, a robot token, an ID token) through the
    /// gate every login passes: refused at once while the client or the account is locked out,
    /// a refusal counted toward the lockouts, the outcome in the metrics and the audit log.
    pub async fn gate<T>(
        &self,
        user: &str,
        kind: &str,
        origin: Origin,
        metrics: &Metrics,
        check: impl std::future::Future<Output = Result<T, LoginRefused>>,
    ) -> Result<T, LoginRefused> {
        let result = match self.throttle.locked(user, origin.client) {
            Some(wait) => Err(LoginRefused::Throttled(wait)),
            None => {
                let r = check.await;
                match &r {
                    Ok(_) => self.throttle.succeeded(user, origin.client),
                    Err(LoginRefused::Invalid) => self.throttle.failed(user, origin.client),
                    Err(_) => {}
                }
                r
            }
        };
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(LoginRefused::Invalid) => "refused",
            Err(LoginRefused::Throttled(_)) => "throttled",
            Err(LoginRefused::Busy) => "busy",
        };
        metrics.login(outcome);
        tracing::info!(
            target: "berth::audit",
            event = "login",
            outcome,
            kind,
            account = user,
            client = %origin.client,
        );
        result
    }

    /// bcrypt, off the async workers and bounded in how many wait.
    async fn bcrypt(
        &self,
        users: &Arc<Htpasswd>,
        user: &str,
        password: &str,
    ) -> Result<(), LoginRefused> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(LoginRefused::Busy);
        }
        let permit = self.threads.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let Ok(permit) = permit else {
            return Err(LoginRefused::Busy);
        };
        let (users, u, p) = (users.clone(), user.to_owned(), password.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            users.check(&u, &p)
        })
        .await
        .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(LoginRefused::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_unless_the_balancer_is_trusted() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let plain = LoginSettings::default();
        assert_eq!(Origin::of(peer, &headers, &plain).client, peer);
        let trusting = LoginSettings {
            trust_forwarded_for: true,
            ..Default::default()
        };
        assert_eq!(
            Origin::of(peer, &headers, &trusting).client,
            "2.2.2.2".parse::<IpAddr>().unwrap(),
            "the entry the balancer appended, not one the client wrote"
        );
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(Origin::of(peer, &headers, &trusting).client, peer);
    }
}
