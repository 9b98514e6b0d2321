//! Writes a large, valid registry store straight into distribution's layout on local disk, so
//! that scale can be measured here without pushing a million blobs through an API: every
//! repository holds one image (a config and `layers` layers, each blob its own bytes) under
//! `tags` tags, written as distribution would have written them (blob data, layer links,
//! revision links, tag current and index links). Berth and distribution both serve it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct StoreShape {
    /// Repositories (`scale/r0000000`, spread over 100 top-level namespaces).
    pub repositories: usize,
    /// Layers per image (each a blob of its own; the config is one more).
    pub layers: usize,
    /// Tags per repository, all naming the one image.
    pub tags: usize,
}

impl StoreShape {
    /// Blobs written: layers, configs and manifests.
    pub fn blobs(&self) -> usize {
        self.repositories * (self.layers + 2)
    }
}

/// The name of repository `i`.
pub fn repository_name(i: usize) -> String {
    format!("ns{:02}/r{i:07}", i % 100)
}

fn write_file(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
}

/// Stores `data` as a blob under `root`; its digest (`sha256:<hex>`).
fn blob(root: &Path, data: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(data));
    write_file(
        &root.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
        data,
    );
    format!("sha256:{hex}")
}

fn link(path: PathBuf, digest: &str) {
    write_file(&path, digest.as_bytes());
}

fn write_repository(v2: &Path, i: usize, shape: StoreShape) {
    let m = write_image(v2, i, shape);
    let repo = v2.join("repositories").join(repository_name(i));
    for t in 0..shape.tags {
        write_tag(&repo, &format!("t{t}"), &m);
    }
}

fn write_tag(repo: &Path, tag: &str, manifest: &str) {
    let tag = repo.join(format!("_manifests/tags/{tag}"));
    link(tag.join("current/link"), manifest);
    link(
        tag.join(format!("index/sha256/{}/link", &manifest[7..])),
        manifest,
    );
}

/// Repository `i`'s image (blobs, layer links, revision); its manifest's digest.
fn write_image(v2: &Path, i: usize, shape: StoreShape) -> String {
    let repo = v2.join("repositories").join(repository_name(i));
    let mut layers = Vec::with_capacity(shape.layers);
    for l in 0..shape.layers {
        let data = format!("repository {i} layer {l}\n").into_bytes();
        let d = blob(v2, &data);
        link(repo.join(format!("_layers/sha256/{}/link", &d[7..])), &d);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": data.len(),
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/app", format!("--repository={i}")]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let c = blob(v2, &config);
    link(repo.join(format!("_layers/sha256/{}/link", &c[7..])), &c);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let m = blob(v2, &manifest);
    link(
        repo.join(format!("_manifests/revisions/sha256/{}/link", &m[7..])),
        &m,
    );
    m
}

/// Gives repository `i` (of a store `generate` wrote with `shape`) `count` more tags,
/// `many-000000` on, all naming its image, on `threads` threads; the files written.
pub fn add_tags(root: &Path, i: usize, shape: StoreShape, count: usize, threads: usize) -> usize {
    let v2 = root.join("docker/registry/v2");
    let m = write_image(&v2, i, shape);
    let repo = v2.join("repositories").join(repository_name(i));
    let threads = threads.max(1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (repo, m) = (&repo, &m);
            s.spawn(move || {
                for k in (t..count).step_by(threads) {
                    write_tag(repo, &format!("many-{k:06}"), m);
                }
            });
        }
    });
    2 * count
}

/// Writes `shape` under `root` (the storage root: `root/docker/registry/v2/...`) on `threads`
/// threads; the number of files written.
pub fn generate(root: &Path, shape: StoreShape, threads: usize) -> usize {
    let v2 = root.join("docker/registry/v2");
    let threads = threads.max(1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let v2 = &v2;
            s.spawn(move || {
                let mut i = t;
                while i < shape.repositories {
                    write_repository(v2, i, shape);
                    i += threads;
                }
            });
        }
    });
    // Blobs, their layer links, the manifest's revision link, two links per tag.
    shape.blobs() + shape.repositories * (shape.layers + 2 + 2 * shape.tags)
}
