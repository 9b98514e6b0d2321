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

#[test]
fn berth_ops_bench_runs_at_small_sizes() {
    integration::tools::require("wrk");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-ops-bench"))
        .args(["--images", "2", "--layers", "1", "--layer-mib", "1"])
        .args(["--pushes", "2", "--load-seconds", "1"])
        .env("BERTH_BIN", berth_binary())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "berth replicate --once:",
        "lag (push answered",
        "every trace:",
        "1 % of traces:",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}
