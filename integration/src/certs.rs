//! Certificates for TLS tests, made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::run;

/// A self-signed P-256 certificate for 127.0.0.1 and its key, written as `<name>.crt` and
/// `<name>.key` in `dir`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 it signed (`server.crt`,
/// `server.key`), in `dir`: returns the CA, the certificate and the key.
pub fn ca_and_server(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = self_signed(dir, "ca");
    let (cert, key, csr) = (
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("server.csr"),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
}
