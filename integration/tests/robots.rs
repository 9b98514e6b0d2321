//! Robot tokens end to end: created with `berth token`, used by skopeo as a password on two
//! replicas of one store (with htpasswd auth and with the built-in token issuer), refused
//! outside their access, refused on every replica within seconds of a revocation, and refused
//! once expired.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::Berth;
use integration::credentials::{TokenIssuer, htpasswd};
use integration::http::Api;
use integration::layout::write_image;
use integration::server::berth_command;
use integration::tools::{skopeo_copy, skopeo_push_as, tree};
use reqwest::Method;

/// How long a replica may go on trusting a revoked or expired token: the records' trust
/// (5 s) and a margin for a loaded machine.
const REVOCATION_WITHIN: Duration = Duration::from_secs(9);

/// Runs `berth token ARGS` against `config`; its stdout on success.
fn berth_token(config: &Path, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = berth_command(config, &all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Two replicas on one filesystem store, with `auth` (YAML), and the config's path.
fn replicas(dir: &Path, auth: &str) -> (Berth, Berth, std::path::PathBuf) {
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\n{auth}",
        dir.display()
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, &yaml).unwrap();
    (
        Berth::with_config(&yaml, &[]),
        Berth::with_config(&yaml, &[]),
        path,
    )
}

/// Polls `status` until it gives `want`; how long that took.
async fn until_status(want: u16, status: impl AsyncFn() -> u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = status().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < REVOCATION_WITHIN,
            "still {got} after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_tokens_with_htpasswd_on_two_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("alice", "wonderland")]);
    let (a, b, config) = replicas(
        dir.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            users.display()
        ),
    );
    let token = berth_token(
        &config,
        &[
            "create",
            "--name",
            "ci-bot",
            "--access",
            "team/*:pull,push",
            "--expires",
            "90d",
        ],
    )
    .unwrap();
    assert!(token.starts_with("brt_"), "{token}");
    assert!(
        berth_token(
            &config,
            &["create", "--name", "ci-bot", "--access", "x:pull"]
        )
        .is_err(),
        "a second token of one name"
    );
    let creds = format!("ci-bot:{token}");

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 90, &[1 << 20]);
    assert!(
        skopeo_push_as(&src, &a.host, "team/app", &creds),
        "the robot could not push"
    );
    let dst = work.path().join("dst");
    skopeo_copy(
        &format!("docker://{}/team/app:v1", b.host),
        &format!("oci:{}:v1", dst.display()),
        &["--src-creds", &creds],
    );
    assert_eq!(
        tree(&src.join("blobs")).len(),
        tree(&dst.join("blobs")).len()
    );
    // Outside its access: refused with 401 and the OCI error body saying access is denied
    // (401, not 403, as distribution answers a token without the scope: docker retried a
    // refused push for 50 s on a 403); a wrong token: 401 saying the login is wrong.
    assert!(
        !skopeo_push_as(&src, &a.host, "other/app", &creds),
        "pushed outside its access"
    );
    let api = Api::new(&b.url);
    let get = |repo: &'static str, user: &'static str, password: String| {
        let api = api.clone();
        async move {
            api.client
                .get(api.url(&format!("/v2/{repo}/manifests/v1")))
                .basic_auth(user, Some(password))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap()
        }
    };
    let r = get("other/app", "ci-bot", token.clone()).await;
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("UNAUTHORIZED") && body.contains("denied"),
        "{body}"
    );
    let r = get("team/app", "ci-bot", format!("{token}x")).await;
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("invalid username or password"), "{body}");
    let r = get("team/app", "alice", token.clone()).await;
    assert_eq!(
        r.status(),
        401,
        "another account's name with the robot's token"
    );
    // People log in as before.
    assert_eq!(
        get("other/app", "alice", "wonderland".into())
            .await
            .status(),
        404
    );

    let listed: serde_json::Value =
        serde_json::from_str(&berth_token(&config, &["list"]).unwrap()).unwrap();
    let entry = &listed[0];
    assert_eq!(entry["name"], "ci-bot");
    assert_eq!(entry["access"][0], "team/*:pull,push");
    assert!(entry["last_used_at"].is_u64(), "{listed}");
    assert!(entry["expires_at"].is_u64(), "{listed}");
    assert!(!listed.to_string().contains("hash"), "{listed}");

    // Revoked through the CLI: replica B, which trusted the token a moment ago, refuses it.
    assert_eq!(get("team/app", "ci-bot", token.clone()).await.status(), 200);
    berth_token(&config, &["revoke", "ci-bot"]).unwrap();
    let took = until_status(401, async || {
        get("team/app", "ci-bot", token.clone())
            .await
            .status()
            .as_u16()
    })
    .await;
    eprintln!("revocation seen by the other replica after {took:?}");
    assert!(berth_token(&config, &["revoke", "ci-bot"]).is_err());

    // An expired token stops working by itself.
    let brief = berth_token(
        &config,
        &[
            "create",
            "--name",
            "brief",
            "--access",
            "team/*:pull",
            "--expires",
            "2s",
        ],
    )
    .unwrap();
    let brief_get = async || {
        get("team/app", "brief", brief.clone())
            .await
            .status()
            .as_u16()
    };
    assert_eq!(brief_get().await, 200);
    until_status(401, brief_get).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_tokens_with_the_builtin_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::new(dir.path(), &[("alice", "wonderland")]);
    let (a, b, config) = replicas(
        dir.path(),
        &issuer.config_yaml(
            "      - account: alice
        repository: '*'
        actions: ['*']
",
        ),
    );
    let token = berth_token(
        &config,
        &["create", "--name", "ci-bot", "--access", "team/*:pull,push"],
    )
    .unwrap();
    let creds = format!("ci-bot:{token}");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 91, &[1 << 20]);
    assert!(
        skopeo_push_as(&src, &a.host, "team/app", &creds),
        "the robot could not push"
    );
    assert!(
        !skopeo_push_as(&src, &a.host, "other/app", &creds),
        "pushed outside its access"
    );

    // A token the issuer signed for the robot stops working when the robot is revoked, long
    // before the JWT itself expires, on every replica.
    let api_b = Api::new(&b.url);
    let jwt = {
        let r = api_b
            .client
            .get(api_b.url("/auth/token"))
            .query(&[
                ("service", "berth-test"),
                ("scope", "repository:team/app:pull"),
                ("scope", "repository:other/app:pull"),
            ])
            .basic_auth("ci-bot", Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    let get = |repo: &'static str| {
        let (api, jwt) = (api_b.clone(), jwt.clone());
        async move {
            api.send(
                Method::GET,
                &format!("/v2/{repo}/manifests/v1"),
                &[
                    ("authorization", &format!("Bearer {jwt}")),
                    ("accept", "application/vnd.oci.image.manifest.v1+json"),
                ],
                None,
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(get("team/app").await, 200);
    assert_eq!(
        get("other/app").await,
        401,
        "the issuer granted beyond the robot's access"
    );
    berth_token(&config, &["revoke", "ci-bot"]).unwrap();
    let took = until_status(401, || get("team/app")).await;
    eprintln!("revocation seen through an issued token after {took:?}");
}

/// Robot tokens pass the login gate passwords do: a client trying made-up robot names (each
/// unknown name costs a store read) is locked out after the free failures, with 429.
#[tokio::test]
async fn guessed_robot_logins_are_throttled_like_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("alice", "wonderland")]);
    let (a, _b, _config) = replicas(
        dir.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            users.display()
        ),
    );
    let api = Api::new(&a.url);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = api
            .client
            .get(api.url("/v2/team/app/tags/list"))
            .basic_auth(format!("bot{i}"), Some(format!("brt_{i:064}")))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    // Five free failures, the sixth starts the lockout, and from then on: 429.
    assert_eq!(&statuses[..6], &[401; 6], "{statuses:?}");
    assert!(statuses[6..].iter().all(|s| *s == 429), "{statuses:?}");
}
