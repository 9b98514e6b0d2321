//! Failed logins slow down whoever keeps failing: per client address, and per account.
//!
//! A client address gets `free` failures; after that each further failure locks it out for
//! twice as long as the one before (1 s, 2 s, 4 s, ... up to `max_delay`), so guessing costs
//! time that grows with every wrong guess. An account gets more free failures (it is shared by
//! all its clients) and a shorter longest lockout, so that an attacker who cannot reach the
//! password can only delay its owner, briefly. A success clears the address and the account.
//! Quiet for fifteen minutes, a record is forgotten.
//!
//! The state is per replica, on purpose: a throttle in the store would cost a write per failed
//! login, which is what an attacker would then flood. With N replicas behind a balancer an
//! attacker gets at most N times the attempts, which SECURITY.md states.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Records kept per map before the ones that lock nothing are dropped.
const MAX_RECORDS: usize = 100_000;

/// A record not touched for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The throttle's settings (`berth.logins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures from one address before lockouts start.
    pub free_per_client: u32,
    /// Failures for one account before lockouts start.
    pub free_per_account: u32,
    /// Longest lockout of an address.
    pub max_client_delay: Duration,
    /// Longest lockout of an account.
    pub max_account_delay: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            free_per_client: 5,
            free_per_account: 20,
            max_client_delay: Duration::from_secs(300),
            max_account_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    locked_until: Instant,
    touched: Instant,
}

struct Ledger<K> {
    records: HashMap<K, Record>,
    free: u32,
    max_delay: Duration,
}

impl<K: Hash + Eq + Clone> Ledger<K> {
    fn new(free: u32, max_delay: Duration) -> Self {
        Ledger {
            records: HashMap::new(),
            free,
            max_delay,
        }
    }

    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let r = self.records.get(key)?;
        (r.locked_until > now).then(|| r.locked_until - now)
    }

    fn fail(&mut self, key: &K, now: Instant) {
        if self.records.len() >= MAX_RECORDS && !self.records.contains_key(key) {
            self.records
                .retain(|_, r| r.locked_until > now && now - r.touched < FORGET_AFTER);
            if self.records.len() >= MAX_RECORDS {
                // Under a flood of distinct keys: forgetting is safer than growing.
                self.records.clear();
            }
        }
        let r = self.records.entry(key.clone()).or_insert(Record {
            failures: 0,
            locked_until: now,
            touched: now,
        });
        if now - r.touched >= FORGET_AFTER {
            r.failures = 0;
        }
        r.failures += 1;
        r.touched = now;
        if r.failures > self.free {
            let doublings = (r.failures - self.free - 1).min(20);
            let delay = Duration::from_secs(1u64 << doublings).min(self.max_delay);
            r.locked_until = now + delay;
        }
    }

    fn clear(&mut self, key: &K) {
        self.records.remove(key);
    }
}

/// Failed logins per client address and per account.
pub struct LoginThrottle {
    clients: Mutex<Ledger<IpAddr>>,
    accounts: Mutex<Ledger<String>>,
}

impl LoginThrottle {
    /// A throttle with `s`.
    pub fn new(s: &ThrottleSettings) -> LoginThrottle {
        LoginThrottle {
            clients: Mutex::new(Ledger::new(s.free_per_client, s.max_client_delay)),
            accounts: Mutex::new(Ledger::new(s.free_per_account, s.max_account_delay)),
        }
    }

    /// How long `client` or `account` must still wait, if either is locked out.
    pub fn locked(&self, account: &str, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let c = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locked(&client, now);
        let a = self
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locked(&account.to_owned(), now);
        c.max(a)
    }

    /// Counts a failed login.
    pub fn failed(&self, account: &str, client: IpAddr) {
        let now = Instant::now();
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail(&client, now);
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail(&account.to_owned(), now);
    }

    /// Clears both records after a successful login.
    pub fn succeeded(&self, account: &str, client: IpAddr) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear(&client);
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear(&account.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lockouts_start_after_the_free_failures_and_double() {
        let s = ThrottleSettings {
            free_per_client: 3,
            free_per_account: 100,
            max_client_delay: Duration::from_secs(8),
            max_account_delay: Duration::from_secs(1),
        };
        let t = LoginThrottle::new(&s);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert!(t.locked("alice", a).is_none());
            t.failed("alice", a);
        }
        assert!(t.locked("alice", a).is_none(), "three free failures");
        let mut delays = Vec::new();
        for _ in 0..6 {
            t.failed("alice", a);
            delays.push(t.locked("alice", a).unwrap().as_secs_f64().round() as u64);
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
        assert!(t.locked("alice", ip("10.0.0.2")).is_none(), "other clients");
        t.succeeded("alice", a);
        assert!(t.locked("alice", a).is_none());
    }

    #[test]
    fn an_account_is_locked_briefly_whoever_fails() {
        let s = ThrottleSettings {
            free_per_client: 100,
            free_per_account: 2,
            max_client_delay: Duration::from_secs(300),
            max_account_delay: Duration::from_secs(2),
        };
        let t = LoginThrottle::new(&s);
        for i in 0..10 {
            t.failed("bob", ip(&format!("10.0.1.{i}")));
        }
        let wait = t.locked("bob", ip("10.9.9.9")).unwrap();
        assert!(wait <= Duration::from_secs(2));
        assert!(t.locked("carol", ip("10.9.9.9")).is_none());
    }
}
