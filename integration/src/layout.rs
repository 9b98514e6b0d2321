//! Builds OCI image layouts on disk (for skopeo) from layers made in the test.

use std::io::Write;
use std::path::Path;

use rand::{Rng, SeedableRng};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// One image written to a layout.
pub struct Image {
    /// Digest of the manifest.
    pub manifest_digest: String,
    /// Digests of the layers, in order.
    pub layer_digests: Vec<String>,
}

/// `sha256:<hex>` of bytes.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Random bytes from a seed, so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A gzip-compressed tar holding one file of `len` random bytes.
pub fn tar_gz_layer(seed: u64, len: usize) -> Vec<u8> {
    let data = random_bytes(seed, len);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, format!("file-{seed}.bin"), &data[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn write_blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let d = sha256(data);
    let p = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    (d, data.len())
}

/// Writes an OCI layout at `dir` holding one image tagged `tag`, with layers of the given sizes.
pub fn write_image(dir: &Path, tag: &str, seed: u64, layer_sizes: &[usize]) -> Image {
    write_image_with(dir, tag, seed, layer_sizes, json!({}))
}

/// Like [`write_image`], with `config`'s fields (created, config.Entrypoint, history, ...)
/// set in the image config.
pub fn write_image_with(
    dir: &Path,
    tag: &str,
    seed: u64,
    layer_sizes: &[usize],
    config: serde_json::Value,
) -> Image {
    start_layout(dir);
    let (image, size) = write_manifest(dir, seed, layer_sizes, config);
    let entry = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.manifest_digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag}});
    write_index_json(dir, entry);
    image
}

/// Writes an OCI layout at `dir` whose `tag` is an index of one small image per
/// `(os, architecture)`; the index's digest.
pub fn write_multi_platform(
    dir: &Path,
    tag: &str,
    seed: u64,
    platforms: &[(&str, &str)],
) -> String {
    start_layout(dir);
    let mut children = Vec::new();
    for (i, (os, arch)) in platforms.iter().enumerate() {
        let config = json!({"os": os, "architecture": arch});
        let (image, size) = write_manifest(dir, seed * 100 + i as u64, &[16 << 10], config);
        children.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest, "size": size,
            "platform": {"os": os, "architecture": arch}}),
        );
    }
    let index = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children});
    let (d, n) = write_blob(dir, index.to_string().as_bytes());
    write_index_json(
        dir,
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": n,
            "annotations": {"org.opencontainers.image.ref.name": tag}}),
    );
    d
}

fn start_layout(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn write_index_json(dir: &Path, entry: serde_json::Value) {
    let index = json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// Writes the layers, config and manifest of one image; the image and its manifest's size.
fn write_manifest(
    dir: &Path,
    seed: u64,
    layer_sizes: &[usize],
    extra: serde_json::Value,
) -> (Image, usize) {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, &size) in layer_sizes.iter().enumerate() {
        let layer = tar_gz_layer(seed * 1000 + i as u64, size);
        let mut decoded = Vec::new();
        std::io::copy(&mut flate2::read::GzDecoder::new(&layer[..]), &mut decoded).unwrap();
        diff_ids.push(sha256(&decoded));
        let (d, n) = write_blob(dir, &layer);
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}));
    }
    let mut config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let (cd, cn) = write_blob(dir, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": layers,
    });
    let (md, mn) = write_blob(dir, manifest.to_string().as_bytes());
    let image = Image {
        manifest_digest: md,
        layer_digests: layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect(),
    };
    (image, mn)
}
