//! The real Docker engine and client against the real `berth`: push, pull, retag, a push that
//! mounts across repositories, a manifest list, `docker login`/`logout` with htpasswd and with
//! the built-in issuer, with a robot token and a CI job's ID token, HTTPS, and S3 where
//! `docker pull` follows the redirect to the store.

use integration::Berth;
use integration::credentials::{TokenIssuer, htpasswd};
use integration::docker::DockerEngine;
use integration::http::Api;

/// Pushes `image` as `reference`, removes every local copy, pulls it back and checks the ID.
fn round_trip(docker: &DockerEngine, image: &str, reference: &str) {
    let id = docker.image_id(image);
    docker.run(&["tag", image, reference]);
    docker.run(&["push", reference]);
    docker.run(&["image", "rm", reference, image]);
    let out = docker.run(&["pull", reference]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        docker.image_id(reference),
        id,
        "the pulled image is another one"
    );
    let said = docker.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        reference,
        "cat",
        "/marker",
    ]);
    assert!(!said.is_empty());
}

#[tokio::test]
async fn push_pull_retag_mount_and_a_manifest_list() {
    let docker = DockerEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(dir.path());
    let host = &berth.host;
    docker.busybox_image("local/one:1", "one");
    round_trip(&docker, "local/one:1", &format!("{host}/team/app:v1"));

    // A second tag of the same image: every layer is there already.
    let second = format!("{host}/team/app:v2");
    docker.run(&["tag", &format!("{host}/team/app:v1"), &second]);
    let out = docker.run(&["push", &second]);
    assert!(out.contains("Layer already exists"), "{out}");
    // Another repository: the layer is mounted from the first, not sent again.
    let other = format!("{host}/other/app:v1");
    docker.run(&["tag", &second, &other]);
    let out = docker.run(&["push", &other]);
    assert!(out.contains("Mounted from team/app"), "{out}");

    // A manifest list of two images.
    docker.busybox_image("local/two:1", "two");
    docker.run(&["tag", "local/two:1", &format!("{host}/team/app:two")]);
    docker.run(&["push", &format!("{host}/team/app:two")]);
    let list = format!("{host}/team/app:list");
    docker.run(&[
        "manifest",
        "create",
        "--insecure",
        &list,
        &format!("{host}/team/app:v1"),
        &format!("{host}/team/app:two"),
    ]);
    docker.run(&[
        "manifest",
        "annotate",
        "--arch",
        "arm64",
        &list,
        &format!("{host}/team/app:two"),
    ]);
    let pushed = docker.run(&["manifest", "push", "--insecure", &list]);
    let digest = pushed.trim();
    let api = Api::new(&berth.url);
    let r = api
        .send(
            reqwest::Method::GET,
            "/v2/team/app/manifests/list",
            &[(
                "accept",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            )],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        integration::http::header(&r, "docker-content-digest").as_deref(),
        Some(digest)
    );
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    // The engine pulls the list and picks its own platform.
    docker.run(&["image", "rm", "-f", &format!("{host}/team/app:v1")]);
    docker.run(&["pull", &list]);
    let said = docker.run(&["run", "--rm", "--network", "none", &list, "cat", "/marker"]);
    assert_eq!(said.trim(), "one");
}

#[test]
fn login_and_logout_with_htpasswd_and_with_the_builtin_issuer() {
    let docker = DockerEngine::start();
    docker.busybox_image("local/app:1", "login");
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("testuser", "testpassword")]);
    let basic = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/basic\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {}\n",
            dir.path().display(),
            users.display()
        ),
        &[],
    );
    let issuer = TokenIssuer::new(dir.path(), &[("testuser", "testpassword")]);
    let token = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/token\n{}",
            dir.path().display(),
            issuer.config_yaml(
                "      - account: testuser\n        repository: '*'\n        actions: ['*']\n"
            )
        ),
        &[],
    );
    for berth in [&basic, &token] {
        let image = format!("{}/team/app:v1", berth.host);
        docker.run(&["tag", "local/app:1", &image]);
        let refused = docker.try_run(&["push", &image]);
        assert!(!refused.status.success(), "pushed without logging in");
        let wrong = docker.run_with_input(
            &["login", "-u", "testuser", "--password-stdin", &berth.host],
            "nope",
        );
        assert!(!wrong.status.success(), "a wrong password logged in");
        let ok = docker.run_with_input(
            &["login", "-u", "testuser", "--password-stdin", &berth.host],
            "testpassword",
        );
        assert!(
            ok.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("Login Succeeded"));
        docker.run(&["push", &image]);
        docker.run(&["image", "rm", &image]);
        docker.run(&["pull", &image]);
        docker.run(&["logout", &berth.host]);
        docker.run(&["image", "rm", &image]);
        let refused = docker.try_run(&["pull", &image]);
        assert!(!refused.status.success(), "pulled after logging out");
    }
}

#[test]
fn https_with_a_certificate_docker_does_not_check_on_loopback() {
    let docker = DockerEngine::start();
    docker.busybox_image("local/app:1", "tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = integration::certs::self_signed(dir.path(), "server");
    let berth = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().display(),
            cert.display(),
            key.display()
        ),
        &[("RUST_LOG", "info")],
    );
    assert!(berth.url.starts_with("https://"));
    round_trip(
        &docker,
        "local/app:1",
        &format!("{}/team/app:v1", berth.host),
    );
    // It was TLS all along: Berth serves nothing else on that port.
    assert!(
        berth.log().contains("route=\"manifest\""),
        "{}",
        berth.log()
    );
}

#[tokio::test]
async fn on_s3_docker_pull_follows_the_redirect_to_the_store() {
    let docker = DockerEngine::start();
    docker.busybox_image("local/app:1", "s3");
    let moto = integration::emulators::Moto::start();
    moto.create_bucket("docker");
    let berth = Berth::with_config(&format!("storage:\n  {}", moto.storage_yaml("docker")), &[]);
    round_trip(
        &docker,
        "local/app:1",
        &format!("{}/team/app:v1", berth.host),
    );
    let metrics = Api::new(&berth.url).metrics().await;
    let redirects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_blob_redirects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(redirects >= 2, "the config and the layer: {metrics}");
}

/// `docker login` with a robot token and with a CI job's ID token: each pushes where the
/// access policy lets it, and is refused elsewhere.
#[test]
fn docker_logs_in_with_a_robot_token_and_with_an_id_token() {
    let docker = DockerEngine::start();
    docker.busybox_image("local/app:2", "identities");
    let dir = tempfile::tempdir().unwrap();
    let oidc = integration::oidc_issuer::OidcIssuer::start(dir.path());
    let users = htpasswd(dir.path(), &[("root", "root-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        "rules:
  - repository: team/*
    actions: [pull, push]
    accounts: [ci-bot]
    kinds: [robot]
  - repository: 'gh/{repository}/*'
    actions: [pull, push]
    kinds: [oidc]
    claims: {ref: refs/heads/main}
",
    )
    .unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n  oidc:\n    - issuer: {iss}\n      audience: berth\n",
        root = dir.path().display(),
        users = users.display(),
        policy = policy.display(),
        iss = oidc.url
    );
    let config = dir.path().join("config.yml");
    std::fs::write(&config, &yaml).unwrap();
    let berth = Berth::with_config(&yaml, &[("SSL_CERT_FILE", oidc.ca.to_str().unwrap())]);
    let robot = integration::server::create_robot_token(&config, "ci-bot", "*:pull,push");
    let id_token = oidc.token(
        0,
        serde_json::json!({"sub": "repo:org/app", "aud": "berth", "repository": "org/app", "ref": "refs/heads/main"}),
    );
    for (user, password, allowed, refused) in [
        ("ci-bot", robot.as_str(), "team/app:v2", "other/app:v2"),
        (
            "ci",
            id_token.as_str(),
            "gh/org/app/web:v2",
            "gh/org/other/web:v2",
        ),
    ] {
        let login = docker.run_with_input(
            &["login", "-u", user, "--password-stdin", &berth.host],
            password,
        );
        assert!(
            login.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&login.stderr)
        );
        let (ok, no) = (
            format!("{}/{allowed}", berth.host),
            format!("{}/{refused}", berth.host),
        );
        docker.run(&["tag", "local/app:2", &ok]);
        docker.run(&["tag", "local/app:2", &no]);
        docker.run(&["push", &ok]);
        assert!(
            !docker.try_run(&["push", &no]).status.success(),
            "{user} pushed {refused}"
        );
        docker.run(&["logout", &berth.host]);
        docker.run(&["image", "rm", &ok, &no]);
    }
}
