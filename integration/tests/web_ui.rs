//! The web UI in a real headless Chromium (WebDriver), against the real `berth` with images
//! pushed by skopeo: find a repository as one types, see its tags, inspect an image, an index
//! and their referrers, copy pull commands, log in and out (htpasswd and robot token), delete
//! with a confirmation, and a reader who sees no delete button and gets 403 when posting one
//! anyway. Screenshots of each page are kept under target/ui-screenshots/.

use std::path::Path;

use integration::Berth;
use integration::credentials::htpasswd;
use integration::layout::{sha256, write_image_with, write_multi_platform};
use integration::server::{berth_command, create_robot_token};
use integration::tools::run;
use integration::webdriver::{Browser, screenshot_dir};
use serde_json::json;

const POLICY: &str = "
rules:
  - name: alice does everything
    actions: ['*']
    accounts: [alice]
  - name: bob reads
    actions: [pull]
    accounts: [bob]
  - name: ci robots read team
    repository: team/*
    actions: [pull]
    kinds: [robot]
    accounts: ['*']
  - name: everyone pulls public
    repository: public/*
    actions: [pull]
    accounts: [anonymous, '*']
";

fn skopeo_push(src: &Path, host: &str, target: &str, creds: &str, all: bool) {
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .args(["--dest-creds", creds, "--retry-times", "0"]);
    if all {
        cmd.arg("--all");
    }
    run(cmd
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{host}/{target}")));
}

/// An SBOM-like artifact whose subject is `subject` (`digest`, `size`), pushed over the API.
async fn push_referrer(url: &str, repo: &str, subject: (&str, u64), auth: (&str, &str)) {
    let http = reqwest::Client::new();
    let blob = br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec();
    let empty = b"{}".to_vec();
    for data in [&blob, &empty] {
        let d = sha256(data);
        let r = http
            .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"))
            .basic_auth(auth.0, Some(auth.1))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "referrer blob");
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(&empty), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sha256(&blob), "size": blob.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject.0, "size": subject.1},
        "annotations": {"org.opencontainers.image.created": "2026-11-30T12:00:00Z"},
    })
    .to_string();
    let r = http
        .put(format!(
            "{url}/v2/{repo}/manifests/{}",
            sha256(manifest.as_bytes())
        ))
        .basic_auth(auth.0, Some(auth.1))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "referrer manifest");
}

async fn log_in(b: &Browser, url: &str, user: &str, password: &str) {
    b.goto(&format!("{url}/ui/login")).await;
    b.type_into(&b.find("#username").await, user).await;
    b.type_into(&b.find("#password").await, password).await;
    b.click(&b.find("#submit").await).await;
    let account = b.find("#account").await;
    assert_eq!(b.text(&account).await, user);
}

/// What the page's clipboard holds.
async fn clipboard(b: &Browser) -> serde_json::Value {
    b.run_async(
        "const done = arguments[arguments.length - 1];
         navigator.clipboard.readText().then(done, e => done('error: ' + e));",
        json!([]),
    )
    .await
}

async fn log_out(b: &Browser) {
    b.click(&b.find("#logout").await).await;
    b.find("#login").await;
}

/// The tags a repository lists over the API, as alice.
async fn api_tags(url: &str, repo: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v2/{repo}/tags/list"))
        .basic_auth("alice", Some("a-pass"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_find_inspect_copy_and_delete_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("alice", "a-pass"), ("bob", "b-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, POLICY).unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: test\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n",
        root = dir.path().display(),
        users = users.display(),
        policy = policy.display()
    );
    let config = dir.path().join("config.yml");
    std::fs::write(&config, &yaml).unwrap();
    let registry = Berth::with_config(&yaml, &[]);
    let (url, host) = (registry.url.clone(), registry.host.clone());

    // Images as real clients push them: two tags of one image with a full config, an index
    // of two platforms, a public image, and an SBOM referring to the first.
    let work = tempfile::tempdir().unwrap();
    let web = work.path().join("web");
    let web1 = write_image_with(
        &web,
        "v1",
        1,
        &[96 << 10, 32 << 10],
        json!({
            "created": "2026-11-30T10:20:30Z",
            "config": {"Entrypoint": ["/bin/web"], "Cmd": ["--port", "8080"],
                       "Env": ["PATH=/usr/bin", "MODE=production"],
                       "Labels": {"org.opencontainers.image.source": "https://example.com/web"},
                       "ExposedPorts": {"8080/tcp": {}}},
            "history": [{"created_by": "COPY web /bin/web"}, {"created_by": "EXPOSE 8080", "empty_layer": true}],
        }),
    );
    skopeo_push(&web, &host, "team/web:1.0", "alice:a-pass", false);
    let web2 = work.path().join("web2");
    write_image_with(
        &web2,
        "v1",
        2,
        &[48 << 10],
        json!({"created": "2026-12-01T08:00:00Z"}),
    );
    skopeo_push(&web2, &host, "team/web:2.0", "alice:a-pass", false);
    let multi = work.path().join("multi");
    write_multi_platform(&multi, "v1", 3, &[("linux", "amd64"), ("linux", "arm64")]);
    skopeo_push(&multi, &host, "team/multi:latest", "alice:a-pass", true);
    let hello = work.path().join("hello");
    write_image_with(&hello, "v1", 4, &[8 << 10], json!({}));
    skopeo_push(&hello, &host, "public/hello:latest", "alice:a-pass", false);
    let web1_size = std::fs::metadata(
        web.join("blobs/sha256")
            .join(web1.manifest_digest.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    push_referrer(
        &url,
        "team/web",
        (&web1.manifest_digest, web1_size),
        ("alice", "a-pass"),
    )
    .await;
    // A pull of 1.0, which its row shows.
    run(std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", "bob:b-pass"])
        .arg(format!("docker://{host}/team/web:1.0")));

    let shots = screenshot_dir("web_ui");
    let b = Browser::start(1280, 900, &shots).await;
    b.devtools(
        "Browser.grantPermissions",
        json!({"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
    )
    .await;

    // Anonymous: only what anonymous may pull.
    b.goto(&format!("{url}/ui/")).await;
    assert_eq!(b.texts("a.repo").await, vec!["public/hello"]);
    b.screenshot("repositories-anonymous").await;
    b.goto(&format!("{url}/ui/repo/team/web")).await;
    assert!(b.text(&b.find("main").await).await.contains("log in"));

    // bob reads everything, deletes nothing.
    log_in(&b, &url, "bob", "b-pass").await;
    assert_eq!(
        b.texts("a.repo").await,
        vec!["public/hello", "team/multi", "team/web"]
    );
    // Filter as one types: the list changes without a page load.
    let filter = b.find("#filter").await;
    b.type_into(&filter, "we").await;
    b.wait_until("the filtered list", || async {
        b.texts("a.repo").await == vec!["team/web"]
    })
    .await;
    assert!(b.url().await.ends_with("/ui/?q=we"));
    b.screenshot("repositories-filtered").await;
    b.click(&b.find("a.repo").await).await;
    b.find("#tags").await;
    assert_eq!(b.texts("td.tag").await, vec!["1.0", "2.0"]);
    let created = b.texts("td.created").await;
    assert_eq!(
        created,
        vec!["2026-11-30 10:20 UTC", "2026-12-01 08:00 UTC"]
    );
    assert_eq!(
        b.texts("td.platforms").await,
        vec!["linux/amd64", "linux/amd64"]
    );
    assert!(b.texts("td.size").await.iter().all(|s| s.ends_with("KiB")));
    let pulls = b.texts("td.pulled").await;
    assert!(
        pulls[0].ends_with(" UTC") && pulls[1] == "never",
        "{pulls:?}"
    );
    assert!(
        b.all("a.delete").await.is_empty(),
        "bob sees no delete button"
    );
    // Sorted by last push, the newest first.
    b.click(&b.find("a.sort").await).await;
    b.wait_until("tags sorted by push", || async {
        b.texts("td.tag").await == vec!["2.0", "1.0"]
    })
    .await;
    b.screenshot("tags").await;

    // Copy the pull command in one click.
    let copy = b.find("tr[data-tag='1.0'] button.copy").await;
    b.click(&copy).await;
    let copied = clipboard(&b).await;
    assert_eq!(copied, json!(format!("docker pull {host}/team/web:1.0")));

    // Inspect the image: layers, config, history, referrers, the manifest itself.
    b.click(&b.find("tr[data-tag='1.0'] td.tag a").await).await;
    assert_eq!(b.text(&b.find("#digest").await).await, web1.manifest_digest);
    assert_eq!(b.all("#layers tbody tr").await.len(), 2);
    assert_eq!(b.text(&b.find("#entrypoint").await).await, "/bin/web");
    assert_eq!(b.text(&b.find("#cmd").await).await, "--port 8080");
    assert!(
        b.texts("#env li")
            .await
            .contains(&"MODE=production".to_string())
    );
    assert_eq!(
        b.texts("#labels li").await,
        vec!["org.opencontainers.image.source=https://example.com/web"]
    );
    assert_eq!(b.all("#history li").await.len(), 2);
    assert_eq!(
        b.texts("h3.artifact-type").await,
        vec!["application/spdx+json"]
    );
    assert!(
        b.text(&b.find("#manifest").await)
            .await
            .contains("\"schemaVersion\": 2")
    );
    assert!(b.all("#delete-manifest").await.is_empty());
    b.click(&b.find("#copy-digest").await).await;
    let copied = clipboard(&b).await;
    assert_eq!(
        copied,
        json!(format!(
            "docker pull {host}/team/web@{}",
            web1.manifest_digest
        ))
    );
    b.screenshot("image").await;
    // The referrer's own page names its subject.
    b.click(&b.find("a.referrer").await).await;
    assert_eq!(
        b.text(&b.find("#artifact-type").await).await,
        "application/spdx+json"
    );
    assert_eq!(
        b.text(&b.find("#subject").await).await,
        web1.manifest_digest
    );

    // An index: its platforms, each a link to its image.
    b.goto(&format!("{url}/ui/repo/team/multi")).await;
    assert_eq!(
        b.texts("td.platforms").await,
        vec!["linux/amd64, linux/arm64"]
    );
    b.click(&b.find("td.tag a").await).await;
    let platforms = b.texts("#platforms tbody td:first-child").await;
    assert_eq!(platforms, vec!["linux/amd64", "linux/arm64"]);
    b.screenshot("index").await;

    // bob posts a delete anyway, with his own valid CSRF token: 403, and the tag stays.
    b.goto(&format!("{url}/ui/repo/team/web")).await;
    let status = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('input[name=csrf]').value;
             fetch('/ui/repo/team/web/_delete', {method: 'POST',
                   body: new URLSearchParams({csrf, reference: '2.0'})})
               .then(r => done(r.status), e => done('error: ' + e));",
            json!([]),
        )
        .await;
    assert_eq!(status, json!(403));
    assert_eq!(api_tags(&url, "team/web").await, vec!["1.0", "2.0"]);
    log_out(&b).await;

    // A robot token logs in as the API takes it; its access bounds what it sees.
    let robot = create_robot_token(&config, "ci", "team/*:pull");
    log_in(&b, &url, "ci", &robot).await;
    assert_eq!(b.texts("a.repo").await, vec!["team/multi", "team/web"]);
    log_out(&b).await;

    // alice deletes a tag, after a confirmation; garbage collection's last run shows.
    let gc = berth_command(&config, &["gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    log_in(&b, &url, "alice", "a-pass").await;
    assert!(
        b.text(&b.find("#last-gc").await)
            .await
            .contains("Last garbage collection")
    );
    b.goto(&format!("{url}/ui/repo/team/web")).await;
    b.click(&b.find("tr[data-tag='2.0'] a.delete").await).await;
    b.find("#confirm-delete").await;
    b.screenshot("confirm-delete").await;
    b.click(&b.find("#confirm-delete").await).await;
    let notice = b.find("#notice").await;
    assert_eq!(b.text(&notice).await, "Deleted 2.0.");
    assert_eq!(b.texts("td.tag").await, vec!["1.0"]);
    assert_eq!(api_tags(&url, "team/web").await, vec!["1.0"]);
    // A manifest, from its page: the index goes, with the tag naming it.
    b.goto(&format!("{url}/ui/repo/team/multi")).await;
    b.click(&b.find("td.tag a").await).await;
    let index_digest = b.text(&b.find("#digest").await).await;
    b.click(&b.find("#delete-manifest").await).await;
    b.click(&b.find("#confirm-delete").await).await;
    assert_eq!(
        b.text(&b.find("#notice").await).await,
        format!("Deleted {index_digest}.")
    );
    assert!(b.all("td.tag").await.is_empty());
    assert!(api_tags(&url, "team/multi").await.is_empty());

    // Readable on a phone, and dark where the system is.
    b.resize(390, 844).await;
    b.screenshot("tags-phone").await;
    b.devtools(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    )
    .await;
    b.resize(1280, 900).await;
    b.goto(&format!(
        "{url}/ui/repo/team/web/_manifest/{}?tag=1.0",
        web1.manifest_digest
    ))
    .await;
    let background = b
        .run(
            "return getComputedStyle(document.body).backgroundColor;",
            json!([]),
        )
        .await;
    assert_eq!(background, json!("rgb(15, 20, 25)"), "the dark palette");
    b.screenshot("image-dark").await;
    log_out(&b).await;
}

/// Posts that did not come from a page of this session are refused, and every page carries
/// the strict Content-Security-Policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_session_token_and_pages_a_strict_policy() {
    let root = tempfile::tempdir().unwrap();
    let registry = Berth::filesystem(root.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("img");
    write_image_with(&src, "v1", 9, &[8 << 10], json!({}));
    skopeo_push(&src, &registry.host, "open/app:v1", "x:y", false);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/ui/repo/open/app", registry.url))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    let session = cookie.split(';').next().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("a class=\"delete\""),
        "an open registry lets anyone delete"
    );
    let post = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let mut req = http
            .post(format!("{}/ui/repo/open/app/_delete", registry.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // No token, a wrong token, and another site's page: all refused.
    assert_eq!(
        post(vec![("cookie", session.clone())], "reference=v1").await,
        403
    );
    assert_eq!(
        post(vec![("cookie", session.clone())], "csrf=AAAA&reference=v1").await,
        403
    );
    let csrf_of = |html: &str| {
        let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
        html[at..].split('"').next().unwrap().to_owned()
    };
    let text_of = |path: &str| {
        let req = http
            .get(format!("{}{path}", registry.url))
            .header("cookie", &session);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let token = csrf_of(&text_of("/ui/repo/open/app/_delete?reference=v1").await);
    let body: &'static str = Box::leak(format!("csrf={token}&reference=v1").into_boxed_str());
    assert_eq!(
        post(
            vec![
                ("cookie", session.clone()),
                ("origin", "https://evil.example".into()),
                ("sec-fetch-site", "cross-site".into())
            ],
            body
        )
        .await,
        403
    );
    // The same token from this session's page, reached through a proxy that names the public
    // host in X-Forwarded-Host: deleted.
    assert_eq!(
        post(
            vec![
                ("cookie", session.clone()),
                ("origin", "https://registry.example".into()),
                ("x-forwarded-host", "registry.example".into()),
                ("sec-fetch-site", "same-origin".into())
            ],
            body
        )
        .await,
        303
    );
    let tags = text_of("/v2/open/app/tags/list").await;
    assert!(!tags.contains("v1"), "{tags}");
}

/// `berth.ui.enabled: false` leaves only the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_can_be_turned_off() {
    let root = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\nberth:\n  ui:\n    enabled: false\n",
        root.path().display()
    );
    let registry = Berth::with_config(&yaml, &[]);
    let get = |path: &str| reqwest::get(format!("{}{path}", registry.url));
    assert_eq!(get("/ui/").await.unwrap().status(), 404);
    assert_eq!(get("/ui/assets/berth.js").await.unwrap().status(), 404);
    assert_eq!(get("/v2/").await.unwrap().status(), 200);
    let on = Berth::filesystem(root.path());
    let js = reqwest::get(format!("{}/ui/assets/berth.js", on.url))
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}

/// A person logs in with an OpenID provider (the authorization code flow with PKCE, against
/// a provider of the tests' own) and sees what the policy gives their identity; a refused
/// login and a replayed answer leave them anonymous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_provider_logs_people_in() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = integration::oidc_issuer::OidcIssuer::start(dir.path());
    let users = htpasswd(dir.path(), &[("alice", "a-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        "rules:\n  - name: alice does everything\n    actions: ['*']\n    accounts: [alice]\n  - name: staff read team\n    repository: team/*\n    actions: [pull]\n    kinds: [oidc]\n    claims:\n      email: '*@example.com'\n",
    )
    .unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\nauth:\n  htpasswd:\n    realm: test\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n  oidc:\n    - issuer: {iss}\n      audience: [berth-ui]\n  ui:\n    oidc:\n      issuer: {iss}\n      clientid: berth-ui\n      label: Log in with Example SSO\n",
        root = dir.path().display(),
        users = users.display(),
        policy = policy.display(),
        iss = issuer.url
    );
    let registry = Berth::with_config(&yaml, &[("SSL_CERT_FILE", issuer.ca.to_str().unwrap())]);
    let url = registry.url.clone();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("img");
    write_image_with(&src, "v1", 11, &[8 << 10], json!({}));
    skopeo_push(&src, &registry.host, "team/web:1.0", "alice:a-pass", false);
    skopeo_push(&src, &registry.host, "other/app:1.0", "alice:a-pass", false);

    let b = Browser::start(1280, 900, &screenshot_dir("web_ui_oidc")).await;
    issuer.sign_in_as(Some(json!({"sub": "carol", "email": "carol@example.com"})));
    b.goto(&format!("{url}/ui/login?next=/ui/")).await;
    b.screenshot("login").await;
    b.click(&b.find("#oidc-login").await).await;
    let account = b.find("#account").await;
    assert_eq!(b.text(&account).await, "carol", "{}", registry.log());
    assert_eq!(b.texts("a.repo").await, vec!["team/web"]);
    assert_eq!(issuer.codes_redeemed(), 1);
    log_out(&b).await;

    // The provider refuses: still anonymous, told why.
    issuer.sign_in_as(None);
    b.goto(&format!("{url}/ui/login")).await;
    b.click(&b.find("#oidc-login").await).await;
    assert!(
        b.text(&b.find("main").await)
            .await
            .contains("did not log you in")
    );
    assert!(b.all("#account").await.is_empty());

    // An answer replayed (its login's cookie served its one answer) logs no one in.
    let replay = format!("{url}/ui/login/oidc/callback?code=code-1&state=forged");
    b.goto(&replay).await;
    assert!(b.text(&b.find("main").await).await.contains("expired"));
    assert!(b.all("#account").await.is_empty());
    assert_eq!(issuer.codes_redeemed(), 1);
}

/// The requests an upstream Berth served for manifests, by its metrics.
async fn manifest_requests(url: &str) -> u64 {
    integration::http::Api::new(url)
        .metric_total("berth_http_requests_total{route=\"manifest\"")
        .await
}

/// A cached (pull-through) repository shows what was fetched for it, costs its upstream no
/// request per page view, and cannot be changed from the UI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_repositories_are_shown_without_asking_their_upstream() {
    let (up_root, cache_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = Berth::filesystem(up_root.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("img");
    write_image_with(
        &src,
        "v1",
        21,
        &[8 << 10],
        json!({"created": "2026-10-01T00:00:00Z"}),
    );
    skopeo_push(&src, &upstream.host, "lib/app:1.0", "x:y", false);
    let cache = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nberth:\n  proxies:\n    - prefix: hub\n      remoteurl: {}\n",
            cache_root.path().display(),
            upstream.url
        ),
        &[],
    );
    run(std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/hub/lib/app:1.0", cache.host)));
    let asked = manifest_requests(&upstream.url).await;
    assert!(asked > 0, "the pull reached the upstream");
    let http = reqwest::Client::new();
    let page = |path: String| {
        let req = http.get(format!("{}{path}", cache.url));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // The cache keeps a blob once its last byte is verified, which may be just after the
    // client has it: the config (and so the created time) shows within a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, tags) = loop {
        let (status, tags) = page("/ui/repo/hub/lib/app".into()).await;
        if tags.contains("2026-10-01 00:00 UTC") || std::time::Instant::now() > deadline {
            break (status, tags);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200);
    assert!(
        tags.contains("data-tag=\"1.0\"") && tags.contains("2026-10-01 00:00 UTC"),
        "{tags}"
    );
    assert!(
        !tags.contains("class=\"delete\""),
        "a cache cannot be changed here"
    );
    let at = tags.find("/_manifest/").unwrap();
    let inspect: String = tags[at - "/ui/repo/hub/lib/app".len()..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let (status, image) = page(inspect).await;
    assert_eq!(status, 200);
    assert!(image.contains("Layers"));
    let (status, _) = page("/ui/repo/hub/lib/app/_delete?reference=1.0".into()).await;
    assert_eq!(status, 403);
    assert_eq!(
        manifest_requests(&upstream.url).await,
        asked,
        "page views asked the upstream"
    );
}

/// A store that stops answering gives the pages a 503 that says so: never a page that quietly
/// lacks tags or claims nothing refers to an image, never a 404 for what is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_said_not_hidden() {
    use integration::fault_proxy::{FaultProxy, Faults};
    let moto = integration::emulators::Moto::start();
    moto.create_bucket("ui-pages");
    let proxy = FaultProxy::start(&moto.endpoint, Faults::default());
    let yaml = moto
        .storage_yaml("ui-pages")
        .replace(&moto.endpoint, &proxy.endpoint);
    let registry = Berth::with_config(
        &format!("storage:\n  {yaml}berth:\n  storage:\n    retrybudget: 1s\n"),
        &[],
    );
    let api = integration::http::Api::new(&registry.url);
    let manifest = api.image_manifest("team/app", "ui-faults").await;
    let r = api
        .put_manifest(
            "team/app",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    assert_eq!(r.status(), 201);
    let digest = sha256(&manifest);
    let status = |path: String| {
        let url = format!("{}{path}", registry.url);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    let pages = [
        "/ui/".to_owned(),
        "/ui/repo/team/app".to_owned(),
        "/ui/repo/team/app?sort=pushed".to_owned(),
        format!("/ui/repo/team/app/_manifest/{digest}"),
    ];
    for p in &pages {
        assert_eq!(status(p.clone()).await, 200, "{p} before the outage");
    }
    proxy.outage(std::time::Duration::from_secs(60));
    for p in &pages {
        assert_eq!(status(p.clone()).await, 503, "{p} during the outage");
    }
}
