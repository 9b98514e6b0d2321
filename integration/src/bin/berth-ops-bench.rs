//! Replication and trace export, measured on loopback.
//!
//! `berth-ops-bench [--images 12] [--layers 3] [--layer-mib 8] [--pushes 30] [--load-seconds 8]`
//!
//! - catch-up: a registry's worth of images sent to an empty distribution 2.8 by
//!   `berth replicate --once`, beside `skopeo sync` of the same repositories (what an operator
//!   of distribution scripts, as it has no replication); both read from the same Berth;
//! - lag: the time from a push's answer until the downstream serves the tag, with
//!   replication on (median and 95th percentile);
//! - trace export: manifest GETs by tag under wrk with OTLP export on (to the tests' own
//!   collector, HTTP/protobuf) against off, alternating, on the same store.
//!
//! Start it with BERTH_BIN pointing at a release build of berth.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use integration::Berth;
use integration::distribution::Distribution;
use integration::http::Api;
use integration::layout::random_bytes;
use integration::otlp_receiver::OtlpReceiver;
use serde_json::json;

/// Replication catch-up and lag, and the cost of trace export.
#[derive(Parser)]
#[command(name = "berth-ops-bench")]
struct Cli {
    /// Images in the registry to catch up with.
    #[arg(long, default_value_t = 12)]
    images: usize,
    /// Layers per image.
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// MiB per layer.
    #[arg(long, default_value_t = 8)]
    layer_mib: usize,
    /// Pushes timed for the lag.
    #[arg(long, default_value_t = 30)]
    pushes: usize,
    /// Seconds of wrk per run (three runs each way).
    #[arg(long, default_value_t = 8)]
    load_seconds: u32,
}

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
/// Repositories the images are spread over.
const REPOSITORIES: usize = 3;

fn filesystem(root: &std::path::Path) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        root.display()
    )
}

fn empty_distribution() -> (Distribution, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Distribution::filesystem(dir.path()), dir)
}

/// Pushes image `i` (its layers random) to `bench/app{i % 3}:t{i}`.
async fn push_image(api: &Api, i: usize, layers: usize, layer_bytes: usize) {
    let repo = format!("bench/app{}", i % REPOSITORIES);
    let mut descriptors = Vec::new();
    for l in 0..layers {
        let data = random_bytes((i * 100 + l) as u64, layer_bytes);
        let d = api.push_blob(&repo, &data).await;
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": data.len()}));
    }
    let config = format!("{{\"image\":{i}}}");
    let c = api.push_blob(&repo, config.as_bytes()).await;
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": descriptors});
    let r = api
        .put_manifest(
            &repo,
            &format!("t{i}"),
            OCI,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await;
    assert_eq!(r.status(), 201);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = Cli::parse();
    let layer_bytes = a.layer_mib << 20;
    let total_mib = (a.images * a.layers * a.layer_mib) as f64;
    let store = tempfile::tempdir().unwrap();

    // The registry to catch up with.
    let source = Berth::with_config(&filesystem(store.path()), &[]);
    let api = Api::new(&source.url);
    for i in 0..a.images {
        push_image(&api, i, a.layers, layer_bytes).await;
    }
    println!(
        "catch-up: {} images, {} layers of {} MiB each ({total_mib} MiB) in {REPOSITORIES} repositories",
        a.images, a.layers, a.layer_mib
    );

    // berth replicate --once, to an empty distribution.
    let (by_berth, _d1) = empty_distribution();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "{}berth:\n  replication:\n    downstreams:\n      - name: bench\n        remoteurl: http://{}\n",
            filesystem(store.path()),
            by_berth.host
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = integration::server::berth_command(&cfg, &["replicate", "--once"]);
    let berth_s = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // skopeo sync of the same repositories, to another empty distribution.
    integration::tools::require("skopeo");
    let (by_skopeo, _d2) = empty_distribution();
    let started = Instant::now();
    for r in 0..REPOSITORIES.min(a.images) {
        let ok = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "sync",
                "--src",
                "docker",
                "--dest",
                "docker",
            ])
            .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
            .stdout(std::process::Stdio::null())
            .arg(format!("{}/bench/app{r}", source.host))
            .arg(format!("{}/bench", by_skopeo.host))
            .status()
            .unwrap()
            .success();
        assert!(ok, "skopeo sync");
    }
    let skopeo_s = started.elapsed().as_secs_f64();
    println!(
        "  berth replicate --once: {berth_s:.2} s ({:.0} MiB/s); skopeo sync: {skopeo_s:.2} s ({:.0} MiB/s); skopeo/berth time ratio {:.2}",
        total_mib / berth_s,
        total_mib / skopeo_s,
        skopeo_s / berth_s
    );
    drop(source);

    // Lag: push, then watch the downstream.
    let (downstream, _d3) = empty_distribution();
    let mirrored = Berth::with_config(
        &format!(
            "{}berth:\n  replication:\n    downstreams:\n      - name: bench\n        remoteurl: http://{}\n",
            filesystem(store.path()),
            downstream.host
        ),
        &[],
    );
    let api = Api::new(&mirrored.url);
    let client = reqwest::Client::new();
    let mut lags = Vec::new();
    for i in 0..a.pushes {
        let body = api.image_manifest("bench/lag", &format!("lag {i}")).await;
        let r = api
            .put_manifest("bench/lag", &format!("l{i}"), OCI, &body)
            .await;
        assert_eq!(r.status(), 201);
        let pushed = Instant::now();
        let url = format!("http://{}/v2/bench/lag/manifests/l{i}", downstream.host);
        loop {
            let there = client
                .head(&url)
                .header("accept", OCI)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if there {
                break;
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(60),
                "l{i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(pushed.elapsed().as_secs_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "lag (push answered -> downstream serves the tag), {} pushes: p50 {:.1} ms, p95 {:.1} ms",
        a.pushes,
        percentile(&lags, 0.5),
        percentile(&lags, 0.95)
    );
    drop(mirrored);

    // Trace export: manifest GETs by tag, off, every trace, and 1 % of traces, alternating.
    let receiver = OtlpReceiver::start();
    let url = |b: &Berth| format!("{}/v2/bench/app0/manifests/t0", b.url);
    let tracing = |ratio: f64| {
        format!(
            "berth:\n  tracing:\n    endpoint: {}\n    protocol: http/protobuf\n    samplingratio: {ratio}\n",
            receiver.http_endpoint
        )
    };
    let modes = [
        ("off", String::new()),
        ("every trace", tracing(1.0)),
        ("1 % of traces", tracing(0.01)),
    ];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for run in 0..3 {
        for k in 0..modes.len() {
            // Which mode goes first turns with each run.
            let m = (k + run) % modes.len();
            let b = Berth::with_config(&format!("{}{}", filesystem(store.path()), modes[m].1), &[]);
            integration::load::wrk(&url(&b), 1);
            let (rps, _, p99) = integration::load::wrk(&url(&b), a.load_seconds);
            results[m].push((rps, p99));
        }
    }
    let median = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(pick).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let base = median(&results[0], |x| x.0);
    println!(
        "trace export, manifest GET by tag (wrk -t2 -c64, medians of 3; the collector shares the cores):"
    );
    for (m, (name, _)) in modes.iter().enumerate() {
        let rps = median(&results[m], |x| x.0);
        println!(
            "  {name}: {rps:.0} req/s, p99 {:.2} ms, {:.2} of off",
            median(&results[m], |x| x.1),
            rps / base
        );
    }
    println!("  {} spans received", receiver.spans().len());
}
