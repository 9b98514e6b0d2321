//! External programs the tests drive (skopeo, docker-registry), required loudly.

use std::path::Path;
use std::process::{Command, Output};

/// Panics with an install hint if `program` is not on PATH.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed; run ./scripts/test.sh, which installs it (see README)"
    );
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Pushes the image `v1` of the OCI layout `src` to `host/repo:v1` as `creds` (`user:password`),
/// without retries; whether skopeo succeeded (for pushes that must be refused).
pub fn skopeo_push_as(src: &Path, host: &str, repo: &str, creds: &str) -> bool {
    require("skopeo");
    Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .args(["--dest-creds", creds, "--retry-times", "0"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{host}/{repo}:v1"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `skopeo copy` between two references, without TLS (loopback only).
pub fn skopeo_copy(src: &str, dst: &str, extra: &[&str]) -> Output {
    require("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    cmd.args(extra).args([src, dst]);
    run(&mut cmd)
}

/// `skopeo copy` between two references without retries, for copies that may fail (a store on
/// a bad day): whether it succeeded, and what skopeo said.
pub fn skopeo_attempt(src: &str, dst: &str) -> (bool, String) {
    require("skopeo");
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--retry-times",
            "0",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            src,
            dst,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` with its bytes, keyed by relative path.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}
