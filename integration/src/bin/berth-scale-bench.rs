//! Registry scale on local disk, beside distribution 2.8 on the very same store: a store of
//! `--repositories` repositories is written straight into distribution's layout (the
//! generator, `integration::store_generator`), then each registry walks the whole catalog in
//! pages of 100, serves the first page, and runs a garbage collection dry run.
//!
//! `berth-scale-bench [--repositories 10000] [--layers 8] [--tags 1] [--keep DIR]`
//!
//! Start it with BERTH_BIN pointing at a release build of berth.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use integration::Berth;
use integration::distribution::Distribution;
use integration::store_generator::{StoreShape, generate};

/// Catalog pages and GC on a large generated store, Berth beside distribution.
#[derive(Parser)]
#[command(name = "berth-scale-bench")]
struct Cli {
    /// Repositories, one image each.
    #[arg(long, default_value_t = 10_000)]
    repositories: usize,
    /// Layers per image.
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Tags per repository.
    #[arg(long, default_value_t = 1)]
    tags: usize,
    /// Write the store here and keep it (default: a temporary directory).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// Measure a store generated before (with the same shape) instead of writing one.
    #[arg(long)]
    existing: Option<std::path::PathBuf>,
    /// Stop distribution's catalog walk after this many pages (each of its pages walks the
    /// tree from the start: at 100,000 repositories the whole walk takes most of an hour).
    #[arg(long)]
    distribution_pages: Option<usize>,
}

/// Seconds to walk the catalog at `base` in pages of 100 (at most `limit` pages), and the
/// pages walked.
async fn walk_catalog(base: &str, limit: Option<usize>) -> (f64, usize) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut next = Some(format!("{base}/v2/_catalog?n=100"));
    let mut pages = 0;
    while let Some(url) = next.take() {
        if limit.is_some_and(|l| pages >= l) {
            break;
        }
        let r = client.get(&url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        next = r
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.split('<').nth(1)?.split('>').next().map(str::to_owned))
            .map(|p| {
                if p.starts_with('/') {
                    format!("{base}{p}")
                } else {
                    p
                }
            });
        let _ = r.bytes().await.unwrap();
        pages += 1;
    }
    (started.elapsed().as_secs_f64(), pages)
}

/// Median milliseconds of `runs` GETs of the first catalog page.
async fn first_page_ms(base: &str, runs: usize) -> f64 {
    let client = reqwest::Client::new();
    let mut ms = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let r = client
            .get(format!("{base}/v2/_catalog?n=100"))
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn timed(cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn config(root: &Path) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        root.display()
    )
}

#[tokio::main]
async fn main() {
    let a = Cli::parse();
    let tmp = tempfile::tempdir().unwrap();
    let shape = StoreShape {
        repositories: a.repositories,
        layers: a.layers,
        tags: a.tags,
    };
    let root = match &a.existing {
        Some(dir) => dir.clone(),
        None => {
            let root = a.keep.clone().unwrap_or_else(|| tmp.path().join("store"));
            let started = Instant::now();
            let files = generate(&root, shape, 4);
            let took = started.elapsed().as_secs_f64();
            println!(
                "generated {} repositories, {} blobs, {files} files in {took:.1} s ({:.0} files/s)",
                a.repositories,
                shape.blobs(),
                files as f64 / took
            );
            root
        }
    };
    let cfg = tmp.path().join("config.yml");
    std::fs::write(&cfg, config(&root)).unwrap();

    // distribution first: Berth's catalog index, written on its first walk, is not in
    // distribution's way (it never looks under berth/).
    let dist = Distribution::filesystem(&root);
    let dist_url = format!("http://{}", dist.host);
    let (d_walk, d_pages) = walk_catalog(&dist_url, a.distribution_pages).await;
    let d_first = first_page_ms(&dist_url, 9).await;
    drop(dist);
    let d_gc = timed(
        Command::new("docker-registry")
            .args(["garbage-collect", "--dry-run"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null()),
    );

    let berth = Berth::with_config(&config(&root), &[]);
    // The first request finds no index and builds it from the layout (once per store).
    let started = Instant::now();
    let _ = first_page_ms(&berth.url, 1).await;
    let b_index = started.elapsed().as_secs_f64();
    let (b_walk, b_pages) = walk_catalog(&berth.url, None).await;
    let b_first = first_page_ms(&berth.url, 9).await;
    drop(berth);
    let b_gc = timed(
        Command::new(integration::server::berth_binary())
            .args(["gc", "--dry-run", "--grace", "0s", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null()),
    );
    if a.distribution_pages.is_none() {
        assert_eq!(b_pages, d_pages, "both walk every repository");
    }

    println!(
        "| {} repositories | Berth | distribution 2.8 | ratio |",
        a.repositories
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| catalog index built from the layout (first request, once) | {b_index:.2} s | (none) | |"
    );
    if d_pages < b_pages {
        println!(
            "| full catalog walk, {b_pages} pages of 100 | {b_walk:.2} s | its first {d_pages} pages: {d_walk:.2} s (stopped) | over {:.1}x |",
            d_walk / b_walk
        );
    } else {
        println!(
            "| full catalog walk, {b_pages} pages of 100 | {b_walk:.2} s | {d_walk:.2} s | {:.1}x |",
            d_walk / b_walk
        );
    }
    println!(
        "| first catalog page (median of 9) | {b_first:.1} ms | {d_first:.1} ms | {:.1}x |",
        d_first / b_first
    );
    println!(
        "| gc --dry-run (process start to end) | {b_gc:.2} s | {d_gc:.2} s | {:.1}x |",
        d_gc / b_gc
    );
}
