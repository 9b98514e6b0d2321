//! The benchmark program keeps working: a run at tiny sizes (timings are not checked here; the
//! figures live in BENCHMARKS.md).

use std::process::Command;

use integration::server::berth_binary;

#[test]
fn berth_bench_runs_every_scenario_at_small_sizes() {
    integration::tools::require("wrk");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args([
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
        ])
        .env("BERTH_BIN", berth_binary())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
}
