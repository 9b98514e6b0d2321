//! Starting berth: the embedded default, config files, environment overrides, and bad configs.

use std::process::{Command, Stdio};
use std::time::Duration;

use integration::Berth;
use integration::server::berth_binary;

/// Runs a command that must exit by itself; kills it (failing the test) if it does not.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("berth did not exit within {limit:?}: it accepted a bad config");
        }
    }
}

#[test]
fn bad_config_names_the_key_and_exits_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "storage:\n  filesystem: {}\nhttp:\n  addr: not-an-address\n",
            "http.addr",
        ),
        (
            "storage:\n  filesystem: {}\n  delete:\n    enabled: sometimes\n",
            "storage.delete.enabled",
        ),
        ("version: 0.1\n", "storage"),
        (
            "storage: {filesystem: {}}\nlog: {level: chatty}\n",
            "log.level",
        ),
        ("storage: {filesystem: {}}\n  bad: [indent\n", "YAML"),
        (
            "storage: {filesystem: {}}\nhttp: {tls: {certificate: /nonexistent.crt, key: /nonexistent.key}}\n",
            "http.tls.certificate",
        ),
        (
            "storage: {filesystem: {}}\nauth: {htpasswd: {path: /nonexistent/htpasswd}}\n",
            "auth.htpasswd.path",
        ),
        (
            "storage: {filesystem: {}}\nauth: {token: {service: s, issuer: i}}\n",
            "auth.token",
        ),
    ];
    for (yaml, key) in cases {
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let mut cmd = Command::new(berth_binary());
        cmd.arg("--config").arg(&cfg);
        if key != "http.addr" {
            cmd.env("REGISTRY_HTTP_ADDR", "127.0.0.1:0");
        }
        let out = output_within(cmd, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml:?} was accepted");
        assert!(
            stderr.contains(key),
            "error for {yaml:?} does not name {key}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "listened despite {yaml:?}"
        );
    }
    let mut cmd = Command::new(berth_binary());
    cmd.env("REGISTRY_HTTP_ADDR", "nowhere");
    let out = output_within(cmd, Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.addr"));
}

#[tokio::test]
async fn embedded_default_stores_under_data_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(berth_binary());
    cmd.current_dir(cwd.path());
    let berth = Berth::spawn(cmd, &[], None);
    let c = reqwest::Client::new();
    let resp = c
        .post(format!(
            "{}/v2/demo/blobs/uploads/?digest={}",
            berth.url,
            integration::layout::sha256(b"hi")
        ))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let blob = cwd.path().join(
        "data/docker/registry/v2/blobs/sha256/8f/8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4/data",
    );
    assert!(blob.is_file(), "blob not under ./data");
}

#[tokio::test]
async fn distribution_style_invocation_and_env_overrides() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /nonexistent/overridden\n",
    )
    .unwrap();
    let mut cmd = Command::new(berth_binary());
    cmd.arg("serve").arg(&cfg);
    let root_s = root.path().to_str().unwrap().to_owned();
    let berth = Berth::spawn(
        cmd,
        &[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &root_s)],
        None,
    );
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/v2/x/blobs/uploads/?digest={}",
            berth.url,
            integration::layout::sha256(b"x")
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(root.path().join("docker/registry/v2/blobs").is_dir());
    // Deletes are off unless configured, as in distribution.
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/v2/x/blobs/{}",
            berth.url,
            integration::layout::sha256(b"x")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}
