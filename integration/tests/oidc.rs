//! OIDC federation end to end, against an issuer of the tests' own on loopback HTTPS: an ID
//! token is a password; the policy maps its claims to access (a CI job on `main` pushes its own
//! repository's images, a branch does not); audience, expiry and issuer are checked; a key
//! rotation is followed, and made-up key ids do not make Berth flood the issuer.

use std::time::{Duration, Instant};

use integration::Berth;
use integration::credentials::htpasswd;
use integration::http::Api;
use integration::layout::write_image;
use integration::oidc_issuer::OidcIssuer;
use integration::tools::skopeo_push_as;
use serde_json::json;

const POLICY: &str = "
rules:
  - name: main pushes its own repository
    repository: 'gh/{repository}/*'
    actions: [pull, push]
    kinds: [oidc]
    claims:
      ref: refs/heads/main
  - name: alice pulls
    actions: [pull]
    accounts: [alice]
";

fn claims(repository: &str, git_ref: &str) -> serde_json::Value {
    json!({
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "aud": "berth",
        "repository": repository,
        "ref": git_ref,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_jobs_push_with_their_id_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = OidcIssuer::start(dir.path());
    let users = htpasswd(dir.path(), &[("alice", "a-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, POLICY).unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\nauth:\n  htpasswd:\n    realm: test\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n  oidc:\n    - issuer: {iss}\n      audience: berth\n  logins:\n    freefailures: 100000\n    accountfreefailures: 100000\n",
        root = dir.path().display(),
        users = users.display(),
        policy = policy.display(),
        iss = issuer.url
    );
    // The refusals below are many: the login throttle (tested in logins.rs) stays out of it.
    let registry = Berth::with_config(
        &yaml,
        &[
            ("SSL_CERT_FILE", issuer.ca.to_str().unwrap()),
            ("RUST_LOG", "warn,berth::audit=info"),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 96, &[128 << 10]);
    let creds = |token: &str| format!("ci:{token}");

    let main = issuer.token(0, claims("org/app", "refs/heads/main"));
    let started = Instant::now();
    assert!(
        skopeo_push_as(&src, &registry.host, "gh/org/app/web", &creds(&main)),
        "{}",
        registry.log()
    );
    eprintln!(
        "first push with an ID token (discovery and keys fetched): {:?}",
        started.elapsed()
    );
    assert!(!skopeo_push_as(
        &src,
        &registry.host,
        "gh/org/other/web",
        &creds(&main)
    ));
    let branch = issuer.token(0, claims("org/app", "refs/heads/feature"));
    assert!(!skopeo_push_as(
        &src,
        &registry.host,
        "gh/org/app/web",
        &creds(&branch)
    ));

    // Tokens that must not log in at all.
    let api = Api::new(&registry.url);
    let status = async |token: &str| {
        api.client
            .get(api.url("/v2/gh/org/app/web/manifests/v1"))
            .basic_auth("ci", Some(token))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(&main).await, 200);
    let mut other_audience = claims("org/app", "refs/heads/main");
    other_audience["aud"] = json!("someone-else");
    assert_eq!(status(&issuer.token(0, other_audience)).await, 401);
    let mut expired = claims("org/app", "refs/heads/main");
    expired["exp"] = json!(1_000_000_000);
    assert_eq!(status(&issuer.token(0, expired)).await, 401);
    let mut foreign = claims("org/app", "refs/heads/main");
    foreign["iss"] = json!("https://elsewhere.example");
    assert_eq!(status(&issuer.token(0, foreign)).await, 401);
    let tampered = {
        let mut parts: Vec<String> = main.split('.').map(str::to_owned).collect();
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims("org/other", "refs/heads/main").to_string(),
        );
        parts.join(".")
    };
    assert_eq!(status(&tampered).await, 401);

    // Checking a token whose key is known costs no request to the issuer.
    let fetches = issuer.key_fetches();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(status(&main).await, 200);
    }
    eprintln!(
        "an authorized request with an ID token: {:?} each",
        started.elapsed() / 20
    );
    assert_eq!(issuer.key_fetches(), fetches);

    // A rotation: tokens signed with the new key are accepted once Berth fetches it.
    issuer.rotate();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let rotated = issuer.token(1, claims("org/app", "refs/heads/main"));
    assert_eq!(status(&rotated).await, 200, "{}", registry.log());
    assert_eq!(issuer.key_fetches(), fetches + 1);
    // Made-up key ids do not make Berth ask the issuer again and again.
    for _ in 0..10 {
        let mut parts: Vec<String> = rotated.split('.').map(str::to_owned).collect();
        parts[0] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            json!({"alg": "RS256", "kid": format!("made-up-{}", rand_id())}).to_string(),
        );
        assert_eq!(status(&parts.join(".")).await, 401);
    }
    assert!(
        issuer.key_fetches() <= fetches + 2,
        "{}",
        issuer.key_fetches()
    );

    let log = registry.log();
    assert!(
        log.lines().any(|l| l.contains("berth::audit")
            && l.contains("kind=\"oidc\"")
            && l.contains("main pushes its own repository")),
        "no audit line for the OIDC identity:\n{log}"
    );
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_gets_a_registry_token_at_the_builtin_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let oidc = OidcIssuer::start(dir.path());
    let issuer = integration::credentials::TokenIssuer::new(dir.path(), &[("alice", "a-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, POLICY).unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\n{auth}  policy:\n    file: {policy}\n  oidc:\n    - issuer: {iss}\n      audience: berth\n",
        root = dir.path().display(),
        auth = issuer.config_yaml(
            "      - account: alice\n        repository: '*'\n        actions: [pull]\n"
        ),
        policy = policy.display(),
        iss = oidc.url
    );
    let registry = Berth::with_config(&yaml, &[("SSL_CERT_FILE", oidc.ca.to_str().unwrap())]);
    let api = Api::new(&registry.url);
    let id_token = oidc.token(0, claims("org/app", "refs/heads/main"));
    let upload = |repo| api.start_upload_with_issued_token("ci", &id_token, repo);
    assert_eq!(upload("gh/org/app/web").await, 202);
    assert_eq!(upload("gh/org/other/web").await, 401);
}
