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

#[test]
fn commands_have_their_own_help_and_unknown_ones_fail() {
    let run = |args: &[&str]| {
        let out = output_within(
            {
                let mut c = Command::new(berth_binary());
                c.args(args);
                c
            },
            Duration::from_secs(20),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&["gc", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("--dry-run") && text.contains("--grace"),
        "{text}"
    );
    let (code, text) = run(&["htpasswd", "--help"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("-C <COST>"), "{text}");
    let (code, text) = run(&["anything", "--help"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("unrecognized subcommand"), "{text}");
}

#[test]
fn htpasswd_writes_entries_that_bcrypt_and_distribution_read() {
    let out = Command::new(berth_binary())
        .args(["htpasswd", "-Bbn", "-C", "5", "alice", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (user, hash) = text.trim().split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(hash.starts_with("$2y$05$"), "{hash}");
    assert!(bcrypt::verify("s3cret", hash).unwrap());
    // Into a file: -c creates it, without -c entries are added or replaced; without -b the
    // password comes from standard input.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let file_s = file.to_str().unwrap();
    let status = Command::new(berth_binary())
        .args(["htpasswd", "-Bbc", "-C", "4", file_s, "bob", "one"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Command::new(berth_binary())
        .args(["htpasswd", "-B", "-C", "4", file_s, "bob"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"two\n").unwrap();
    assert!(child.wait().unwrap().success());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 1, "{written}");
    assert!(bcrypt::verify("two", written.trim().split_once(':').unwrap().1).unwrap());
}

#[tokio::test]
async fn the_tutorials_htpasswd_variables_configure_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let users = integration::credentials::htpasswd(dir.path(), &[("testuser", "testpassword")]);
    let users_s = users.to_str().unwrap().to_owned();
    let root_s = dir.path().join("data").to_str().unwrap().to_owned();
    let berth = Berth::spawn(
        Command::new(berth_binary()),
        &[
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &root_s),
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", &users_s),
        ],
        None,
    );
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/v2/", berth.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Registry Realm\""
    );
    let r = c
        .get(format!("{}/v2/", berth.url))
        .basic_auth("testuser", Some("testpassword"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
