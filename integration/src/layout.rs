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
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
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
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cn) = write_blob(dir, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": layers,
    });
    let (md, mn) = write_blob(dir, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    Image {
        manifest_digest: md,
        layer_digests: layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect(),
    }
}
