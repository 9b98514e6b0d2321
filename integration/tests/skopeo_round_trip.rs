//! skopeo pushes an image made here to berth and pulls it back byte for byte.

use integration::Berth;
use integration::layout::write_image;
use integration::tools::{skopeo_copy, tree};

fn blobs(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree(&dir.join("blobs"))
}

#[test]
fn push_then_pull_gives_identical_blobs() {
    let data = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(data.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let image = write_image(&src, "v1", 1, &[1 << 20, 6 << 20, 0]);

    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/team/app:v1", berth.host),
        &["--preserve-digests"],
    );
    let dst = work.path().join("dst");
    skopeo_copy(
        &format!("docker://{}/team/app:v1", berth.host),
        &format!("oci:{}:v1", dst.display()),
        &[],
    );
    assert_eq!(
        blobs(&src),
        blobs(&dst),
        "pulled blobs differ from pushed ones"
    );

    // By digest as well as by tag.
    let by_digest = work.path().join("by-digest");
    skopeo_copy(
        &format!("docker://{}/team/app@{}", berth.host, image.manifest_digest),
        &format!("oci:{}:x", by_digest.display()),
        &[],
    );
    assert_eq!(blobs(&src), blobs(&by_digest));

    // Blobs are at distribution's paths on disk.
    let hex = image.layer_digests[1].trim_start_matches("sha256:");
    let on_disk = data.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    assert!(on_disk.is_file(), "layer not at {}", on_disk.display());
}

#[test]
fn pushing_again_and_copying_between_repositories_works() {
    let data = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(data.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_image(&src, "v1", 2, &[2 << 20]);
    let dest = format!("docker://{}/a/one:v1", berth.host);
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &dest,
        &["--preserve-digests"],
    );
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &dest,
        &["--preserve-digests"],
    );
    // Registry to registry: skopeo mounts blobs across repositories.
    skopeo_copy(&dest, &format!("docker://{}/b/two:latest", berth.host), &[]);
    let out = work.path().join("out");
    skopeo_copy(
        &format!("docker://{}/b/two:latest", berth.host),
        &format!("oci:{}:v1", out.display()),
        &[],
    );
    assert_eq!(blobs(&src), blobs(&out));
}
