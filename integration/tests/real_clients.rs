//! More real clients against berth: podman and buildah (daemonless, vfs storage) and the oras
//! Python client.

use std::path::Path;
use std::process::{Command, Output};

use integration::Berth;
use integration::layout::write_image;
use integration::tools::{require, run};

/// Runs a containers/storage tool (podman, buildah) with its own vfs store under `dir`, needing
/// no privileges and leaving the machine's store alone.
fn containers_tool(program: &'static str, dir: &Path) -> impl Fn(&[&str]) -> Output {
    let (root, runroot) = (dir.join("root"), dir.join("run"));
    move |args| {
        let mut c = Command::new(program);
        c.args(["--storage-driver", "vfs", "--root"])
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(args);
        run(&mut c)
    }
}

#[test]
fn podman_push_and_pull() {
    require("podman");
    let data = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(data.path());
    // podman names the pulled image after the layout's path, which must be lowercase.
    let work = tempfile::Builder::new().prefix("podman").tempdir().unwrap();
    let src_dir = std::env::temp_dir().join(format!("berth-podman-src-{}", std::process::id()));
    write_image(&src_dir, "v1", 60, &[2 << 20]);
    let podman = containers_tool("podman", work.path());
    let src = format!("oci:{}:v1", src_dir.display());
    let pulled = podman(&["pull", "-q", &src]);
    let _ = std::fs::remove_dir_all(&src_dir);
    let id = String::from_utf8_lossy(&pulled.stdout).trim().to_owned();
    let remote = format!("{}/podman/app:v1", berth.host);
    podman(&["tag", &id, &remote]);
    podman(&["push", "-q", "--tls-verify=false", &remote]);
    podman(&["rmi", "-a", "-f"]);
    podman(&["pull", "-q", "--tls-verify=false", &remote]);
    let inspect = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.RootFS.Layers}}",
        &remote,
    ]);
    let layers = String::from_utf8_lossy(&inspect.stdout).into_owned();
    assert!(
        layers.contains("sha256:"),
        "pulled image has no layers: {layers}"
    );
    let tags =
        run(Command::new("curl").args(["-s", &format!("{}/v2/podman/app/tags/list", berth.url)]));
    assert!(String::from_utf8_lossy(&tags.stdout).contains("\"v1\""));
}

/// buildah builds a two-layer image from scratch, pushes it as a Docker v2 schema 2 and as an
/// OCI manifest, and pulls both back to the same image.
#[test]
fn buildah_builds_pushes_and_pulls_both_manifest_formats() {
    require("buildah");
    let data = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(data.path());
    let work = tempfile::Builder::new()
        .prefix("buildah")
        .tempdir()
        .unwrap();
    let tool = containers_tool("buildah", work.path());
    let buildah = |args: &[&str]| {
        String::from_utf8_lossy(&tool(args).stdout)
            .trim()
            .to_owned()
    };
    let file = |name: &str, bytes: &[u8]| {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let ctr = buildah(&["from", "scratch"]);
    buildah(&[
        "copy",
        &ctr,
        &file("base.bin", &[7u8; 300_000]),
        "/base.bin",
    ]);
    buildah(&["config", "--label", "built-by=berth-test", &ctr]);
    buildah(&["commit", "-q", &ctr, "local-base"]);
    let ctr = buildah(&["from", "local-base"]);
    buildah(&["copy", &ctr, &file("app.txt", b"second layer"), "/app.txt"]);
    let image_id = buildah(&["commit", "-q", &ctr, "local-app"]);

    let repo = format!("{}/buildah/app", berth.host);
    for (tag, format) in [("docker", "v2s2"), ("oci", "oci")] {
        let dest = format!("{repo}:{tag}");
        buildah(&[
            "push",
            "-q",
            "--tls-verify=false",
            "--format",
            format,
            "local-app",
            &dest,
        ]);
    }
    for (tag, media_type) in [
        (
            "docker",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        ("oci", "application/vnd.oci.image.manifest.v1+json"),
    ] {
        let head = run(Command::new("curl").args([
            "-sfI",
            "-H",
            &format!("Accept: {media_type}"),
            &format!("{}/v2/buildah/app/manifests/{tag}", berth.url),
        ]));
        let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-type: {media_type}")),
            "{tag}: {head}"
        );
    }

    buildah(&["rmi", "-a", "-f"]);
    for tag in ["docker", "oci"] {
        let pulled = buildah(&["pull", "-q", "--tls-verify=false", &format!("{repo}:{tag}")]);
        // The image id is the config's digest: the same config came back, and buildah checked
        // every layer's digest on the way in.
        assert_eq!(pulled, image_id, "{tag}");
    }
    let inspect = buildah(&[
        "inspect",
        "--format",
        "{{index .OCIv1.Config.Labels \"built-by\"}} {{len .OCIv1.RootFS.DiffIDs}}",
        &format!("{repo}:oci"),
    ]);
    assert_eq!(inspect, "berth-test 2");
}

#[test]
fn oras_push_and_pull_an_artifact() {
    let data = tempfile::tempdir().unwrap();
    let berth = Berth::filesystem(data.path());
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("sbom.json"), br#"{"packages": []}"#).unwrap();
    let script = r#"
import sys, oras.client
host = sys.argv[1]
c = oras.client.OrasClient(hostname=host, insecure=True)
r = c.push(files=["sbom.json"], target=host + "/team/sbom:v1", manifest_annotations={"note": "berth"})
assert r.status_code == 201, r.status_code
assert c.get_tags(host + "/team/sbom") == ["v1"]
c.pull(target=host + "/team/sbom:v1", outdir="out")
"#;
    run(Command::new("python3")
        .args(["-c", script, &berth.host])
        .current_dir(work.path()));
    assert_eq!(
        std::fs::read(work.path().join("out/sbom.json")).unwrap(),
        br#"{"packages": []}"#
    );
}
