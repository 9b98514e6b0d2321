//! Berth's container image, built from the repository's Dockerfile by a real engine, offline.
//!
//! The Dockerfile's public bases (`rust:1.95-bookworm`, distroless) cannot be pulled here, so
//! they are build arguments and the tests give local stand-ins: a Debian root filesystem made
//! with debootstrap by `scripts/test.sh` (`.tools/standin-rootfs.tar`) as the runtime, and the
//! same with this machine's Rust toolchain and crate cache as the builder. The build itself is
//! the Dockerfile's: `cargo build --release --locked` inside the builder, with no network.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::docker::DockerEngine;
use crate::tools::run;

/// The runtime stand-in's tag.
const RUNTIME: &str = "berth-standin/runtime:bookworm";
/// The builder stand-in's tag.
const BUILDER: &str = "berth-standin/rust:bookworm";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The toolchain that builds these tests (its `bin` and `lib`).
fn sysroot() -> PathBuf {
    let out = run(Command::new("rustc").args(["--print", "sysroot"]));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"))
}

/// Hard-links (or, across filesystems, copies) the tree `from` to `to`.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let linked = Command::new("cp")
        .arg("-al")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    if !linked {
        run(Command::new("cp").arg("-a").arg(from).arg(to));
    }
}

/// Imports the stand-ins into `docker`.
fn stand_ins(docker: &DockerEngine) {
    let rootfs = workspace().join(".tools/standin-rootfs.tar");
    assert!(
        rootfs.is_file(),
        "{} is missing; ./scripts/test.sh makes it with debootstrap",
        rootfs.display()
    );
    docker.run(&["import", rootfs.to_str().unwrap(), RUNTIME]);
    let ctx = tempfile::tempdir().unwrap();
    let root = sysroot();
    link_tree(&root.join("bin"), &ctx.path().join("rust/bin"));
    link_tree(&root.join("lib"), &ctx.path().join("rust/lib"));
    link_tree(
        &cargo_home().join("registry"),
        &ctx.path().join("cargo/registry"),
    );
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {RUNTIME}\nCOPY rust /usr/local/rust\nCOPY cargo /usr/local/cargo\n\
             ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
             CARGO_HOME=/usr/local/cargo CARGO_NET_OFFLINE=true CARGO_PROFILE_RELEASE_DEBUG=0\n"
        ),
    )
    .unwrap();
    docker.run(&[
        "build",
        "--network",
        "none",
        "-q",
        "-t",
        BUILDER,
        ctx.path().to_str().unwrap(),
    ]);
}

/// Builds Berth's image from the repository's Dockerfile as `tag`.
pub fn build_berth_image(docker: &DockerEngine, tag: &str) {
    stand_ins(docker);
    docker.run(&[
        "build",
        "--network",
        "none",
        "-q",
        "--build-arg",
        &format!("BUILDER_IMAGE={BUILDER}"),
        "--build-arg",
        &format!("RUNTIME_IMAGE={RUNTIME}"),
        "-t",
        tag,
        workspace().to_str().unwrap(),
    ]);
}
