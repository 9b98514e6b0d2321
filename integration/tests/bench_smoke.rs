//! The benchmark program keeps working: a run at tiny sizes (timings are not checked here; the
//! figures live in BENCHMARKS.md).

use std::process::Command;

use integration::server::berth_binary;

/// Runs berth-bench with `args` against the test build of berth; its table (stdout) on success.
fn bench(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(args)
        .env("BERTH_BIN", berth_binary())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    table
}

#[test]
fn berth_bench_runs_every_scenario_at_small_sizes() {
    integration::tools::require("wrk");
    let args = [
        "all",
        "--size-mib",
        "2",
        "--runs",
        "1",
        "--uploads",
        "2",
        "--upload-mib",
        "2",
        "--tags",
        "5",
        "--load-seconds",
        "1",
    ];
    let table = bench(&args.map(std::ffi::OsStr::new));
    for scenario in [
        "monolithic push",
        "chunked push",
        "local pull",
        "manifest GET",
        "tags list",
        "peak RSS",
        "S3 (moto) pull",
    ] {
        assert!(table.contains(scenario), "{scenario} missing:\n{table}");
    }
    assert!(
        table.contains("blob bytes through Berth on S3 pulls | 0 |"),
        "{table}"
    );
    // CPU per GiB for both registries: "server + client" core-seconds, numbers (not NaN).
    let cpu = table
        .lines()
        .find(|l| l.contains("CPU core-seconds per GiB"))
        .unwrap_or_else(|| panic!("no CPU row:\n{table}"));
    let cells: Vec<&str> = cpu.split('|').map(str::trim).collect();
    for cell in &cells[2..4] {
        let parts: Vec<f64> = cell.split(" + ").filter_map(|v| v.parse().ok()).collect();
        assert!(
            parts.len() == 2 && parts.iter().all(|v| v.is_finite()),
            "{cpu}"
        );
    }
}

#[test]
fn berth_bench_compares_two_berth_builds() {
    let bin = berth_binary();
    let mut args = ["push", "--size-mib", "2", "--runs", "1", "--against-berth"]
        .map(std::ffi::OsStr::new)
        .to_vec();
    args.push(bin.as_os_str());
    let table = bench(&args);
    // A ratio against the baseline, not "n/a" (which would mean only one registry ran).
    let row = table
        .lines()
        .find(|l| l.contains("filesystem chunked push"))
        .unwrap_or_else(|| panic!("no push row:\n{table}"));
    assert!(table.contains("baseline berth"), "{table}");
    assert!(row.trim_end().ends_with("x |"), "{row}");
}

/// Runs the bench program `exe` with `args` against the test build of berth and checks that
/// its output has every one of `rows`.
fn bench_prints(exe: &str, args: &[&str], rows: &[&str]) {
    let out = Command::new(exe)
        .args(args)
        .env("BERTH_BIN", berth_binary())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in rows {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
}

#[test]
fn berth_ops_bench_runs_at_small_sizes() {
    integration::tools::require("wrk");
    bench_prints(
        env!("CARGO_BIN_EXE_berth-ops-bench"),
        &[
            "--images",
            "2",
            "--layers",
            "1",
            "--layer-mib",
            "1",
            "--pushes",
            "2",
            "--load-seconds",
            "1",
        ],
        &[
            "berth replicate --once:",
            "lag (push answered",
            "every trace:",
            "1 % of traces:",
        ],
    );
}

/// The scale generator writes a store both registries take as theirs: every repository is in
/// the catalog, every tag names its revision, every blob is served, and a collection finds
/// nothing to remove.
#[tokio::test]
async fn the_generated_store_is_a_valid_registry() {
    use integration::store_generator::{StoreShape, generate, repository_name};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let shape = StoreShape {
        repositories: 30,
        layers: 3,
        tags: 2,
    };
    let files = generate(&root, shape, 2);
    assert_eq!(files, 30 * (2 * (3 + 2) + 2 * 2));
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        root.display()
    );
    let berth = integration::Berth::with_config(&yaml, &[]);
    let api = integration::http::Api::new(&berth.url);
    let r = api
        .send(reqwest::Method::GET, "/v2/_catalog?n=1000", &[], None)
        .await;
    let catalog: serde_json::Value = r.json().await.unwrap();
    let mut want: Vec<String> = (0..30).map(repository_name).collect();
    want.sort();
    assert_eq!(catalog["repositories"], serde_json::json!(want));
    for i in [0, 17, 29] {
        let name = repository_name(i);
        let r = api
            .send(
                reqwest::Method::GET,
                &format!("/v2/{name}/manifests/t1"),
                &[("accept", "application/vnd.oci.image.manifest.v1+json")],
                None,
            )
            .await;
        assert_eq!(r.status(), 200, "{name}");
        let m: serde_json::Value = r.json().await.unwrap();
        for layer in m["layers"].as_array().unwrap() {
            let d = layer["digest"].as_str().unwrap();
            let r = api
                .send(
                    reqwest::Method::GET,
                    &format!("/v2/{name}/blobs/{d}"),
                    &[],
                    None,
                )
                .await;
            assert_eq!(r.status(), 200);
            let bytes = r.bytes().await.unwrap();
            assert_eq!(integration::layout::sha256(&bytes), d);
        }
    }
    drop(berth);
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let out = integration::server::berth_command(&cfg, &["gc", "--dry-run", "--grace", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["swept"], serde_json::json!([]), "{report}");
    assert_eq!(report["marked"], serde_json::json!(30 * 5), "{report}");
}

#[test]
fn berth_scale_bench_runs_at_small_sizes() {
    integration::tools::require("docker-registry");
    bench_prints(
        env!("CARGO_BIN_EXE_berth-scale-bench"),
        &[
            "--repositories",
            "150",
            "--layers",
            "2",
            "--many-tags",
            "1500",
            "--pushes",
            "30",
        ],
        &[
            "full catalog walk, 2 pages of 100",
            "first catalog page",
            "a catalog page from the middle",
            "tag index of a repository with 1500 tags built",
            "a tags page from the middle",
            "gc --dry-run",
            "daily gc after 30 pushes and 3 deletes: incremental --dry-run",
        ],
    );
}
