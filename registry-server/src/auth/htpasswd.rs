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
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let fingerprint: [u8; 32] = Sha256::new()
            .chain_update(user)
            .chain_update([0])
            .chain_update(password)
            .chain_update([0])
            .chain_update(hash)
            .finalize()
            .into();
        if let Ok(v) = self.verified.lock()
            && v.get(&fingerprint)
                .is_some_and(|t| t.elapsed() < VERIFIED_TTL)
        {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok && let Ok(mut v) = self.verified.lock() {
            v.retain(|_, t| t.elapsed() < VERIFIED_TTL);
            v.insert(fingerprint, Instant::now());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            Htpasswd::parse("carol:{SHA}abc")
                .unwrap_err()
                .contains("bcrypt")
        );
        assert!(Htpasswd::parse("no-colon").is_err());
    }
}
