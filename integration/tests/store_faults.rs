//! A store on a bad day: Berth on S3 (moto), Azure (Azurite) and GCS (the emulator) through
//! the fault proxy, which answers 503 and 500, resets connections, and applies writes before
//! failing them anyway. Pushes and pulls with skopeo never fail, never serve wrong bytes, and
//! leave no tag pointing at a missing blob.

use std::path::Path;
use std::process::Command;

use integration::Berth;
use integration::fault_proxy::{FaultProxy, Faults};
use integration::layout::write_image;
use integration::tools::{require, tree};

/// Round trips in the suite; `BERTH_FAULT_ROUNDS` asks for more (the 50).
fn rounds() -> usize {
    std::env::var("BERTH_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// `skopeo copy`, returning whether it succeeded (and its stderr).
fn copy(src: &str, dst: &str) -> (bool, String) {
    require("skopeo");
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--retry-times",
            "0",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            src,
            dst,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pushes and pulls the three-layer image `rounds` times through `berth`; returns the failures.
fn round_trips(berth: &Berth, work: &Path, rounds: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for i in 0..rounds {
        let src = work.join(format!("src-{i}"));
        // Sizes of the image, scaled: a multipart layer, a small one, a tiny one.
        write_image(&src, "v1", 500 + i as u64, &[12 << 20, 2 << 20, 10 << 10]);
        let remote = format!("docker://{}/team/app:r{i}", berth.host);
        let (ok, err) = copy(&format!("oci:{}:v1", src.display()), &remote);
        if !ok {
            failures.push(format!("push {i}: {err}"));
            continue;
        }
        let dst = work.join(format!("dst-{i}"));
        let (ok, err) = copy(&remote, &format!("oci:{}:v1", dst.display()));
        if !ok {
            failures.push(format!("pull {i}: {err}"));
            continue;
        }
        assert_eq!(
            tree(&src.join("blobs")),
            tree(&dst.join("blobs")),
            "round {i} pulled other bytes"
        );
    }
    failures
}

fn survive(storage_yaml: &str, origin: &str, proxy: &FaultProxy) {
    let work = tempfile::tempdir().unwrap();
    let yaml = storage_yaml.replace(origin, &proxy.endpoint);
    let berth = Berth::with_config(&format!("storage:\n  {yaml}"), &[]);
    let n = rounds();
    let failures = round_trips(&berth, work.path(), n);
    eprintln!(
        "{n} round trips: {} failed, {} store requests passed, {} faulted",
        failures.len(),
        proxy.store_requests(),
        proxy.faulted()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        berth.log()
    );
    assert!(proxy.faulted() > 0, "the proxy injected nothing");
}

/// `http://127.0.0.1:PORT` of an endpoint that may carry a path.
fn origin_of(endpoint: &str) -> String {
    let rest = endpoint.trim_start_matches("http://");
    format!("http://{}", rest.split('/').next().unwrap())
}

#[test]
fn s3_on_a_bad_day() {
    let moto = integration::emulators::Moto::start();
    moto.create_bucket("faults");
    let proxy = FaultProxy::start(&moto.endpoint, Faults::cloud_bad_day());
    survive(&moto.storage_yaml("faults"), &moto.endpoint, &proxy);
}

#[test]
fn azure_on_a_bad_day() {
    let azurite = integration::emulators::Azurite::start();
    azurite.create_container("faults");
    let origin = origin_of(&azurite.endpoint);
    let proxy = FaultProxy::start(&origin, Faults::cloud_bad_day());
    survive(&azurite.storage_yaml("faults"), &origin, &proxy);
}

#[test]
fn gcs_on_a_bad_day() {
    let gcs = integration::emulators::GcsEmulator::start();
    gcs.create_bucket("faults");
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&gcs.endpoint, Faults::cloud_bad_day());
    survive(
        &gcs.storage_yaml("faults", dir.path()),
        &gcs.endpoint,
        &proxy,
    );
}
