//! htpasswd files with bcrypt entries (`htpasswd -B`), as distribution reads them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a verified password is remembered, sparing a bcrypt run per request.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash at the file's highest cost, checked for unknown users so that they cost the
    /// same time as known ones (else the time tells which names exist).
    decoy: String,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for Htpasswd {
    // Never print the hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

impl Htpasswd {
    /// Reads an htpasswd file; entries that are not bcrypt are refused by name.
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses htpasswd text.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(format!(
                    "line {}: user {user:?} is not a bcrypt entry (use htpasswd -B)",
                    n + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        let cost = users
            .values()
            .filter_map(|h| h.get(4..6).and_then(|c| c.parse::<u32>().ok()))
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST)
            .clamp(4, 31);
        let decoy = bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost)
            .map_err(|e| format!("cannot make a decoy hash: {e}"))?;
        Ok(Htpasswd {
            users,
            decoy,
            verified: Mutex::new(HashMap::new()),
        })
    }

    fn fingerprint(user: &str, password: &str, hash: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(user)
            .chain_update([0])
            .chain_update(password)
            .chain_update([0])
            .chain_update(hash)
            .finalize()
            .into()
    }

    /// Whether the file has an account `user`.
    pub fn knows(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `password` was verified as `user`'s within the last minute: no bcrypt run, so
    /// this may be called on the async workers.
    pub fn remembered(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let fingerprint = Self::fingerprint(user, password, hash);
        self.verified.lock().is_ok_and(|v| {
            v.get(&fingerprint)
                .is_some_and(|t| t.elapsed() < VERIFIED_TTL)
        })
    }

    /// Whether `password` is `user`'s, by bcrypt (hundreds of milliseconds at cost 12: run it
    /// on a blocking thread). Unknown users are checked against the decoy, at the same cost.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok && let Ok(mut v) = self.verified.lock() {
            v.retain(|_, t| t.elapsed() < VERIFIED_TTL);
            v.insert(Self::fingerprint(user, password, hash), Instant::now());
        }
        ok
    }

    /// Whether `password` is `user`'s: [`Htpasswd::remembered`] or [`Htpasswd::check`].
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.remembered(user, password) || self.check(user, password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_cost_what_known_ones_do() {
        let hash = bcrypt::hash("pw", 8).unwrap();
        let h = Htpasswd::parse(&format!("alice:{hash}\n")).unwrap();
        let time = |user: &str| {
            let t = Instant::now();
            assert!(!h.check(user, "wrong"));
            t.elapsed()
        };
        let (known, unknown) = (time("alice"), time("mallory"));
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.5..2.0).contains(&ratio),
            "known {known:?}, unknown {unknown:?}"
        );
    }

    #[test]
    fn bcrypt_entries() {
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let h = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(h.verify("alice", "s3cret"), "cached");
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.verify("bob", "s3cret"));
        assert!(h.remembered("alice", "s3cret"));
        assert!(!h.remembered("alice", "wrong"));
        assert!(
            Htpasswd::parse("carol:{SHA}abc")
                .unwrap_err()
                .contains("bcrypt")
        );
        assert!(Htpasswd::parse("no-colon").is_err());
    }
}
