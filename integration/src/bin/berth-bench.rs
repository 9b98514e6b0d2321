//! Benchmarks berth beside CNCF distribution 2.8 on the same storage, alternating the two.
//!
//! `berth-bench all [--size-mib 1024] [--runs 3] [--uploads 32] [--upload-mib 256] [--tags 10000]`
//! runs every scenario (local disk, then S3 on moto) and prints one table of medians with
//! distribution/berth ratios. `berth-bench push --backend s3|azure|filesystem|garage` runs only
//! the chunked push (garage: a 3-node cluster, Berth in single-writer mode). Start it with BERTH_BIN pointing at a release build of berth.
//! `--against-berth PATH` puts another berth build (a baseline) where distribution would run, to
//! see what a change to Berth is worth with the same alternation that cancels the machine's swings.

use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use integration::Berth;
use integration::distribution::Distribution;
use integration::emulators::{Azurite, Moto};
use integration::http::{Api, header};
use integration::layout::sha256;
use reqwest::Method;
use sha2::Digest as _;

#[derive(Clone)]
struct Args {
    command: String,
    backend: String,
    size: usize,
    chunk: usize,
    runs: usize,
    uploads: usize,
    upload_size: usize,
    tags: usize,
    load_seconds: u32,
    skip_s3: bool,
    /// Runs Berth alone (for profiling it without distribution's runs in between).
    berth_only: bool,
    /// A baseline berth binary that runs in distribution's place.
    against_berth: Option<std::path::PathBuf>,
    only: Option<Vec<String>>,
}

impl Args {
    /// Whether a local scenario (mono, chunked, pull, manifest, rss, pullrss) was selected with
    /// `--only`.
    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    }
}

/// Benchmarks berth beside CNCF distribution 2.8 on the same storage, alternating the two.
/// Start it with BERTH_BIN pointing at a release build of berth.
#[derive(clap::Parser)]
#[command(name = "berth-bench")]
struct Cli {
    /// `all`: every scenario (local disk, then S3 on moto) in one table of medians with
    /// distribution/berth ratios; `push`: only the chunked push.
    #[arg(value_parser = ["all", "push"])]
    command: String,
    /// The backend of `push`.
    #[arg(long, default_value = "filesystem", value_parser = ["filesystem", "s3", "azure", "garage"])]
    backend: String,
    /// The blob size of the push and pull scenarios.
    #[arg(long, default_value_t = 1024)]
    size_mib: usize,
    /// The chunk size of the chunked push.
    #[arg(long, default_value_t = 16)]
    chunk_mib: usize,
    /// Runs of each scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent uploads of the concurrency scenario.
    #[arg(long, default_value_t = 32)]
    uploads: usize,
    /// Size of each of those uploads.
    #[arg(long, default_value_t = 256)]
    upload_mib: usize,
    /// Tags of the listing scenario.
    #[arg(long, default_value_t = 10_000)]
    tags: usize,
    /// Length of the load scenario.
    #[arg(long, default_value_t = 10)]
    load_seconds: u32,
    /// Scenarios to run (mono, chunked, pull, manifest, rss, pullrss, storecost, quotacost).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Skips the S3 scenarios.
    #[arg(long)]
    skip_s3: bool,
    /// Runs Berth alone (for profiling it without distribution's runs in between).
    #[arg(long)]
    berth_only: bool,
    /// Another berth build (a baseline) to run where distribution would, to see what a
    /// change to Berth is worth with the same alternation that cancels the machine's swings.
    #[arg(long)]
    against_berth: Option<std::path::PathBuf>,
}

fn parse_args() -> Args {
    let c = <Cli as clap::Parser>::parse();
    Args {
        command: c.command,
        backend: c.backend,
        size: c.size_mib << 20,
        chunk: c.chunk_mib << 20,
        runs: c.runs,
        uploads: c.uploads,
        upload_size: c.upload_mib << 20,
        tags: c.tags,
        load_seconds: c.load_seconds,
        skip_s3: c.skip_s3,
        berth_only: c.berth_only,
        against_berth: c.against_berth,
        only: c.only,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// What runs beside Berth.
enum Other {
    Distribution(Distribution),
    /// Another berth build: a baseline for a change to Berth.
    Berth(Berth),
}

impl Other {
    fn url(&self) -> String {
        match self {
            Other::Distribution(d) => format!("http://{}", d.host),
            Other::Berth(b) => b.url.clone(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Other::Distribution(d) => d.pid(),
            Other::Berth(b) => b.pid(),
        }
    }
}

/// Which registry runs beside Berth (from the command line).
#[derive(Clone, Copy)]
enum Beside<'a> {
    Nothing,
    Distribution,
    Berth(&'a std::path::Path),
}

impl<'a> Beside<'a> {
    fn of(a: &'a Args) -> Self {
        match (&a.against_berth, a.berth_only) {
            (Some(bin), _) => Beside::Berth(bin),
            (None, true) => Beside::Nothing,
            (None, false) => Beside::Distribution,
        }
    }

    /// The table's column for the other registry.
    fn column(self) -> String {
        match self {
            Beside::Berth(bin) => format!("baseline berth ({})", bin.display()),
            _ => "distribution 2.8".into(),
        }
    }
}

/// The two registries under test on one storage kind.
struct Pair {
    berth: Berth,
    other: Option<Other>,
    _moto: Option<Moto>,
    _azurite: Option<Azurite>,
    _garage: Option<integration::garage::GarageCluster>,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn start(backend: &str, beside: Beside) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let local = |name: &str| {
            format!(
                "filesystem:\n    rootdirectory: {}/{name}\n",
                dir.path().display()
            )
        };
        let (mut moto, mut azurite, mut garage) = (None, None, None);
        // Garage ignores conditional writes: Berth runs there as the one writer.
        let mut berth_extra = "";
        let (berth_storage, dist_storage) = match backend {
            "filesystem" => (local("berth"), Some(local("dist"))),
            "s3" => {
                let m = Moto::start();
                m.create_bucket("berth");
                m.create_bucket("dist");
                let dist = format!(
                    "s3:\n    region: us-east-1\n    regionendpoint: {}\n    bucket: dist\n    accesskey: test\n    secretkey: test\n    secure: false\n    v4auth: true\n    chunksize: {}\n    rootdirectory: /registry",
                    m.endpoint,
                    16 << 20
                );
                let b = m.storage_yaml("berth");
                moto = Some(m);
                (b, Some(dist))
            }
            "azure" => {
                let az = Azurite::start();
                az.create_container("berth");
                let b = az.storage_yaml("berth");
                azurite = Some(az);
                // distribution 2.8's azure driver builds https://<account>.blob.<realm> URLs only
                // and cannot reach an emulator on a loopback port.
                (b, None)
            }
            "garage" => {
                let g = integration::garage::GarageCluster::start();
                g.create_bucket("berth");
                g.create_bucket("dist");
                let dist = format!(
                    "s3:\n    region: us-east-1\n    regionendpoint: {}\n    bucket: dist\n    accesskey: {}\n    secretkey: {}\n    secure: false\n    v4auth: true\n    forcepathstyle: true\n    chunksize: {}\n    rootdirectory: /registry",
                    g.endpoint,
                    integration::garage::GARAGE_ACCESS_KEY,
                    integration::garage::GARAGE_SECRET_KEY,
                    16 << 20
                );
                let b = g.storage_yaml("berth");
                garage = Some(g);
                berth_extra = "berth:\n  storage:\n    singlewriter: true\n";
                (b, Some(dist))
            }
            other => panic!("unknown backend {other}"),
        };
        let berth_yaml = |storage: &str| {
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  {storage}  delete:\n    enabled: true\n{berth_extra}"
            )
        };
        let berth = Berth::with_config(&berth_yaml(&berth_storage), &[("RUST_LOG", "warn")]);
        let other = match beside {
            Beside::Nothing => None,
            Beside::Distribution => {
                dist_storage.map(|s| Other::Distribution(Distribution::start(&s)))
            }
            // The baseline gets distribution's place in the store: its own root or bucket.
            Beside::Berth(bin) => {
                let storage = match &moto {
                    Some(m) => m.storage_yaml("dist"),
                    None => local("dist"),
                };
                Some(Other::Berth(Berth::with_config_of(
                    bin,
                    &berth_yaml(&storage),
                    &[("RUST_LOG", "warn")],
                )))
            }
        };
        Pair {
            berth,
            other,
            _moto: moto,
            _azurite: azurite,
            _garage: garage,
            _dir: dir,
        }
    }

    fn apis(&self) -> Vec<(&'static str, Api)> {
        let mut v = vec![("berth", Api::new(&self.berth.url))];
        if let Some(o) = &self.other {
            v.push(("other", Api::new(&o.url())));
        }
        v
    }

    /// The process id of the registry `apis` names `who`.
    fn pid(&self, who: &str) -> u32 {
        match (who, &self.other) {
            ("other", Some(o)) => o.pid(),
            _ => self.berth.pid(),
        }
    }
}

/// One row of the final table.
struct Row {
    scenario: String,
    berth: String,
    dist: String,
    ratio: String,
}

fn row(
    scenario: impl Into<String>,
    b: f64,
    d: Option<f64>,
    unit: &str,
    higher_is_better: bool,
) -> Row {
    let fmt = |x: f64| format!("{x:.2} {unit}");
    Row {
        scenario: scenario.into(),
        berth: fmt(b),
        dist: d.map_or("n/a".into(), fmt),
        ratio: d.map_or("n/a".into(), |d| {
            format!("{:.2}x", if higher_is_better { b / d } else { d / b })
        }),
    }
}

/// CPU seconds (user + system) a process has used, its ended threads included.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime, in USER_HZ, which Linux fixes at 100 for /proc on every architecture.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// Medians of one alternated scenario: the measurement, and the CPU seconds each run took in
/// the registry's process and in this one (the client).
struct Alternated {
    berth: f64,
    other: Option<f64>,
    berth_cpu: (f64, f64),
    other_cpu: Option<(f64, f64)>,
}

impl Alternated {
    fn pair(&self) -> (f64, Option<f64>) {
        (self.berth, self.other)
    }
}

/// Alternates the registries `runs` times; `op` returns a measurement for one run.
async fn alternate<F, Fut>(pair: &Pair, runs: usize, mut op: F) -> Alternated
where
    F: FnMut(&'static str, Api, usize) -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let (mut b, mut d) = (Vec::new(), Vec::new());
    let (mut b_cpu, mut d_cpu) = (Vec::new(), Vec::new());
    // One untimed run each first: the first run pays for things neither registry does in a
    // steady state (memory touched for the first time by this VM, cold page cache on a pull).
    for (who, api) in pair.apis() {
        let v = op(who, api, runs).await;
        eprintln!("  warm-up {who}: {v:.3}");
    }
    for run in 0..runs {
        let mut apis = pair.apis();
        // Every other run the other registry goes first: neither always follows the other's
        // writes (or always runs right after the warm-up).
        if run % 2 == 1 {
            apis.reverse();
        }
        for (who, api) in apis {
            // Flush the previous run's dirty pages so one registry's writes don't throttle the next.
            let _ = Command::new("sync").status();
            let server = pair.pid(who).to_string();
            // The closure's synchronous part (preparing the blob and its digest) runs first,
            // outside the CPU counted for the run.
            let run_op = op(who, api, run);
            let before = (cpu_seconds(&server), cpu_seconds("self"));
            let v = run_op.await;
            let cpu = (
                cpu_seconds(&server) - before.0,
                cpu_seconds("self") - before.1,
            );
            eprintln!(
                "  run {run} {who}: {v:.3} (CPU s: server {:.2}, client {:.2})",
                cpu.0, cpu.1
            );
            if who == "berth" {
                b.push(v);
                b_cpu.push(cpu);
            } else {
                d.push(v);
                d_cpu.push(cpu);
            }
        }
    }
    let cpu_median = |v: Vec<(f64, f64)>| {
        (
            median(v.iter().map(|c| c.0).collect()),
            median(v.iter().map(|c| c.1).collect()),
        )
    };
    Alternated {
        berth: median(b),
        other: (!d.is_empty()).then(|| median(d)),
        berth_cpu: cpu_median(b_cpu),
        other_cpu: (!d_cpu.is_empty()).then(|| cpu_median(d_cpu)),
    }
}

/// The rows of a push of `mib` MiB: the rates and their ratio, Berth's rate as a share of the
/// SHA-256 ceiling (the `share` row), the CPU each registry and the client spent per GiB, and
/// what that CPU allows on this machine's cores at best (every core busy, nothing else
/// running), as a share of the ceiling. When the bound is below a target, the target cannot be
/// met here.
fn push_rows(
    rows: &mut Vec<Row>,
    scenario: String,
    share: &str,
    alt: &Alternated,
    mib: f64,
    sha_rate: f64,
) {
    rows.push(row(scenario, alt.berth, alt.other, "MiB/s", true));
    rows.push(Row {
        scenario: share.into(),
        berth: format!("{:.0} %", alt.berth / sha_rate * 100.0),
        dist: "".into(),
        ratio: "".into(),
    });
    let gib = mib / 1024.0;
    let per_gib = |c: (f64, f64)| format!("{:.2} + {:.2}", c.0 / gib, c.1 / gib);
    rows.push(Row {
        scenario: "  CPU core-seconds per GiB, server + client".into(),
        berth: per_gib(alt.berth_cpu),
        dist: alt.other_cpu.map_or(String::new(), per_gib),
        ratio: "".into(),
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total = alt.berth_cpu.0 + alt.berth_cpu.1;
    // A run shorter than a few clock ticks (the smoke test's) has no CPU figure to divide by.
    let bound = if total > 0.0 {
        let bound_mib = cores / (total / gib) * 1024.0;
        format!("{:.0} %", bound_mib / sha_rate * 100.0)
    } else {
        "n/a".into()
    };
    rows.push(Row {
        scenario: format!("  Berth's bound on {cores} cores / SHA-256 ceiling"),
        berth: bound,
        dist: "".into(),
        ratio: "".into(),
    });
}

/// Random bytes beyond the blob size, so that every blob can start at its own offset.
const BLOB_SLACK: usize = 64 << 10;

/// Random data from which every run's blob is cut without copying: a fresh 1 GiB copy per run
/// made the VM fault in new memory between runs (seconds each) and added noise to the next run.
fn random_base(size: usize) -> Bytes {
    let mut base = vec![0u8; size + BLOB_SLACK];
    rand::Rng::fill(&mut rand::rng(), &mut base[..]);
    Bytes::from(base)
}

/// A fresh blob per (registry, run): a window of `base` at an offset of its own.
fn blob_for(base: &Bytes, who: &str, run: usize) -> Bytes {
    let offset = 8 * (run * 2 + usize::from(who != "berth"));
    assert!(
        offset < BLOB_SLACK,
        "run number {run} too large for the blob slack"
    );
    base.slice(offset..offset + base.len() - BLOB_SLACK)
}

/// Chunked push of a fresh blob per run on both registries; medians in MiB/s.
async fn chunked_rates(
    pair: &Pair,
    runs: usize,
    base: &Bytes,
    chunk: usize,
    prefix: &str,
    salt: usize,
) -> Alternated {
    let mib = (base.len() - BLOB_SLACK) as f64 / 1048576.0;
    alternate(pair, runs, |who, api, run| {
        let data = blob_for(base, who, run + salt);
        let repo = format!("bench/{prefix}{run}");
        let digest = sha256(&data);
        async move {
            let start = Instant::now();
            api.chunked_push_of(&[], &repo, &data, chunk, &digest).await;
            mib / start.elapsed().as_secs_f64()
        }
    })
    .await
}

/// POST, then one PUT carrying the whole blob: the monolithic upload both registries implement
/// (distribution 2.8 has no single-POST upload).
async fn monolithic_push(api: &Api, repo: &str, data: &Bytes, d: &str) -> f64 {
    let start = Instant::now();
    let loc = api.start_upload(repo).await;
    let r = api
        .client
        .put(api.url(&Api::digest_url(&loc, d)))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "monolithic push: {:?}", r.text().await);
    start.elapsed().as_secs_f64()
}

/// Downloads a blob (following a redirect to the store), returning seconds and the bytes Berth served.
async fn pull(api: &Api, repo: &str, digest: &str) -> (f64, u64) {
    let start = Instant::now();
    let r = api
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            None,
        )
        .await;
    let (mut stream, through) = match r.status().as_u16() {
        307 => {
            let url = header(&r, "location").unwrap();
            (
                reqwest::get(url).await.unwrap().bytes_stream().boxed(),
                false,
            )
        }
        200 => (r.bytes_stream().boxed(), true),
        s => panic!("pull: {s}"),
    };
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        n += c.unwrap().len() as u64;
    }
    (start.elapsed().as_secs_f64(), if through { n } else { 0 })
}

/// Peak resident memory (VmHWM) of a process, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `uploads` concurrent streamed PATCH uploads of `size` bytes each (as docker sends them).
async fn concurrent_uploads(api: &Api, uploads: usize, size: usize, salt: u8) {
    let chunk = Bytes::from(vec![salt; 1 << 20]);
    let tasks: Vec<_> = (0..uploads)
        .map(|i| {
            let (api, chunk) = (api.clone(), chunk.clone());
            tokio::spawn(async move {
                let repo = format!("rss/u{i}");
                let loc = api.start_upload(&repo).await;
                let mut first = chunk.to_vec();
                first[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let first = Bytes::from(first);
                let mut hasher = sha2::Sha256::new();
                hasher.update(&first);
                for _ in 1..size >> 20 {
                    hasher.update(&chunk);
                }
                let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
                let n = size >> 20;
                let body = futures::stream::iter((0..n).map(move |k| {
                    Ok::<_, std::io::Error>(if k == 0 { first.clone() } else { chunk.clone() })
                }));
                let r = api
                    .client
                    .patch(api.url(&loc))
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let loc = header(&r, "location").unwrap();
                let r = api
                    .send(Method::PUT, &Api::digest_url(&loc, &digest), &[], None)
                    .await;
                assert_eq!(r.status(), 201);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn run_local(a: &Args, rows: &mut Vec<Row>) {
    let mib = a.size as f64 / 1048576.0;
    // The ceiling: single-core SHA-256 over the same amount of memory.
    let base = random_base(a.size);
    // Best of three: the ceiling should not be lowered by a noisy neighbour.
    let sha_rate = (0..3)
        .map(|_| {
            let start = Instant::now();
            let _ = sha2::Sha256::digest(&base[..a.size]);
            mib / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max);
    rows.push(Row {
        scenario: "single-core SHA-256 (ceiling)".into(),
        berth: format!("{sha_rate:.0} MiB/s"),
        dist: "".into(),
        ratio: "".into(),
    });

    let pair = Pair::start("filesystem", Beside::of(a));
    if a.wants("mono") {
        eprintln!("monolithic push");
        let alt =
            alternate(&pair, a.runs, |who, api, run| {
                let data = blob_for(&base, who, run);
                // Hashed here, before the run's CPU is counted: the client's cost is its sending.
                let digest = sha256(&data);
                async move {
                    mib / monolithic_push(&api, &format!("bench/mono{run}"), &data, &digest).await
                }
            })
            .await;
        push_rows(
            rows,
            format!("local monolithic push {mib:.0} MiB"),
            "  Berth push / SHA-256 ceiling",
            &alt,
            mib,
            sha_rate,
        );
    }

    if a.wants("chunked") {
        eprintln!("chunked push");
        let alt = chunked_rates(&pair, a.runs, &base, a.chunk, "chunk", 100).await;
        push_rows(
            rows,
            format!(
                "local chunked push {mib:.0} MiB in {} MiB PATCHes",
                a.chunk >> 20
            ),
            "  Berth chunked push / SHA-256 ceiling",
            &alt,
            mib,
            sha_rate,
        );
    }

    if a.wants("pull") {
        eprintln!("pull");
        for (who, api) in pair.apis() {
            let data = blob_for(&base, who, 1000);
            monolithic_push(&api, "bench/pull", &data, &sha256(&data)).await;
        }
        let (b, d) = alternate(&pair, a.runs, |who, api, _run| {
            let digest = sha256(&blob_for(&base, who, 1000));
            async move { mib / pull(&api, "bench/pull", &digest).await.0 }
        })
        .await
        .pair();
        rows.push(row(format!("local pull {mib:.0} MiB"), b, d, "MiB/s", true));
    }

    if a.wants("manifest") {
        manifest_and_tags(a, &pair, rows).await;
    }
    if a.wants("rss") {
        // Fresh processes: a peak is a high-water mark, and pulls before this one would leave
        // mapped page-cache pages of the pulled blob in Berth's.
        drop(pair);
        peak_rss(a, &Pair::start("filesystem", Beside::of(a)), rows).await;
    }
    if a.wants("pullrss") {
        peak_rss_of_pulls(&Pair::start("filesystem", Beside::of(a)), &base, rows).await;
    }
}

/// Peak resident memory of fresh processes serving four concurrent pulls of one blob of the
/// benchmark's size from local disk (mapped page-cache pages count, as they do in a pod's
/// working set).
async fn peak_rss_of_pulls(pair: &Pair, base: &Bytes, rows: &mut Vec<Row>) {
    eprintln!("peak RSS under 4 concurrent pulls");
    let mut rss = Vec::new();
    let mut rates = Vec::new();
    for (who, api) in pair.apis() {
        let data = blob_for(base, who, 60);
        let digest = sha256(&data);
        monolithic_push(&api, "bench/pullrss", &data, &digest).await;
        let mib = data.len() as f64 / 1048576.0;
        drop(data);
        // A first pull warms the page cache: Berth writes blobs with O_DIRECT, distribution
        // through the cache, and cold reads would measure the disk, not the registries.
        pull(&api, "bench/pullrss", &digest).await;
        let started = Instant::now();
        let pulls = (0..4).map(|_| pull(&api, "bench/pullrss", &digest));
        futures::future::join_all(pulls).await;
        rates.push(4.0 * mib / started.elapsed().as_secs_f64());
        rss.push(peak_rss_mib(pair.pid(who)));
    }
    rows.push(row(
        "peak RSS, 4 concurrent pulls of one blob",
        rss[0],
        rss.get(1).copied(),
        "MiB",
        false,
    ));
    rows.push(row(
        "  those pulls together",
        rates[0],
        rates.get(1).copied(),
        "MiB/s",
        true,
    ));
}

/// Manifest GET by tag under wrk, then a tags list of `a.tags` tags.
async fn manifest_and_tags(a: &Args, pair: &Pair, rows: &mut Vec<Row>) {
    eprintln!("manifest GET under load and tags list");
    let mut results = Vec::new();
    for (who, api) in pair.apis() {
        let manifest = api.image_manifest("bench/tags", who).await;
        for i in 0..a.tags {
            let r = api
                .put_manifest(
                    "bench/tags",
                    &format!("t{i:05}"),
                    "application/vnd.oci.image.manifest.v1+json",
                    &manifest,
                )
                .await;
            assert_eq!(r.status(), 201);
        }
        let (rps, p50, p99) =
            integration::load::wrk(&api.url("/v2/bench/tags/manifests/t00000"), a.load_seconds);
        let mut list_ms = Vec::new();
        for _ in 0..a.runs.max(3) {
            let start = Instant::now();
            let r = api
                .send(Method::GET, "/v2/bench/tags/tags/list", &[], None)
                .await;
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["tags"].as_array().unwrap().len(), a.tags);
            list_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        results.push((who, rps, p50, p99, median(list_ms)));
    }
    let get = |i: usize| results.get(i).copied();
    let (bb, dd) = (get(0).unwrap(), get(1));
    rows.push(row(
        "manifest GET by tag, 64 connections",
        bb.1,
        dd.map(|d| d.1),
        "req/s",
        true,
    ));
    rows.push(row("  p50 latency", bb.2, dd.map(|d| d.2), "ms", false));
    rows.push(row("  p99 latency", bb.3, dd.map(|d| d.3), "ms", false));
    rows.push(row(
        format!("tags list of {} tags", a.tags),
        bb.4,
        dd.map(|d| d.4),
        "ms",
        false,
    ));
}

/// Peak RSS of each registry under `a.uploads` concurrent streamed uploads.
async fn peak_rss(a: &Args, pair: &Pair, rows: &mut Vec<Row>) {
    eprintln!(
        "peak RSS under {} concurrent {} MiB uploads",
        a.uploads,
        a.upload_size >> 20
    );
    let mut rss = Vec::new();
    for (i, (who, api)) in pair.apis().into_iter().enumerate() {
        concurrent_uploads(&api, a.uploads, a.upload_size, i as u8 + 1).await;
        rss.push(peak_rss_mib(pair.pid(who)));
    }
    rows.push(row(
        format!(
            "peak RSS, {} concurrent {} MiB uploads",
            a.uploads,
            a.upload_size >> 20
        ),
        rss[0],
        rss.get(1).copied(),
        "MiB",
        false,
    ));
}

async fn run_s3(a: &Args, rows: &mut Vec<Row>) {
    let mib = a.size as f64 / 1048576.0;
    let base = random_base(a.size);
    let pair = Pair::start("s3", Beside::of(a));
    eprintln!("s3 chunked push");
    let (b, d) = chunked_rates(&pair, a.runs, &base, a.chunk, "s3", 0)
        .await
        .pair();
    rows.push(row(
        format!("S3 (moto) chunked push {mib:.0} MiB"),
        b,
        d,
        "MiB/s",
        true,
    ));
    eprintln!("s3 pull");
    let mut through = 0u64;
    let (b, d) = {
        let (mut bv, mut dv) = (Vec::new(), Vec::new());
        for run in 0..a.runs {
            for (who, api) in pair.apis() {
                let digest = sha256(&blob_for(&base, who, 0));
                let (t, bytes) = pull(&api, "bench/s30", &digest).await;
                if who == "berth" {
                    through += bytes;
                    bv.push(mib / t);
                } else {
                    dv.push(mib / t);
                }
                eprintln!("  run {run} {who}: {:.1} MiB/s", mib / t);
            }
        }
        (
            median(bv),
            if dv.is_empty() {
                None
            } else {
                Some(median(dv))
            },
        )
    };
    rows.push(row(
        format!("S3 (moto) pull {mib:.0} MiB"),
        b,
        d,
        "MiB/s",
        true,
    ));
    rows.push(Row {
        scenario: "  blob bytes through Berth on S3 pulls".into(),
        berth: format!("{through}"),
        dist: "".into(),
        ratio: "".into(),
    });
}

/// Added to every store request to count sequential round trips: large beside moto's own
/// swings (a few hundred milliseconds per push on this machine), so that they blur the count
/// by one or two at most.
const STORE_LATENCY_MS: u64 = 100;

/// Store requests and sequential store round trips per operation, each registry on its own
/// bucket behind its own fault proxy: `--runs` pairs of runs, one without added latency and
/// one with [`STORE_LATENCY_MS`] per store request; requests from the first run, round trips
/// the median over the pairs.
fn run_store_cost(a: &Args, rows: &mut Vec<Row>) {
    use integration::fault_proxy::{FaultProxy, Faults};
    use integration::store_cost::{OperationCosts, measure, sequential_round_trips};
    let latency = std::time::Duration::from_millis(STORE_LATENCY_MS);
    let beside = Beside::of(a);
    let work = tempfile::tempdir().unwrap();
    let mut runs: Vec<(OperationCosts, Option<OperationCosts>)> = Vec::new();
    let plan = (0..a.runs.max(1)).flat_map(|_| [std::time::Duration::ZERO, latency]);
    for (i, added) in plan.enumerate() {
        eprintln!("store cost, {} ms per store request", added.as_millis());
        let moto = Moto::start();
        moto.create_bucket("berth");
        moto.create_bucket("dist");
        let faults = Faults {
            latency: added,
            ..Faults::default()
        };
        let (pb, po) = (
            FaultProxy::start(&moto.endpoint, faults.clone()),
            FaultProxy::start(&moto.endpoint, faults),
        );
        let berth_yaml = |bucket: &str, proxy: &FaultProxy| {
            format!(
                "version: 0.1\nstorage:\n  {}\n",
                moto.storage_yaml(bucket)
                    .replace(&moto.endpoint, &proxy.endpoint)
            )
        };
        let berth = Berth::with_config(&berth_yaml("berth", &pb), &[("RUST_LOG", "warn")]);
        let berth_costs = measure(&berth.host, &pb, work.path(), 900 + i as u64);
        let other_costs = match beside {
            Beside::Nothing => None,
            Beside::Distribution => {
                let d = Distribution::start(&format!(
                    "s3:\n    region: us-east-1\n    regionendpoint: {}\n    bucket: dist\n    accesskey: test\n    secretkey: test\n    secure: false\n    v4auth: true\n    chunksize: {}\n    rootdirectory: /registry",
                    po.endpoint,
                    16 << 20
                ));
                Some(measure(&d.host, &po, work.path(), 900 + i as u64))
            }
            Beside::Berth(bin) => {
                let b =
                    Berth::with_config_of(bin, &berth_yaml("dist", &po), &[("RUST_LOG", "warn")]);
                Some(measure(&b.host, &po, work.path(), 900 + i as u64))
            }
        };
        runs.push((berth_costs, other_costs));
    }
    type Pick = fn(&OperationCosts) -> integration::store_cost::Cost;
    let ops: [(&str, Pick); 4] = [
        ("push of a 3-layer image (30 MiB, 5 MiB, 10 KiB)", |c| {
            c.push
        }),
        ("re-push, every blob there", |c| c.repush),
        ("pull (besides presigned GETs)", |c| c.pull),
        ("manifest GET by tag", |c| c.manifest_get),
    ];
    for (name, op) in ops {
        let (b, o) = &runs[0];
        rows.push(row(
            format!("S3 store requests: {name}"),
            op(b).requests as f64,
            o.as_ref().map(|o| op(o).requests as f64),
            "requests",
            false,
        ));
    }
    for (name, op) in ops {
        let trips =
            |pick: fn(&(OperationCosts, Option<OperationCosts>)) -> Option<OperationCosts>| {
                let each: Option<Vec<f64>> = runs
                    .chunks(2)
                    .filter(|pair| pair.len() == 2)
                    .map(|pair| {
                        Some(sequential_round_trips(
                            op(&pick(&pair[0])?),
                            op(&pick(&pair[1])?),
                            latency,
                        ))
                    })
                    .collect();
                Some(median(each?))
            };
        let b = trips(|r| Some(r.0)).unwrap_or(0.0);
        rows.push(row(
            format!("  sequential store round trips (+{STORE_LATENCY_MS} ms each, median): {name}"),
            b,
            trips(|r| r.1),
            "trips",
            false,
        ));
    }
}

/// What quota accounting adds to a push on S3 (moto behind the fault proxy): the same build
/// with and without a quota covering the repository, side by side, the first push into a
/// repository (its ledger is built) and the next (the steady state), with no added latency
/// and with STORE_LATENCY_MS per store request.
fn run_quota_cost(a: &Args) -> Vec<Row> {
    use integration::fault_proxy::{FaultProxy, Faults};
    use integration::store_cost::{Cost, push_cost, sequential_round_trips};
    let latency = std::time::Duration::from_millis(STORE_LATENCY_MS);
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.yml");
    std::fs::write(
        &policy,
        "quotas:\n  - repository: 'cost/*'\n    bytes: 1TiB\n",
    )
    .unwrap();
    // [run][latency][with quota][first, next]
    let mut costs: Vec<[[[Cost; 2]; 2]; 2]> = Vec::new();
    let mut seed = 7000;
    for _ in 0..a.runs.max(1) {
        let mut run = [[[Cost::default(); 2]; 2]; 2];
        for (li, added) in [std::time::Duration::ZERO, latency].into_iter().enumerate() {
            eprintln!("quota cost, {} ms per store request", added.as_millis());
            let moto = Moto::start();
            for (qi, with_quota) in [false, true].into_iter().enumerate() {
                let bucket = format!("quota{qi}");
                moto.create_bucket(&bucket);
                let proxy = FaultProxy::start(
                    &moto.endpoint,
                    Faults {
                        latency: added,
                        ..Faults::default()
                    },
                );
                let mut yaml = format!(
                    "version: 0.1\nstorage:\n  {}\n",
                    moto.storage_yaml(&bucket)
                        .replace(&moto.endpoint, &proxy.endpoint)
                );
                if with_quota {
                    yaml.push_str(&format!(
                        "berth:\n  policy:\n    file: {}\n",
                        policy.display()
                    ));
                }
                let berth = Berth::with_config(&yaml, &[("RUST_LOG", "warn")]);
                for cost in run[li][qi].iter_mut() {
                    seed += 1;
                    *cost = push_cost(&berth.host, &proxy, work.path(), seed, "cost/app");
                }
            }
        }
        costs.push(run);
    }
    let mut rows = Vec::new();
    for (slot, name) in [(0, "first push into a repository"), (1, "next push")] {
        let (without, with) = (costs[0][0][0][slot], costs[0][0][1][slot]);
        rows.push(row(
            format!("S3 store requests, {name}: with a quota / without"),
            with.requests as f64,
            Some(without.requests as f64),
            "requests",
            false,
        ));
        let trips = |qi: usize| {
            median(
                costs
                    .iter()
                    .map(|r| sequential_round_trips(r[0][qi][slot], r[1][qi][slot], latency))
                    .collect(),
            )
        };
        rows.push(row(
            format!("  sequential store round trips (+{STORE_LATENCY_MS} ms each, median), {name}"),
            trips(1),
            Some(trips(0)),
            "trips",
            false,
        ));
        let ms = |qi: usize| {
            median(
                costs
                    .iter()
                    .map(|r| r[0][qi][slot].took.as_secs_f64() * 1000.0)
                    .collect(),
            )
        };
        rows.push(row(
            format!("  push time, no added latency (median), {name}"),
            ms(1),
            Some(ms(0)),
            "ms",
            false,
        ));
    }
    rows
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let mut rows = Vec::new();
    if a.command == "push" {
        let pair = Pair::start(&a.backend, Beside::of(&a));
        let base = random_base(a.size);
        let mib = a.size as f64 / 1048576.0;
        let (b, d) = chunked_rates(&pair, a.runs, &base, a.chunk, "push", 0)
            .await
            .pair();
        rows.push(row(
            format!(
                "{} chunked push {mib:.0} MiB in {} MiB PATCHes",
                a.backend,
                a.chunk >> 20
            ),
            b,
            d,
            "MiB/s",
            true,
        ));
    } else {
        run_local(&a, &mut rows).await;
        if !a.skip_s3 {
            run_s3(&a, &mut rows).await;
        }
        if a.wants("storecost") {
            let a = a.clone();
            let mut cost_rows = Vec::new();
            cost_rows = tokio::task::spawn_blocking(move || {
                run_store_cost(&a, &mut cost_rows);
                cost_rows
            })
            .await
            .unwrap();
            rows.extend(cost_rows);
        }
    }
    if a.wants("quotacost") {
        let a = a.clone();
        let quota_rows = tokio::task::spawn_blocking(move || run_quota_cost(&a))
            .await
            .unwrap();
        print_table("quota accounting", "with a quota", "without", &quota_rows);
        println!();
    }
    let column = Beside::of(&a).column();
    print_table("scenario", "Berth", &column, &rows);
}

/// A markdown table of `rows` under the given column heads.
fn print_table(first: &str, ours: &str, theirs: &str, rows: &[Row]) {
    println!("| {first} | {ours} | {theirs} | {ours} vs {theirs} |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.scenario, r.berth, r.dist, r.ratio
        );
    }
}
