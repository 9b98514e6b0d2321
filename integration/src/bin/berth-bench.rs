//! Benchmarks berth beside CNCF distribution 2.8 on the same storage, alternating the two.
//!
//! `berth-bench push --backend s3 --size-mib 1024 --chunk-mib 16 --runs 3`
//! Prints medians and the ratio distribution/berth (above 1 means berth is faster).
//! Start it with BERTH_BIN pointing at a release build of berth.

use std::time::Instant;

use bytes::Bytes;
use integration::Berth;
use integration::distribution::Distribution;
use integration::emulators::{Azurite, Moto};
use integration::http::Api;

struct Args {
    backend: String,
    size: usize,
    chunk: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        backend: "filesystem".into(),
        size: 1 << 30,
        chunk: 16 << 20,
        runs: 3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    match it.next().map(String::as_str) {
        Some("push") => {}
        _ => {
            eprintln!(
                "usage: berth-bench push [--backend filesystem|s3|azure] [--size-mib N] [--chunk-mib N] [--runs N]"
            );
            std::process::exit(2);
        }
    }
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => a.backend = v.clone(),
            "--size-mib" => a.size = v.parse::<usize>().unwrap() << 20,
            "--chunk-mib" => a.chunk = v.parse::<usize>().unwrap() << 20,
            "--runs" => a.runs = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Chunked push of `data` in `chunk`-sized PATCHes; returns seconds.
async fn chunked_push(api: &Api, repo: &str, data: &Bytes, chunk: usize) -> f64 {
    let start = Instant::now();
    api.chunked_push(&[], repo, data, chunk).await;
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().unwrap();
    let (_moto, _azurite);
    let (berth_storage, dist_storage): (String, Option<String>) = match args.backend.as_str() {
        "filesystem" => (
            format!(
                "filesystem:\n    rootdirectory: {}/berth\n",
                dir.path().display()
            ),
            Some(format!(
                "filesystem:\n    rootdirectory: {}/dist",
                dir.path().display()
            )),
        ),
        "s3" => {
            let moto = Moto::start();
            moto.create_bucket("berth");
            moto.create_bucket("dist");
            let dist = format!(
                "s3:\n    region: us-east-1\n    regionendpoint: {}\n    bucket: dist\n    accesskey: test\n    secretkey: test\n    secure: false\n    v4auth: true\n    chunksize: {}\n    rootdirectory: /registry",
                moto.endpoint,
                16 << 20
            );
            let b = moto.storage_yaml("berth");
            _moto = moto;
            (b, Some(dist))
        }
        "azure" => {
            let azurite = Azurite::start();
            azurite.create_container("berth");
            let b = azurite.storage_yaml("berth");
            _azurite = azurite;
            // distribution 2.8's azure driver builds https://<account>.blob.<realm> URLs only and
            // cannot reach an emulator on a loopback port.
            (b, None)
        }
        other => panic!("unknown backend {other}"),
    };
    let berth = Berth::with_config(
        &format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  {berth_storage}"),
        &[],
    );
    let dist = dist_storage.map(|s| Distribution::start(&s));
    let berth_api = Api::new(&berth.url);
    let dist_api = dist
        .as_ref()
        .map(|d| Api::new(&format!("http://{}", d.host)));

    let mut base = vec![0u8; args.size];
    rand::Rng::fill(&mut rand::rng(), &mut base[..]);
    let (mut tb, mut td) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        // A different first byte per push: every push stores a new blob.
        for (who, api, times) in [
            ("berth", Some(&berth_api), &mut tb),
            ("distribution", dist_api.as_ref(), &mut td),
        ] {
            let Some(api) = api else { continue };
            base[0] = (run * 2 + usize::from(who == "distribution")) as u8;
            let data = Bytes::from(base.clone());
            let t = chunked_push(api, &format!("bench/{who}{run}"), &data, args.chunk).await;
            eprintln!(
                "run {run} {who}: {t:.2}s ({:.0} MiB/s)",
                args.size as f64 / 1048576.0 / t
            );
            times.push(t);
        }
    }
    let mib = args.size as f64 / 1048576.0;
    let (mb, md) = (
        median(tb),
        if td.is_empty() { f64::NAN } else { median(td) },
    );
    println!("| backend | operation | berth median | distribution median | distribution/berth |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {} | chunked push {} MiB in {} MiB PATCHes, {} runs | {mb:.2} s ({:.0} MiB/s) | {} | {} |",
        args.backend,
        mib,
        args.chunk >> 20,
        args.runs,
        mib / mb,
        if md.is_nan() {
            "n/a".into()
        } else {
            format!("{md:.2} s ({:.0} MiB/s)", mib / md)
        },
        if md.is_nan() {
            "n/a".into()
        } else {
            format!("{:.2}x", md / mb)
        },
    );
}
