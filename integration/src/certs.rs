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
    let (cert, key) = signed_by(
        dir,
        (&ca, &ca_key),
        "server",
        "127.0.0.1",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    );
    (ca, cert, key)
}

/// A client certificate for `/CN=cn` that the CA (`ca`, `ca_key`) signed, as `name.crt` and
/// `name.key` in `dir`.
pub fn client_certificate(
    dir: &Path,
    ca: (&Path, &Path),
    name: &str,
    cn: &str,
) -> (PathBuf, PathBuf) {
    signed_by(
        dir,
        ca,
        name,
        cn,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
}

/// A P-256 key and a certificate for `/CN=cn` with extensions `ext` that the CA signed, as
/// `name.crt` and `name.key` in `dir`.
fn signed_by(
    dir: &Path,
    (ca, ca_key): (&Path, &Path),
    name: &str,
    cn: &str,
    ext: &str,
) -> (PathBuf, PathBuf) {
    let (cert, key, csr) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
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
        .args(["-nodes", "-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext_file = dir.join(format!("{name}.ext"));
    std::fs::write(&ext_file, ext).unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca)
        .arg("-CAkey")
        .arg(ca_key)
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext_file)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}
