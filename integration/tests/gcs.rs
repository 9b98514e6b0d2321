//! berth on Google Cloud Storage (gcp-storage-emulator): skopeo round trip and V4 signed redirects.
//! The emulator serves signed URLs without checking them, so the signature is verified here
//! against the service-account key with openssl, as GCS would.

use std::process::Command;

use integration::Berth;
use integration::emulators::GcsEmulator;
use integration::http::{Api, header};
use integration::layout::{random_bytes, write_image};
use integration::tools::{run, skopeo_copy, tree};
use reqwest::Method;
use sha2::Digest as _;

fn berth_on(emu: &GcsEmulator, bucket: &str, dir: &std::path::Path) -> Berth {
    Berth::with_config(
        &format!(
            "version: 0.1\nstorage:\n  {}{}",
            emu.storage_yaml(bucket, dir),
            GcsEmulator::BERTH_YAML
        ),
        &[],
    )
}

#[test]
fn skopeo_round_trip_on_gcs() {
    let emu = GcsEmulator::start();
    emu.create_bucket("images");
    let work = tempfile::tempdir().unwrap();
    let berth = berth_on(&emu, "images", work.path());
    let src = work.path().join("src");
    write_image(&src, "v1", 70, &[2 << 20, 18 << 20]);
    let remote = format!("docker://{}/team/app:v1", berth.host);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &remote,
        &["--preserve-digests"],
    );
    let dst = work.path().join("dst");
    skopeo_copy(&remote, &format!("oci:{}:v1", dst.display()), &[]);
    assert_eq!(tree(&src.join("blobs")), tree(&dst.join("blobs")));
}

/// The V4 string-to-sign of a signed GET URL, rebuilt from the URL as GCS rebuilds it.
fn string_to_sign(url: &url::Url, path_override: Option<&str>) -> (String, Vec<u8>) {
    let mut pairs: Vec<(String, String)> = url
        .query()
        .unwrap()
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let signature = pairs
        .iter()
        .find(|(k, _)| k == "X-Goog-Signature")
        .unwrap()
        .1
        .clone();
    pairs.retain(|(k, _)| k != "X-Goog-Signature");
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Signatures are made for the host GCS serves them on, whatever endpoint Berth talks to.
    let host = "storage.googleapis.com";
    let canonical = format!(
        "GET\n{}\n{}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        path_override.unwrap_or(url.path()),
        query.join("&")
    );
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let credential = get("X-Goog-Credential")
        .replace("%2F", "/")
        .replace("%40", "@");
    let scope = credential.split_once('/').unwrap().1.to_owned();
    let sts = format!(
        "GOOG4-RSA-SHA256\n{}\n{scope}\n{}",
        get("X-Goog-Date"),
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    );
    (sts, hex::decode(signature).unwrap())
}

fn verifies(
    public_pem: &std::path::Path,
    data: &str,
    signature: &[u8],
    dir: &std::path::Path,
) -> bool {
    let (d, s) = (dir.join("sts.txt"), dir.join("sig.bin"));
    std::fs::write(&d, data).unwrap();
    std::fs::write(&s, signature).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_pem)
        .arg("-signature")
        .arg(&s)
        .arg(&d)
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn blob_get_redirects_to_a_v4_signed_url() {
    let emu = GcsEmulator::start();
    emu.create_bucket("signed");
    let work = tempfile::tempdir().unwrap();
    let berth = berth_on(&emu, "signed", work.path());
    let api = Api::new(&berth.url);
    let data = random_bytes(71, 300_000);
    let d = api.push_blob("sig/app", &data).await;
    let r = api
        .send(Method::GET, &format!("/v2/sig/app/blobs/{d}"), &[], None)
        .await;
    assert_eq!(r.status(), 307);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let location = header(&r, "location").unwrap();
    assert!(location.starts_with(&emu.endpoint), "{location}");
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(
        fetched.bytes().await.unwrap().to_vec() == data,
        "signed URL serves other bytes"
    );

    let key: serde_json::Value = serde_json::from_str(&emu.service_account_key).unwrap();
    let private = work.path().join("key.pem");
    std::fs::write(&private, key["private_key"].as_str().unwrap()).unwrap();
    let public = work.path().join("pub.pem");
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    let url = url::Url::parse(&location).unwrap();
    assert!(
        url.query()
            .unwrap()
            .contains("X-Goog-Algorithm=GOOG4-RSA-SHA256")
    );
    assert!(
        url.query().unwrap().contains("X-Goog-Expires=1200"),
        "default expiry is 20 minutes"
    );
    let (sts, sig) = string_to_sign(&url, None);
    assert!(
        verifies(&public, &sts, &sig, work.path()),
        "V4 signature does not verify:\n{sts}"
    );
    let (forged, sig) = string_to_sign(&url, Some("/signed/some/other/object"));
    assert!(
        !verifies(&public, &forged, &sig, work.path()),
        "a signature for another object verified"
    );
}
