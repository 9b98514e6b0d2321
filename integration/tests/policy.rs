//! The access policy end to end: groups and first-match rules decide for htpasswd accounts,
//! robot tokens and anonymous clients alike; refusals are 401s with the OCI error body and
//! audit lines naming the rule; the file is read again when it changes; `berth policy explain`
//! says which rule decides.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::Berth;
use integration::credentials::htpasswd;
use integration::http::Api;
use integration::layout::write_image;
use integration::server::berth_command;
use integration::tools::skopeo_push_as;
use reqwest::Method;

const POLICY: &str = "
groups:
  devs: [alice]
rules:
  - name: devs push team
    repository: team/*
    actions: [pull, push]
    groups: [devs]
  - name: ci pushes team
    repository: team/*
    actions: [pull, push]
    accounts: [ci-bot]
    kinds: [robot]
  - name: everyone pulls public
    repository: public/*
    actions: [pull]
    accounts: [anonymous, '*']
  - name: root does everything
    actions: ['*']
    accounts: [root]
";

fn berth(config: &Path, args: &[&str]) -> (bool, String) {
    let out = berth_command(config, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_policy_decides_for_every_identity() {
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(
        dir.path(),
        &[("alice", "a-pass"), ("bob", "b-pass"), ("root", "r-pass")],
    );
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, POLICY).unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\nauth:\n  htpasswd:\n    realm: test\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n",
        root = dir.path().display(),
        users = users.display(),
        policy = policy.display()
    );
    let config = dir.path().join("config.yml");
    std::fs::write(&config, &yaml).unwrap();
    let registry = Berth::with_config(&yaml, &[("RUST_LOG", "warn,berth::audit=info")]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 95, &[256 << 10]);

    // People by group and by name.
    assert!(skopeo_push_as(
        &src,
        &registry.host,
        "team/app",
        "alice:a-pass"
    ));
    assert!(!skopeo_push_as(
        &src,
        &registry.host,
        "team/bob",
        "bob:b-pass"
    ));
    assert!(!skopeo_push_as(
        &src,
        &registry.host,
        "other/app",
        "alice:a-pass"
    ));
    assert!(skopeo_push_as(
        &src,
        &registry.host,
        "public/base",
        "root:r-pass"
    ));

    // Anonymous clients pull what the policy gives them, and nothing else.
    let api = Api::new(&registry.url);
    let manifest = async |repo: &str, creds: Option<(&str, &str)>| {
        let mut req = api
            .client
            .get(api.url(&format!("/v2/{repo}/manifests/v1")))
            .header("accept", "application/vnd.oci.image.manifest.v1+json");
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        req.send().await.unwrap()
    };
    assert_eq!(manifest("public/base", None).await.status(), 200);
    assert_eq!(manifest("team/app", None).await.status(), 401);
    assert_eq!(
        api.send(Method::GET, "/v2/", &[], None).await.status(),
        401,
        "the base endpoint must keep asking for credentials (docker login relies on it)"
    );
    let r = manifest("team/app", Some(("bob", "b-pass"))).await;
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("UNAUTHORIZED") && body.contains("denied"),
        "{body}"
    );
    let catalog = async |u: &str, p: &str| {
        api.client
            .get(api.url("/v2/_catalog"))
            .basic_auth(u, Some(p))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(catalog("root", "r-pass").await, 200);
    assert_eq!(catalog("alice", "a-pass").await, 401);

    // A robot token gets what both its own access and the policy give it.
    let (ok, out) = berth(
        &config,
        &[
            "token",
            "create",
            "--name",
            "ci-bot",
            "--access",
            "*:pull,push",
        ],
    );
    assert!(ok, "{out}");
    let token = out
        .lines()
        .find(|l| l.starts_with("brt_"))
        .unwrap()
        .to_owned();
    assert!(skopeo_push_as(
        &src,
        &registry.host,
        "team/ci",
        &format!("ci-bot:{token}")
    ));
    assert!(!skopeo_push_as(
        &src,
        &registry.host,
        "other/ci",
        &format!("ci-bot:{token}")
    ));

    // A robot token's groups count as a person's do.
    let (ok, out) = berth(
        &config,
        &[
            "token", "create", "--name", "grouped", "--access", "*:pull", "--group", "devs",
        ],
    );
    assert!(ok, "{out}");
    let grouped = out
        .lines()
        .find(|l| l.starts_with("brt_"))
        .unwrap()
        .to_owned();
    assert_eq!(
        manifest("team/app", Some(("grouped", &grouped)))
            .await
            .status(),
        200
    );

    // Refusals are in the audit log with the rule that made them (none, here).
    let log = registry.log();
    assert!(
        log.lines().any(|l| l.contains("berth::audit")
            && l.contains("bob")
            && l.contains("allowed=false")),
        "no audit line for bob's refusal:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("berth::audit")
            && l.contains("alice")
            && l.contains("devs push team")),
        "no audit line naming the rule that let alice push"
    );

    // `berth policy explain` says which rule decides.
    let (ok, out) = berth(
        &config,
        &[
            "policy",
            "explain",
            "--account",
            "alice",
            "--repository",
            "team/app",
            "--action",
            "push",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("allowed by rule devs push team") && out.contains("groups: devs"),
        "{out}"
    );
    let (ok, out) = berth(
        &config,
        &[
            "policy",
            "explain",
            "--account",
            "bob",
            "--repository",
            "team/app",
            "--action",
            "push",
        ],
    );
    assert!(!ok && out.contains("denied: no rule matches"), "{out}");

    // The admin API: for whoever the policy gives admin (root), over HTTP.
    let admin = async |method: reqwest::Method,
                       path: &str,
                       creds: (&str, &str),
                       body: Option<serde_json::Value>| {
        let mut req = api
            .client
            .request(method, api.url(path))
            .basic_auth(creds.0, Some(creds.1));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    };
    let made = admin(
        Method::POST,
        "/berth/admin/tokens",
        ("root", "r-pass"),
        Some(
            serde_json::json!({"name": "deployer", "access": ["public/*:pull"], "expires_in": 3600}),
        ),
    )
    .await;
    assert_eq!(made.status(), 201);
    let made: serde_json::Value = made.json().await.unwrap();
    let deployer = made["token"].as_str().unwrap().to_owned();
    assert_eq!(made["access"][0], "public/*:pull");
    assert_eq!(
        manifest("public/base", Some(("deployer", &deployer)))
            .await
            .status(),
        200
    );
    for (who, pass) in [("alice", "a-pass"), ("ci-bot", token.as_str())] {
        let r = admin(Method::GET, "/berth/admin/tokens", (who, pass), None).await;
        assert_eq!(r.status(), 401, "{who} reached the admin API");
    }
    let listed: serde_json::Value =
        admin(Method::GET, "/berth/admin/tokens", ("root", "r-pass"), None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(!listed.to_string().contains("hash"));
    let bad = admin(
        Method::POST,
        "/berth/admin/tokens",
        ("root", "r-pass"),
        Some(serde_json::json!({"name": "Bad Name", "access": ["x:pull"]})),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let gone = admin(
        Method::DELETE,
        "/berth/admin/tokens/deployer",
        ("root", "r-pass"),
        None,
    )
    .await;
    assert_eq!(gone.status(), 204);
    assert_eq!(
        manifest("public/base", Some(("deployer", &deployer)))
            .await
            .status(),
        401
    );

    // Usage, for admins over HTTP and from the command line.
    let usage: serde_json::Value =
        admin(Method::GET, "/berth/admin/usage", ("root", "r-pass"), None)
            .await
            .json()
            .await
            .unwrap();
    let repos: Vec<&str> = usage["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        repos.contains(&"team/app") && repos.contains(&"public/base"),
        "{usage}"
    );
    assert!(
        usage["total_bytes"].as_u64().unwrap() > 256 << 10,
        "{usage}"
    );
    let r = admin(Method::GET, "/berth/admin/usage", ("alice", "a-pass"), None).await;
    assert_eq!(r.status(), 401);
    let (ok, out) = berth(&config, &["usage"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("\"team/app\"") && out.contains("unique_bytes"),
        "{out}"
    );

    // The file changes: bob joins devs, without a restart.
    std::fs::write(&policy, POLICY.replace("[alice]", "[alice, bob]")).unwrap();
    let started = Instant::now();
    loop {
        if manifest("team/app", Some(("bob", "b-pass"))).await.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the changed policy was not read again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A file that does not parse leaves the policy as it was.
    std::fs::write(&policy, "rules: [{actions: [fly]}]").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        manifest("team/app", Some(("bob", "b-pass"))).await.status(),
        200
    );
    assert_eq!(manifest("public/base", None).await.status(), 200);
}

#[test]
fn access_rules_without_authentication_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, POLICY).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/data\nberth:\n  policy:\n    file: {}\n",
            dir.path().display(),
            policy.display()
        ),
    )
    .unwrap();
    let (ok, out) = berth(&config, &["serve"]);
    assert!(
        !ok && out.contains("berth.policy") && out.contains("access rules need auth"),
        "{out}"
    );
}

#[tokio::test]
async fn the_builtin_issuer_grants_what_the_policy_gives() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = integration::credentials::TokenIssuer::new(
        dir.path(),
        &[("alice", "a-pass"), ("bob", "b-pass")],
    );
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, POLICY).unwrap();
    // The issuer's own `access` rules would give bob everything: the policy replaces them.
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}/data\n{}  policy:\n    file: {}\n",
        dir.path().display(),
        issuer
            .config_yaml("      - account: '*'\n        repository: '*'\n        actions: ['*']\n"),
        policy.display()
    );
    let registry = Berth::with_config(&yaml, &[]);
    let api = Api::new(&registry.url);
    let start = |user, password| api.start_upload_with_issued_token(user, password, "team/app");
    assert_eq!(start("alice", "a-pass").await, 202);
    assert_eq!(start("bob", "b-pass").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_are_pushed_again_but_never_moved_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("root", "r-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        "immutable:
  - name: releases
    repository: prod/*
    tags: ['v*']
    except: [latest]
rules:
  - actions: ['*']
    accounts: [root]
",
    )
    .unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: test\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n",
        root = dir.path().display(),
        users = users.display(),
        policy = policy.display()
    );
    let registry = Berth::with_config(&yaml, &[]);
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    write_image(&one, "v1", 97, &[64 << 10]);
    write_image(&two, "v1", 98, &[64 << 10]);
    let creds = "root:r-pass";
    assert!(skopeo_push_as(&one, &registry.host, "prod/app", creds));
    // The same image again (a retried push): allowed.
    assert!(skopeo_push_as(&one, &registry.host, "prod/app", creds));
    // Another image under the same tag: refused, with the rule named.
    assert!(!skopeo_push_as(&two, &registry.host, "prod/app", creds));
    assert!(skopeo_push_as(&two, &registry.host, "prod/other", creds));
    let api = Api::new(&registry.url);
    let send = async |method: Method, path: &str, body: Option<Vec<u8>>| {
        let mut req = api
            .client
            .request(method, api.url(path))
            .basic_auth("root", Some("r-pass"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .header("content-type", "application/vnd.oci.image.manifest.v1+json");
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.unwrap()
    };
    let other = send(Method::GET, "/v2/prod/other/manifests/v1", None).await;
    let digest = other.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let other = other.bytes().await.unwrap().to_vec();
    // prod/app lacks prod/other's blobs: mount them first, so only immutability can refuse.
    let r = send(
        Method::PUT,
        "/v2/prod/app/manifests/v1",
        Some(other.clone()),
    )
    .await;
    assert!(r.status().is_client_error());
    let manifest: serde_json::Value = serde_json::from_slice(&other).unwrap();
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    blobs.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    for b in blobs {
        let r = send(
            Method::POST,
            &format!("/v2/prod/app/blobs/uploads/?mount={b}&from=prod/other"),
            None,
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    let r = send(
        Method::PUT,
        "/v2/prod/app/manifests/v1",
        Some(other.clone()),
    )
    .await;
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("DENIED") && body.contains("releases"),
        "{body}"
    );
    // latest is left mutable; v1 is never deleted, by tag or by digest.
    assert_eq!(
        send(
            Method::PUT,
            "/v2/prod/app/manifests/latest",
            Some(other.clone())
        )
        .await
        .status(),
        201
    );
    let v1 = send(Method::GET, "/v2/prod/app/manifests/v1", None).await;
    let v1_digest = v1.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(v1_digest, digest, "v1 moved");
    assert_eq!(
        send(Method::DELETE, "/v2/prod/app/manifests/v1", None)
            .await
            .status(),
        409
    );
    assert_eq!(
        send(
            Method::DELETE,
            &format!("/v2/prod/app/manifests/{v1_digest}"),
            None
        )
        .await
        .status(),
        409
    );
    assert_eq!(
        send(Method::DELETE, "/v2/prod/app/manifests/latest", None)
            .await
            .status(),
        202
    );
    // An immutable tag pushed again with what it names: allowed (an idempotent retry).
    assert_eq!(
        send(Method::PUT, "/v2/prod/other/manifests/v1", Some(other))
            .await
            .status(),
        201
    );
}
