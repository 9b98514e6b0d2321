//! What registry operations cost in store requests and in time, counted by the fault proxy
//! between a registry and its S3 bucket: a skopeo push of the image (30 MiB, 5 MiB and
//! 10 KiB layers), the same push again, a pull, and a manifest GET by tag. Run once with no
//! added latency and once with some per store request, the difference in time over the latency
//! is the number of store round trips each operation makes one after another.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fault_proxy::FaultProxy;
use crate::layout::write_image;
use crate::tools::skopeo_copy;

/// Store requests (presigned GETs of clients apart) and wall time of one operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// Requests the registry sent to the store.
    pub requests: u64,
    /// How long the operation took for the client.
    pub took: Duration,
}

/// The four operations' costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperationCosts {
    /// First push of the image.
    pub push: Cost,
    /// The same push again, every blob already there.
    pub repush: Cost,
    /// A pull of the image.
    pub pull: Cost,
    /// `GET /v2/<name>/manifests/<tag>`.
    pub manifest_get: Cost,
}

fn cost(proxy: &FaultProxy, op: impl FnOnce()) -> Cost {
    let before = proxy.store_requests();
    let started = Instant::now();
    op();
    Cost {
        requests: proxy.store_requests() - before,
        took: started.elapsed(),
    }
}

/// Measures the four operations against the registry at `host`, whose store is behind `proxy`;
/// `seed` makes the image (a registry that already holds it would re-push, not push).
pub fn measure(host: &str, proxy: &FaultProxy, work: &Path, seed: u64) -> OperationCosts {
    let src = work.join(format!("src-{seed}"));
    write_image(&src, "v1", seed, &[30 << 20, 5 << 20, 10 << 10]);
    let layout = format!("oci:{}:v1", src.display());
    let remote = format!("docker://{host}/cost/app{seed}:v1");
    let push = || {
        let out = skopeo_copy(&layout, &remote, &["--retry-times", "0"]);
        assert!(out.status.success(), "push failed");
    };
    let push_cost = cost(proxy, push);
    let repush = cost(proxy, push);
    let dst = work.join(format!("dst-{seed}"));
    let pull = cost(proxy, || {
        let out = skopeo_copy(
            &remote,
            &format!("oci:{}:v1", dst.display()),
            &["--retry-times", "0"],
        );
        assert!(out.status.success(), "pull failed");
    });
    let manifest_get = cost(proxy, || {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null"])
            .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
            .arg(format!("http://{host}/v2/cost/app{seed}/manifests/v1"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "manifest GET failed");
    });
    OperationCosts {
        push: push_cost,
        repush,
        pull,
        manifest_get,
    }
}

/// One skopeo push of a fresh three-layer image (`seed`) to `host/repo:tag`.
pub fn push_cost(host: &str, proxy: &FaultProxy, work: &Path, seed: u64, repo: &str) -> Cost {
    let src = work.join(format!("src-{seed}"));
    write_image(&src, "v1", seed, &[30 << 20, 5 << 20, 10 << 10]);
    cost(proxy, || {
        let out = skopeo_copy(
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{host}/{repo}:v{seed}"),
            &["--retry-times", "0"],
        );
        assert!(out.status.success(), "push failed");
    })
}

/// Store round trips made one after another: the time `latency` added, over `latency`.
pub fn sequential_round_trips(without: Cost, with: Cost, latency: Duration) -> f64 {
    (with.took.as_secs_f64() - without.took.as_secs_f64()).max(0.0) / latency.as_secs_f64()
}
