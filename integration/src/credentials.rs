//! Credentials for end-to-end tests: htpasswd files and Berth's built-in token issuer.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::run;

/// Writes an htpasswd file (bcrypt, as `htpasswd -B` makes) for `users` into `dir`.
pub fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let text: String = users
        .iter()
        .map(|(u, p)| {
            format!(
                "{u}:{}\n",
                bcrypt::hash(p, 5).unwrap().replacen("$2b$", "$2y$", 1)
            )
        })
        .collect();
    let path = dir.join("htpasswd");
    std::fs::write(&path, text).unwrap();
    path
}

/// A signing key pair and an htpasswd file for Berth's token auth with its built-in issuer.
pub struct TokenIssuer {
    /// The issuer's private key (PEM), to forge tokens with in tests.
    pub private_pem: Vec<u8>,
    private: PathBuf,
    public: PathBuf,
    users: PathBuf,
}

impl TokenIssuer {
    /// Makes a P-256 key pair with openssl and an htpasswd of `users`, all in `dir`.
    pub fn new(dir: &Path, users: &[(&str, &str)]) -> TokenIssuer {
        let private = dir.join("token-key.pem");
        let public = dir.join("token-pub.pem");
        let pem = run(Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]));
        std::fs::write(&private, &pem.stdout).unwrap();
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public));
        TokenIssuer {
            private_pem: pem.stdout,
            private,
            public,
            users: htpasswd(dir, users),
        }
    }

    /// The `auth` and `berth.tokenserver` sections (service `berth-test`) with `access`, a YAML
    /// list of rules indented by six spaces.
    pub fn config_yaml(&self, access: &str) -> String {
        format!(
            "auth:
  token:
    service: berth-test
    issuer: berth-test-issuer
    rootcertbundle: {public}
berth:
  tokenserver:
    privatekey: {private}
    users: {users}
    access:
{access}",
            public = self.public.display(),
            private = self.private.display(),
            users = self.users.display()
        )
    }
}
