//! Registry scale on local disk, beside distribution 2.8 on the very same store: a store of
//! `--repositories` repositories is written straight into distribution's layout (the
//! generator, `integration::store_generator`), then each registry walks the whole catalog in
//! pages of 100, serves the first page and one from the middle, serves pages of a repository
//! given `--many-tags` tags (first and middle), and runs a garbage collection dry run.
//!
//! `berth-scale-bench [--repositories 10000] [--layers 8] [--tags 1] [--many-tags 100000]
//! [--keep DIR]`
//!
//! Start it with BERTH_BIN pointing at a release build of berth.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use integration::Berth;
use integration::distribution::Distribution;
use integration::store_generator::{StoreShape, add_tags, generate, repository_name};

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
    /// Tags given to the first repository, for the tags pages (0: none).
    #[arg(long, default_value_t = 100_000)]
    many_tags: usize,
    /// Pushes (and a tenth as many revision deletes) before the daily collection rows (0: skip
    /// them).
    #[arg(long, default_value_t = 1000)]
    pushes: usize,
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

/// Median milliseconds of `runs` GETs of `path` at `base`, and how many entries the last
/// answer listed (under `repositories` or `tags`).
async fn median_ms(base: &str, path: &str, runs: usize) -> (f64, usize) {
    let client = reqwest::Client::new();
    let mut ms = Vec::new();
    let mut listed = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let body: serde_json::Value = r.json().await.unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        listed = ["repositories", "tags"]
            .iter()
            .find_map(|k| body[k].as_array().map(Vec::len))
            .unwrap_or(0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], listed)
}

/// What one registry measured: catalog pages, then tags pages of the repository with many.
struct Pages {
    first: f64,
    middle: f64,
    tags_first: f64,
    tags_middle: f64,
    tags_listed: usize,
}

async fn pages(base: &str, middle_name: &str, many_tags: usize) -> Pages {
    let (first, _) = median_ms(base, "/v2/_catalog?n=100", 9).await;
    let (middle, _) = median_ms(base, &format!("/v2/_catalog?n=100&last={middle_name}"), 9).await;
    let (mut tags_first, mut tags_middle, mut tags_listed) = (0.0, 0.0, 0);
    if many_tags > 0 {
        let repo = repository_name(0);
        (tags_first, tags_listed) =
            median_ms(base, &format!("/v2/{repo}/tags/list?n=100"), 9).await;
        let last = format!("many-{:06}", many_tags / 2);
        (tags_middle, _) =
            median_ms(base, &format!("/v2/{repo}/tags/list?n=100&last={last}"), 9).await;
    }
    Pages {
        first,
        middle,
        tags_first,
        tags_middle,
        tags_listed,
    }
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

/// One `berth gc` run: seconds, store operations, what it swept, its mode.
struct GcRun {
    secs: f64,
    operations: u64,
    swept: Vec<String>,
    mode: String,
}

fn berth_gc(cfg: &Path, args: &[&str]) -> GcRun {
    let started = Instant::now();
    let out = Command::new(integration::server::berth_binary())
        .arg("gc")
        .args(args)
        .args(["--grace", "0s", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "berth gc {args:?}: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let operations = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("berth gc: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("berth gc prints its store operations");
    GcRun {
        secs,
        operations,
        swept: integration::server::swept_digests(&report),
        mode: report["mode"].as_str().unwrap_or_default().to_owned(),
    }
}

/// `pushes` small images into repositories spread over the store (tag `daily`), and every
/// tenth push a delete of another repository's original revision (its blobs become garbage).
async fn daily_changes(base: &str, repositories: usize, pushes: usize) {
    let api = integration::http::Api::new(base);
    // New images and other victims when a kept store is measured again.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as usize % 100_000);
    for k in 0..pushes {
        let repo = repository_name((k * 7919) % repositories);
        let manifest = api
            .image_manifest(&repo, &format!("daily-{salt}-{k}"))
            .await;
        let r = api
            .put_manifest(
                &repo,
                "daily",
                "application/vnd.oci.image.manifest.v1+json",
                &manifest,
            )
            .await;
        assert_eq!(r.status(), 201, "push to {repo}");
        if k % 10 == 9 {
            let victim = repository_name((k * 7919 + 1 + salt) % repositories);
            let r = api
                .send(
                    reqwest::Method::HEAD,
                    &format!("/v2/{victim}/manifests/t0"),
                    &[("accept", "application/vnd.oci.image.manifest.v1+json")],
                    None,
                )
                .await;
            let Some(d) = integration::http::header(&r, "docker-content-digest") else {
                continue;
            };
            let r = api.delete_manifest(&victim, &d).await;
            assert_eq!(r.status(), 202, "delete in {victim}");
        }
    }
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
            if a.many_tags > 0 {
                let started = Instant::now();
                add_tags(&root, 0, shape, a.many_tags, 4);
                println!(
                    "gave {} {} tags in {:.1} s",
                    repository_name(0),
                    a.many_tags,
                    started.elapsed().as_secs_f64()
                );
            }
            root
        }
    };
    let mut names: Vec<String> = (0..a.repositories).map(repository_name).collect();
    names.sort();
    let middle_name = names[names.len() / 2].clone();
    let cfg = tmp.path().join("config.yml");
    std::fs::write(&cfg, config(&root)).unwrap();

    // distribution first: Berth's catalog index, written on its first walk, is not in
    // distribution's way (it never looks under berth/).
    let dist = Distribution::filesystem(&root);
    let dist_url = format!("http://{}", dist.host);
    let (d_walk, d_pages) = walk_catalog(&dist_url, a.distribution_pages).await;
    let d = pages(&dist_url, &middle_name, a.many_tags).await;
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
    let _ = median_ms(&berth.url, "/v2/_catalog?n=100", 1).await;
    let b_index = started.elapsed().as_secs_f64();
    let mut b_tag_index = 0.0;
    if a.many_tags > 0 {
        // Likewise the tag index of a repository with many tags, at its first listing.
        let started = Instant::now();
        let path = format!("/v2/{}/tags/list?n=100", repository_name(0));
        let _ = median_ms(&berth.url, &path, 1).await;
        b_tag_index = started.elapsed().as_secs_f64();
    }
    let (b_walk, b_pages) = walk_catalog(&berth.url, None).await;
    let b = pages(&berth.url, &middle_name, a.many_tags).await;
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
    let mut daily = None;
    if a.pushes > 0 {
        // The first verifying full run writes the reference index of a store that has none.
        let first = berth_gc(&cfg, &["--verify-references"]);
        let berth = Berth::with_config(&config(&root), &[]);
        daily_changes(&berth.url, a.repositories, a.pushes).await;
        drop(berth);
        let inc = berth_gc(&cfg, &["--incremental", "--dry-run"]);
        let full = berth_gc(&cfg, &["--dry-run"]);
        let verifying = berth_gc(&cfg, &["--dry-run", "--verify-references"]);
        assert_eq!(inc.mode, "incremental");
        assert_eq!(inc.swept, full.swept, "incremental and full runs agree");
        assert_eq!(verifying.swept, full.swept);
        let removing = berth_gc(&cfg, &["--incremental"]);
        assert_eq!(removing.swept, full.swept);
        daily = Some((first, inc, full, verifying, removing));
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
        "| first catalog page (median of 9) | {:.2} ms | {:.2} ms | {:.1}x |",
        b.first,
        d.first,
        d.first / b.first
    );
    println!(
        "| a catalog page from the middle (median of 9) | {:.2} ms | {:.2} ms | {:.1}x |",
        b.middle,
        d.middle,
        d.middle / b.middle
    );
    if a.many_tags > 0 {
        println!(
            "| tag index of a repository with {} tags built (first listing, once) | {b_tag_index:.2} s | (none) | |",
            a.many_tags
        );
        let note = if d.tags_listed > 100 {
            format!(" (ignores n: all {} tags)", d.tags_listed)
        } else {
            String::new()
        };
        println!(
            "| first tags page of it, n=100 (median of 9) | {:.2} ms | {:.2} ms{note} | {:.1}x |",
            b.tags_first,
            d.tags_first,
            d.tags_first / b.tags_first
        );
        println!(
            "| a tags page from the middle (median of 9) | {:.2} ms | {:.2} ms{note} | {:.1}x |",
            b.tags_middle,
            d.tags_middle,
            d.tags_middle / b.tags_middle
        );
    }
    println!(
        "| gc --dry-run (process start to end) | {b_gc:.2} s | {d_gc:.2} s | {:.1}x |",
        d_gc / b_gc
    );
    if let Some((first, inc, full, verifying, removing)) = daily {
        println!(
            "| first full gc --verify-references, writing the reference index | {:.2} s, {} store operations | | |",
            first.secs, first.operations
        );
        println!(
            "| daily gc after {} pushes and {} deletes: incremental --dry-run | {:.2} s, {} store operations, {} blobs to sweep | full --dry-run: {:.2} s, {} store operations, the same {} blobs | {:.0}x faster, {:.0}x fewer operations |",
            a.pushes,
            a.pushes / 10,
            inc.secs,
            inc.operations,
            inc.swept.len(),
            full.secs,
            full.operations,
            full.swept.len(),
            full.secs / inc.secs,
            full.operations as f64 / inc.operations.max(1) as f64
        );
        println!(
            "| the same, full --dry-run --verify-references (walks the reference index too) | {:.2} s, {} store operations | | |",
            verifying.secs, verifying.operations
        );
        println!(
            "| the same, incremental, removing them | {:.2} s, {} store operations | | |",
            removing.secs, removing.operations
        );
    }
}
