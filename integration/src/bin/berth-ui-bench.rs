//! How fast the web UI's pages render on a registry with many repositories and one repository
//! with many tags, beside what distribution 2.8 (on the same storage) takes to list the same
//! names as JSON, the nearest thing it serves (it has no UI).
//!
//! `berth-ui-bench [--repos 10000] [--tags 10000] [--requests 30] [--backend filesystem|s3]`
//! fills the registry through Berth's API, then times each page sequentially and prints the
//! median and 95th percentile. Start it with BERTH_BIN pointing at a release build of berth.

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use integration::Berth;
use integration::distribution::Distribution;
use integration::emulators::Moto;
use integration::http::Api;
use integration::layout::sha256;
use reqwest::Method;
use serde_json::json;

/// Times the web UI's pages on a large registry, beside distribution's JSON listings.
#[derive(Parser)]
#[command(name = "berth-ui-bench")]
struct Cli {
    /// Repositories (each with one tag).
    #[arg(long, default_value_t = 10_000)]
    repos: usize,
    /// Tags of the one big repository (each a different image).
    #[arg(long, default_value_t = 10_000)]
    tags: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// Where the registry keeps its data.
    #[arg(long, default_value = "filesystem", value_parser = ["filesystem", "s3"])]
    backend: String,
}

const BIG: &str = "big/app";
const CONCURRENCY: usize = 32;
/// Berth's count of store operations, one series per kind.
const STORE_OPERATIONS: &str = "berth_storage_operation_duration_seconds_count";

/// An image manifest naming `config` and the shared layer.
fn manifest(config: &(String, usize), layer: &(String, usize)) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.0, "size": layer.1}],
    })
    .to_string()
    .into_bytes()
}

fn config_of(i: usize) -> Vec<u8> {
    json!({"architecture": "amd64", "os": "linux",
        "created": format!("2026-{:02}-{:02}T10:00:00Z", 1 + i % 12, 1 + i % 28),
        "config": {"Cmd": ["/app", format!("--n={i}")]},
        "rootfs": {"type": "layers", "diff_ids": []}})
    .to_string()
    .into_bytes()
}

async fn put(api: &Api, path: &str, body: Vec<u8>) {
    let r = api
        .send(
            Method::PUT,
            path,
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            Some(body),
        )
        .await;
    assert_eq!(r.status(), 201, "PUT {path}");
}

async fn mount(api: &Api, repo: &str, digest: &str) {
    let r = api
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from=seed/base"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), 201, "mount into {repo}");
}

/// Fills the registry: `repos` repositories of one image each, and `tags` images in BIG.
async fn fill(api: &Api, repos: usize, tags: usize) -> String {
    let layer_bytes = integration::layout::tar_gz_layer(7, 64 << 10);
    let layer = (
        api.push_blob("seed/base", &layer_bytes).await,
        layer_bytes.len(),
    );
    let base_config = config_of(0);
    let config = (
        api.push_blob("seed/base", &base_config).await,
        base_config.len(),
    );
    let started = Instant::now();
    futures::stream::iter(0..repos)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (layer, config) = (&layer, &config);
            async move {
                let repo = format!("team{:02}/app{i:05}", i % 100);
                mount(api, &repo, &layer.0).await;
                mount(api, &repo, &config.0).await;
                put(
                    api,
                    &format!("/v2/{repo}/manifests/latest"),
                    manifest(config, layer),
                )
                .await;
            }
        })
        .await;
    eprintln!(
        "{repos} repositories in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    mount(api, BIG, &layer.0).await;
    let first = std::sync::Mutex::new(String::new());
    futures::stream::iter(0..tags)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (layer, first) = (&layer, &first);
            async move {
                let body = config_of(i);
                let config = (api.push_blob(BIG, &body).await, body.len());
                let m = manifest(&config, layer);
                if i == 0 {
                    *first.lock().unwrap() = sha256(&m);
                }
                put(api, &format!("/v2/{BIG}/manifests/v{i:05}"), m).await;
            }
        })
        .await;
    eprintln!("{tags} tags in {:.1} s", started.elapsed().as_secs_f64());
    first.into_inner().unwrap()
}

/// Median time, in milliseconds, of `n` walks of a listing from `url`, page by page (each
/// `Link: <...>; rel="next"` followed, as clients do).
async fn time_listing(http: &reqwest::Client, base: &str, path: &str, n: usize) -> f64 {
    let walk = || async {
        let mut next = Some(path.to_owned());
        while let Some(p) = next.take() {
            let url = if p.starts_with("http") {
                p
            } else {
                format!("{base}{p}")
            };
            let r = http.get(&url).send().await.unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.status());
            next = r
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(u, _)| u.to_owned());
            r.bytes().await.unwrap();
        }
    };
    walk().await;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        walk().await;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

/// Median and 95th percentile, in milliseconds, of `n` sequential GETs of `url`.
async fn time_page(http: &reqwest::Client, url: &str, n: usize) -> (f64, f64) {
    let get = || async {
        let r = http.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.unwrap().len()
    };
    get().await;
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        get().await;
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = ((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1;
    (ms(times[n / 2]), ms(times[p95]))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let work = tempfile::tempdir().unwrap();
    let moto = (cli.backend == "s3").then(|| {
        let m = Moto::start();
        m.create_bucket("berth");
        m
    });
    let storage = match &moto {
        Some(m) => m.storage_yaml("berth"),
        None => format!(
            "filesystem:\n    rootdirectory: {}\n",
            work.path().display()
        ),
    };
    let berth = Berth::with_config(
        &format!("version: 0.1\nstorage:\n  {storage}\n"),
        &[("RUST_LOG", "warn")],
    );
    let api = Api::new(&berth.url);
    let first = fill(&api, cli.repos, cli.tags).await;
    // distribution on the very same data: Berth writes its layout.
    let dist = match &moto {
        Some(m) => Distribution::start(&format!(
            "s3:\n    region: us-east-1\n    regionendpoint: {}\n    bucket: berth\n    accesskey: test\n    secretkey: test\n    secure: false\n    v4auth: true\n    rootdirectory: /registry",
            m.endpoint
        )),
        None => Distribution::filesystem(work.path()),
    };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let b = |path: &str| format!("{}{path}", berth.url);
    let n = cli.requests;
    let pages: Vec<(String, String)> = vec![
        ("repositories, first page".into(), b("/ui/")),
        (
            "repositories, filtered as one types".into(),
            b("/ui/?partial=1&q=app0999"),
        ),
        (
            "repositories, a late page".into(),
            b("/ui/?after=team98/app09898"),
        ),
        (
            format!("{} tags by name, first page", cli.tags),
            b(&format!("/ui/repo/{BIG}")),
        ),
        (
            format!("{} tags by last push", cli.tags),
            b(&format!("/ui/repo/{BIG}?sort=pushed")),
        ),
        (
            format!("{} tags, last page", cli.tags),
            b(&format!("/ui/repo/{BIG}?page=100000")),
        ),
        (
            "an image".into(),
            b(&format!("/ui/repo/{BIG}/_manifest/{first}?tag=v00000")),
        ),
    ];
    println!(
        "| page ({} repositories, {} tags in one, {}) | median ms | p95 ms | store requests a view |",
        cli.repos, cli.tags, cli.backend
    );
    println!("| --- | --- | --- | --- |");
    for (label, url) in &pages {
        // Warmed first: the very first catalog view of a store builds its index once.
        time_page(&http, url, 1).await;
        let before = api.metric_total(STORE_OPERATIONS).await;
        let (median, p95) = time_page(&http, url, n).await;
        // Each timed view, and time_page's own warming one.
        let ops = (api.metric_total(STORE_OPERATIONS).await - before) as f64 / (n + 1) as f64;
        println!("| {label} | {median:.1} | {p95:.1} | {ops:.0} |");
    }
    println!();
    println!("| the same names as JSON | Berth ms | distribution ms | distribution vs Berth |");
    println!("| --- | --- | --- | --- |");
    let listings = [
        (
            "catalog, every repository (pages of 1000)",
            "/v2/_catalog?n=1000".to_owned(),
        ),
        (
            "tags list of the big repository",
            format!("/v2/{BIG}/tags/list"),
        ),
    ];
    for (label, path) in &listings {
        let ours = time_listing(&http, &berth.url, path, n.min(10)).await;
        let theirs = time_listing(&http, &format!("http://{}", dist.host), path, n.min(10)).await;
        println!(
            "| {label} | {ours:.1} | {theirs:.1} | {:.1}x |",
            theirs / ours
        );
    }
}
