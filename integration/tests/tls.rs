//! HTTPS with a generated certificate: clients that trust it connect, the certificate is reloaded
//! when its files change, and skopeo pushes and pulls with verification on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration::Berth;
use integration::certs::{ca_and_server, self_signed};
use integration::layout::write_image;
use integration::tools::{run, tree};

fn curl_ok(url: &str, ca: &Path) -> bool {
    Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(ca)
        .arg(url)
        .status()
        .unwrap()
        .success()
}

#[test]
fn https_round_trip_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "first");
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  tls:\n    certificate: {}\n    key: {}\n",
        dir.path().display(),
        cert.display(),
        key.display()
    );
    let berth = Berth::with_config(&yaml, &[]);
    assert!(berth.url.starts_with("https://"), "{}", berth.url);
    let base = format!("{}/v2/", berth.url);
    assert!(
        curl_ok(&base, &cert),
        "a client trusting the certificate cannot connect"
    );
    let plain = Command::new("curl")
        .args(["-sf", &format!("http://{}/v2/", berth.host)])
        .status()
        .unwrap();
    assert!(!plain.success(), "plain HTTP was served on the TLS port");

    // skopeo with verification on, trusting the certificate through a cert dir.
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let src = dir.path().join("src");
    write_image(&src, "v1", 90, &[1 << 20]);
    let remote = format!("docker://{}/tls/app:v1", berth.host);
    let certs_s = certs.to_str().unwrap();
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-cert-dir", certs_s])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&remote));
    let dst = dir.path().join("dst");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-cert-dir", certs_s])
        .arg(&remote)
        .arg(format!("oci:{}:v1", dst.display())));
    assert_eq!(
        tree(&src.join("blobs")).len(),
        tree(&dst.join("blobs")).len()
    );

    // Replace the certificate in place: berth serves the new one without a restart.
    let (new_cert, new_key) = self_signed(dir.path(), "second");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let mut reloaded = false;
    for _ in 0..40 {
        if curl_ok(&base, &new_cert) {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(reloaded, "the new certificate was not picked up");
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rustls, unlike curl, refuses a
/// CA certificate as a server's own): (CA certificate, server certificate, server key).
#[test]
fn a_pull_through_cache_verifies_an_https_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_server(dir.path());
    let upstream = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/up\nhttp:\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().display(),
            cert.display(),
            key.display()
        ),
        &[],
    );
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let src = dir.path().join("src");
    write_image(&src, "v1", 91, &[1 << 20]);
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/tls/app:v1", upstream.host)));
    let cache_yaml = |name: &str| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/{name}\nproxy:\n  remoteurl: {}\n",
            dir.path().display(),
            upstream.url
        )
    };
    // The upstream's CA given the way rustls' native roots take one: SSL_CERT_FILE.
    let trusting = Berth::with_config(
        &cache_yaml("trusting"),
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let dst = dir.path().join("dst");
    let pulled = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/tls/app:v1", trusting.host))
        .arg(format!("oci:{}:v1", dst.display()))
        .status()
        .unwrap();
    assert!(pulled.success(), "{}", trusting.log());
    assert_eq!(
        tree(&src.join("blobs")),
        tree(&dst.join("blobs")),
        "{}",
        trusting.log()
    );
    // Without it, the certificate is refused: the cache says the upstream failed.
    let wary = Berth::with_config(&cache_yaml("wary"), &[]);
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v2/tls/app/manifests/v1", wary.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
}

/// `curl` over HTTPS trusting `ca`, with a client certificate if given: the HTTP status, or
/// 0 when the handshake failed.
fn curl_status(method: &str, url: &str, ca: &Path, client: Option<(&Path, &Path)>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        method,
        "--cacert",
    ])
    .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn client_certificates_are_accounts_the_policy_sees() {
    use integration::certs::client_certificate;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_server(dir.path());
    let ca_key = dir.path().join("ca.key");
    let (builder, builder_key) =
        client_certificate(dir.path(), (&ca, &ca_key), "builder", "builder");
    let (rogue_ca, rogue_ca_key) = self_signed(dir.path(), "rogue-ca");
    let (rogue, rogue_key) =
        client_certificate(dir.path(), (&rogue_ca, &rogue_ca_key), "rogue", "builder");
    let users = integration::credentials::htpasswd(dir.path(), &[("alice", "a-pass")]);
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        "rules:
  - name: the build machine pushes team
    repository: team/*
    actions: [pull, push]
    accounts: [builder]
    kinds: [certificate]
  - name: alice pulls
    repository: '*'
    actions: [pull]
    accounts: [alice]
",
    )
    .unwrap();
    let tls = |clientauth: &str| {
        format!(
            "http:\n  tls:\n    certificate: {}\n    key: {}\n    clientcas: [{}]\n    clientauth: {clientauth}\n",
            cert.display(),
            key.display(),
            ca.display()
        )
    };
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}/data\n{tls}auth:\n  htpasswd:\n    realm: test\n    path: {users}\nberth:\n  policy:\n    file: {policy}\n",
        root = dir.path().display(),
        tls = tls("optional"),
        users = users.display(),
        policy = policy.display()
    );
    let berth = Berth::with_config(&yaml, &[]);
    let at = |path: &str| format!("{}{path}", berth.url);
    let mine = Some((builder.as_path(), builder_key.as_path()));
    let uploads = at("/v2/team/app/blobs/uploads/");
    assert_eq!(curl_status("POST", &uploads, &ca, mine), 202);
    assert_eq!(
        curl_status("POST", &at("/v2/other/app/blobs/uploads/"), &ca, mine),
        401,
        "the certificate's account pushed outside the policy"
    );
    // Optional: without a certificate, a client authenticates as before.
    assert_eq!(curl_status("POST", &uploads, &ca, None), 401);
    // A certificate another CA signed never gets through the handshake, whatever its name.
    let theirs = Some((rogue.as_path(), rogue_key.as_path()));
    assert_eq!(curl_status("POST", &uploads, &ca, theirs), 0);

    // skopeo with the certificate in its cert dir, verification on.
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    std::fs::copy(&builder, certs.join("client.cert")).unwrap();
    std::fs::copy(&builder_key, certs.join("client.key")).unwrap();
    let src = dir.path().join("src");
    write_image(&src, "v1", 92, &[256 << 10]);
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/team/app:v1", berth.host)));

    // Required (distribution's way): no certificate, no connection.
    let strict = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}/strict\n{}",
        dir.path().display(),
        tls("required")
    );
    let strict = Berth::with_config(&strict, &[]);
    let base = format!("{}/v2/", strict.url);
    assert_eq!(curl_status("GET", &base, &ca, None), 0);
    assert_eq!(curl_status("GET", &base, &ca, mine), 200);
}
