//! Berth and distribution 2.8 read each other's storage directories in place.

use integration::Berth;
use integration::distribution::Distribution;
use integration::layout::write_image;
use integration::tools::{skopeo_copy, tree};

fn blobs(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree(&dir.join("blobs"))
}

fn get_json(url: &str) -> serde_json::Value {
    let body = reqwest::blocking_free_get(url);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

mod reqwest {
    /// A tiny blocking GET over a fresh runtime (the tests here are synchronous).
    pub fn blocking_free_get(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }
}

#[test]
fn berth_serves_a_directory_distribution_wrote() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let image = write_image(&src, "1.0", 3, &[1 << 20, 3 << 20]);
    {
        let dist = Distribution::filesystem(data.path());
        skopeo_copy(
            &format!("oci:{}:1.0", src.display()),
            &format!("docker://{}/legacy/app:1.0", dist.host),
            &["--preserve-digests"],
        );
        skopeo_copy(
            &format!("oci:{}:1.0", src.display()),
            &format!("docker://{}/other:stable", dist.host),
            &["--preserve-digests"],
        );
    }
    let berth = Berth::filesystem(data.path());
    let out = work.path().join("out");
    skopeo_copy(
        &format!("docker://{}/legacy/app:1.0", berth.host),
        &format!("oci:{}:1.0", out.display()),
        &[],
    );
    assert_eq!(blobs(&src), blobs(&out));

    let tags = get_json(&format!("{}/v2/legacy/app/tags/list", berth.url));
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
    // The catalog index does not exist in a distribution directory: Berth builds it from the layout.
    let catalog = get_json(&format!("{}/v2/_catalog", berth.url));
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["legacy/app", "other"])
    );
    let manifest_url = format!("{}/v2/other/manifests/{}", berth.url, image.manifest_digest);
    assert!(get_json(&manifest_url)["layers"].is_array());
    drop(berth);

    // distribution writes the directory again: Berth's index, complete since its first walk,
    // does not know the new repository until `berth index rebuild`.
    {
        let dist = Distribution::filesystem(data.path());
        skopeo_copy(
            &format!("oci:{}:1.0", src.display()),
            &format!("docker://{}/later/app:1.0", dist.host),
            &["--preserve-digests"],
        );
    }
    let cfg = work.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            data.path().display()
        ),
    )
    .unwrap();
    let out = integration::server::berth_command(&cfg, &["index", "rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["catalog"]["added"], 1, "{report}");
    assert_eq!(report["catalog"]["repositories"], 3, "{report}");
    let berth = Berth::filesystem(data.path());
    let catalog = get_json(&format!("{}/v2/_catalog", berth.url));
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["later/app", "legacy/app", "other"])
    );
}

#[test]
fn distribution_serves_a_directory_berth_wrote() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "2.0", 4, &[2 << 20, 1 << 10]);
    {
        let berth = Berth::filesystem(data.path());
        skopeo_copy(
            &format!("oci:{}:2.0", src.display()),
            &format!("docker://{}/new/app:2.0", berth.host),
            &["--preserve-digests"],
        );
    }
    let dist = Distribution::filesystem(data.path());
    let out = work.path().join("out");
    skopeo_copy(
        &format!("docker://{}/new/app:2.0", dist.host),
        &format!("oci:{}:2.0", out.display()),
        &[],
    );
    assert_eq!(blobs(&src), blobs(&out));
    let tags = get_json(&format!("http://{}/v2/new/app/tags/list", dist.host));
    assert_eq!(tags["tags"], serde_json::json!(["2.0"]));
    let catalog = get_json(&format!("http://{}/v2/_catalog", dist.host));
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["new/app"]),
        "Berth's own files confuse distribution"
    );
}
