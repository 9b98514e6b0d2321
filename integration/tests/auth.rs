//! Authentication and authorization end to end: htpasswd, token auth with Berth's own issuer,
//! every route refused without credentials, scopes enforced, forged tokens refused, real clients.

use std::process::Command;

use integration::Berth;
use integration::credentials::{TokenIssuer, htpasswd};
use integration::http::{Api, error_code, header};
use integration::layout::{sha256, write_image};
use integration::tools::{run, skopeo_copy, tree};
use reqwest::Method;
use serde_json::json;

const UPLOAD_ID: &str = "3f1c2b9e-0c7a-4a53-9c1d-2b7e5a0d9e11";

/// Every endpoint with a method that needs authorization.
fn route_table() -> Vec<(Method, String)> {
    let d = sha256(b"x");
    let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
    [
        ("GET", "/v2/".to_owned()),
        ("GET", "/v2/_catalog".to_owned()),
        ("GET", "/v2/team/app/tags/list".to_owned()),
        ("GET", "/v2/team/app/manifests/latest".to_owned()),
        ("HEAD", "/v2/team/app/manifests/latest".to_owned()),
        ("PUT", "/v2/team/app/manifests/latest".to_owned()),
        ("DELETE", format!("/v2/team/app/manifests/{d}")),
        ("GET", format!("/v2/team/app/blobs/{d}")),
        ("HEAD", format!("/v2/team/app/blobs/{d}")),
        ("DELETE", format!("/v2/team/app/blobs/{d}")),
        ("POST", "/v2/team/app/blobs/uploads/".to_owned()),
        (
            "POST",
            format!("/v2/team/app/blobs/uploads/?mount={d}&from=other/repo"),
        ),
        ("GET", format!("/v2/team/app/blobs/uploads/{UPLOAD_ID}")),
        ("PATCH", format!("/v2/team/app/blobs/uploads/{UPLOAD_ID}")),
        (
            "PUT",
            format!("/v2/team/app/blobs/uploads/{UPLOAD_ID}?digest={d}"),
        ),
        ("DELETE", format!("/v2/team/app/blobs/uploads/{UPLOAD_ID}")),
        ("GET", format!("/v2/team/app/referrers/{d}")),
    ]
    .into_iter()
    .map(|(method, path)| (m(method), path))
    .collect()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn htpasswd_guards_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("alice", "wonderland")]);
    // Every route is tried with wrong passwords: more failures than the login throttle lets
    // through by default (tests/logins.rs checks the throttle itself).
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: test-realm\n    path: {}\nberth:\n  logins:\n    freefailures: 100000\n    accountfreefailures: 100000\n",
        dir.path().display(),
        users.display()
    );
    let berth = Berth::with_config(&yaml, &[]);
    let api = Api::new(&berth.url);
    for (method, path) in route_table() {
        for auth in [
            None,
            Some(basic("alice", "wrong")),
            Some(basic("mallory", "wonderland")),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let r = api.send(method.clone(), &path, &headers, None).await;
            assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(
                header(&r, "www-authenticate").as_deref(),
                Some("Basic realm=\"test-realm\"")
            );
            if method != Method::HEAD {
                assert_eq!(error_code(r).await, "UNAUTHORIZED");
            }
        }
        let good = basic("alice", "wonderland");
        let r = api
            .send(method.clone(), &path, &[("authorization", &good)], None)
            .await;
        assert_ne!(r.status(), 401, "{method} {path} refused valid credentials");
    }
    assert!(
        !berth.log().contains("wonderland"),
        "a password reached the log"
    );

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 80, &[1 << 20]);
    let remote = format!("docker://{}/team/app:v1", berth.host);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &remote,
        &["--dest-creds", "alice:wonderland"],
    );
    let dst = work.path().join("dst");
    skopeo_copy(
        &remote,
        &format!("oci:{}:v1", dst.display()),
        &["--src-creds", "alice:wonderland"],
    );
    assert_eq!(
        tree(&src.join("blobs")).len(),
        tree(&dst.join("blobs")).len()
    );
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:nope",
        ])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&remote)
        .output()
        .unwrap();
    assert!(!out.status.success(), "skopeo pushed with a wrong password");
}

struct TokenSetup {
    berth: Berth,
    api: Api,
    private_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn token_setup() -> TokenSetup {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::new(
        dir.path(),
        &[("alice", "wonderland"), ("admin", "root-pass")],
    );
    let yaml = format!(
        "storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
{auth}",
        root = dir.path().display(),
        auth = issuer.config_yaml(
            "      - account: alice
        repository: team/*
        actions: [pull, push, delete]
      - account: anonymous
        repository: public/*
        actions: [pull]
      - account: admin
        repository: '*'
        actions: ['*']
        catalog: true
"
        )
    );
    let berth = Berth::with_config(&yaml, &[]);
    let api = Api::new(&berth.url);
    TokenSetup {
        berth,
        api,
        private_pem: issuer.private_pem,
        _dir: dir,
    }
}

async fn token_for(api: &Api, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let mut req = api
        .client
        .get(api.url("/auth/token"))
        .query(&[("service", "berth-test")]);
    for s in scopes {
        req = req.query(&[("scope", s)]);
    }
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "token request");
    r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn token_auth_guards_every_route_and_enforces_scopes() {
    let s = token_setup();
    let api = &s.api;
    for (method, path) in route_table() {
        let r = api.send(method.clone(), &path, &[], None).await;
        assert_eq!(r.status(), 401, "{method} {path}");
        let challenge = header(&r, "www-authenticate").unwrap();
        assert!(
            challenge.starts_with(&format!(
                "Bearer realm=\"{}/auth/token\",service=\"berth-test\"",
                s.berth.url
            )),
            "{challenge}"
        );
        if path != "/v2/" {
            assert!(
                challenge.contains(",scope=\""),
                "{method} {path}: {challenge}"
            );
        }
        let r = api
            .send(
                method.clone(),
                &path,
                &[("authorization", "Bearer not.a.token")],
                None,
            )
            .await;
        assert_eq!(r.status(), 401, "{method} {path} with garbage token");
    }
    let r = api
        .send(Method::GET, "/v2/team/app/tags/list", &[], None)
        .await;
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("scope=\"repository:team/app:pull\"")
    );

    // alice: push and pull in team/*.
    let t = token_for(
        api,
        Some(("alice", "wonderland")),
        &["repository:team/app:pull,push"],
    )
    .await;
    let data = b"guarded blob".to_vec();
    let d = sha256(&data);
    let r = api
        .send(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={d}"),
            &[("authorization", &bearer(&t))],
            Some(data),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = api
        .send(
            Method::GET,
            &format!("/v2/team/app/blobs/{d}"),
            &[("authorization", &bearer(&t))],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    // ...but her token does not cover delete, another repository, or the catalog.
    let r = api
        .send(
            Method::DELETE,
            &format!("/v2/team/app/blobs/{d}"),
            &[("authorization", &bearer(&t))],
            None,
        )
        .await;
    // As distribution: 401 with insufficient_scope (docker retries a 403 for 50 s).
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let other = token_for(
        api,
        Some(("alice", "wonderland")),
        &["repository:other/app:pull,push"],
    )
    .await;
    let r = api
        .send(
            Method::POST,
            "/v2/other/app/blobs/uploads/",
            &[("authorization", &bearer(&other))],
            None,
        )
        .await;
    assert_eq!(r.status(), 401, "rules give alice nothing outside team/*");
    let r = api
        .send(
            Method::GET,
            "/v2/_catalog",
            &[("authorization", &bearer(&t))],
            None,
        )
        .await;
    assert_eq!(r.status(), 401);
    // Mounting needs pull on the source too.
    let r = api
        .send(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?mount={d}&from=secret/repo"),
            &[("authorization", &bearer(&t))],
            None,
        )
        .await;
    assert_eq!(r.status(), 401);
    // admin: catalog.
    let admin = token_for(api, Some(("admin", "root-pass")), &["registry:catalog:*"]).await;
    let r = api
        .send(
            Method::GET,
            "/v2/_catalog",
            &[("authorization", &bearer(&admin))],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    // anonymous: pull in public/*, nothing else.
    let anon = token_for(api, None, &["repository:public/x:pull,push"]).await;
    let r = api
        .send(
            Method::GET,
            "/v2/public/x/tags/list",
            &[("authorization", &bearer(&anon))],
            None,
        )
        .await;
    assert_eq!(
        r.status(),
        404,
        "authorized, and the repository does not exist"
    );
    let r = api
        .send(
            Method::POST,
            "/v2/public/x/blobs/uploads/",
            &[("authorization", &bearer(&anon))],
            None,
        )
        .await;
    assert_eq!(r.status(), 401);
    // Wrong password: no token at all.
    let r = api
        .client
        .get(api.url("/auth/token?service=berth-test&scope=repository:team/app:pull"))
        .basic_auth("alice", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A token for another service is refused by the issuer.
    let r = api
        .client
        .get(api.url("/auth/token?service=elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let s = token_setup();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = EncodingKey::from_ec_pem(&s.private_pem).unwrap();
    let access = json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}]);
    let sign =
        |claims: serde_json::Value| encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    let good = json!({"iss": "berth-test-issuer", "aud": "berth-test", "exp": now + 300, "nbf": now - 10, "sub": "x", "access": access});
    let path = "/v2/team/app/tags/list";
    let r = s
        .api
        .send(
            Method::GET,
            path,
            &[("authorization", &bearer(&sign(good.clone())))],
            None,
        )
        .await;
    assert_eq!(
        r.status(),
        404,
        "a well-formed token is accepted (the repository is empty)"
    );
    let mut cases = Vec::new();
    for (field, value) in [
        ("exp", json!(now - 120)),
        ("nbf", json!(now + 600)),
        ("aud", json!("another-registry")),
        ("iss", json!("someone-else")),
    ] {
        let mut c = good.clone();
        c[field] = value;
        cases.push((field.to_owned(), sign(c)));
    }
    let mut tampered = sign(good.clone());
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    cases.push(("signature".into(), tampered));
    let other_key = run(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ]));
    let foreign = encode(
        &Header::new(Algorithm::ES256),
        &good,
        &EncodingKey::from_ec_pem(&other_key.stdout).unwrap(),
    )
    .unwrap();
    cases.push(("foreign key".into(), foreign));
    for (what, token) in cases {
        let r = s
            .api
            .send(
                Method::GET,
                path,
                &[("authorization", &bearer(&token))],
                None,
            )
            .await;
        assert_eq!(r.status(), 401, "token with bad {what} accepted");
    }
}

#[test]
fn skopeo_and_oci_client_use_the_builtin_issuer() {
    let s = token_setup();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 81, &[1 << 20]);
    let remote = format!("docker://{}/team/app:v1", s.berth.host);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &remote,
        &["--dest-creds", "alice:wonderland"],
    );
    let dst = work.path().join("dst");
    skopeo_copy(
        &remote,
        &format!("oci:{}:v1", dst.display()),
        &["--src-creds", "alice:wonderland"],
    );
    assert_eq!(
        tree(&src.join("blobs")).len(),
        tree(&dst.join("blobs")).len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        use oci_client::secrets::RegistryAuth;
        let c = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let r: oci_client::Reference = format!("{}/team/oci:v1", s.berth.host).parse().unwrap();
        let auth = RegistryAuth::Basic("alice".into(), "wonderland".into());
        let layers = vec![ImageLayer::oci_v1(b"layer via bearer flow".to_vec(), None)];
        c.push(
            &r,
            &layers,
            Config::oci_v1(b"{}".to_vec(), None),
            &auth,
            None,
        )
        .await
        .unwrap();
        let pulled = c
            .pull(
                &r,
                &auth,
                vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
            )
            .await
            .unwrap();
        assert_eq!(&pulled.layers[0].data[..], b"layer via bearer flow");
        let denied: oci_client::Reference =
            format!("{}/other/oci:v1", s.berth.host).parse().unwrap();
        assert!(
            c.push(
                &denied,
                &layers,
                Config::oci_v1(b"{}".to_vec(), None),
                &auth,
                None
            )
            .await
            .is_err()
        );
    });
}
