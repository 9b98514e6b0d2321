//! The attacks SECURITY.md defends against, at full size, against Berth and (optionally) a
//! baseline build side by side: what each holds and how `/healthz` answers meanwhile.
//!
//! `berth-flood [--against-berth PATH] [--connections 19000] [--slow 500] [--logins 16]
//! [--seconds 10]`, with BERTH_BIN pointing at a release build. Attackers connect from
//! 127.0.0.2 and .3, the measuring client from 127.0.0.1. The test suite runs short versions
//! of the same attacks (tests/exhaustion.rs, tests/logins.rs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::Berth;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

struct Args {
    against: Option<PathBuf>,
    connections: usize,
    slow: usize,
    logins: usize,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        against: None,
        connections: 19_000,
        slow: 500,
        logins: 16,
        seconds: 10,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--against-berth" => a.against = Some(v.into()),
            "--connections" => a.connections = v.parse().unwrap(),
            "--slow" => a.slow = v.parse().unwrap(),
            "--logins" => a.logins = v.parse().unwrap(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            other => panic!("unknown flag {other}; usage in the file's header"),
        }
    }
    a
}

/// Raises this process's descriptor limit to the hard one (the attackers need thousands).
fn raise_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// `/healthz` from 127.0.0.1 on a fresh connection `n` times, 100 ms apart: p50 and worst,
/// and how many got no answer within 10 s.
async fn healthz(url: &str, n: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut unanswered = 0;
    for _ in 0..n {
        let client = reqwest::Client::builder()
            .local_address("127.0.0.1".parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let started = Instant::now();
        match client.get(format!("{url}/healthz")).send().await {
            Ok(r) if r.status() == 200 => times.push(started.elapsed()),
            _ => {
                unanswered += 1;
                times.push(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1], unanswered)
}

fn start(binary: &Path, dir: &Path, extra: &str) -> Berth {
    Berth::with_config_of(
        binary,
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n{extra}",
            dir.display()
        ),
        &[("RUST_LOG", "error")],
    )
}

/// One build under the connection flood; returns its table rows' values.
async fn connection_flood(binary: &Path, a: &Args) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let berth = start(binary, dir.path(), "");
    let addr: SocketAddr = berth.host.parse().unwrap();
    let baseline = descriptors(berth.pid());
    let mut held = Vec::new();
    let mut refused_at_connect = 0;
    for _ in 0..a.connections {
        match connect_from("127.0.0.2", addr).await {
            Ok(mut c) => {
                let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\n").await;
                held.push(c);
            }
            Err(_) => refused_at_connect += 1,
        }
    }
    let mut slow = Vec::new();
    for _ in 0..a.slow {
        if let Ok(mut c) = connect_from("127.0.0.3", addr).await {
            slow.push(tokio::spawn(async move {
                loop {
                    if c.write_all(b"a").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
    }
    let peak = descriptors(berth.pid());
    let (p50, worst, unanswered) = healthz(&berth.url, 20).await;
    // The attackers keep their sockets; what does the server still hold after 30 s?
    tokio::time::sleep(Duration::from_secs(30)).await;
    let later = descriptors(berth.pid());
    let (p50_later, _, _) = healthz(&berth.url, 5).await;
    for s in slow {
        s.abort();
    }
    drop(held);
    vec![
        format!("{}", peak - baseline.min(peak)),
        format!("{:.1} ms / {:.1} ms", ms(p50), ms(worst)),
        format!("{unanswered} of 20"),
        format!("{}", later.saturating_sub(baseline)),
        format!("{:.1} ms", ms(p50_later)),
        format!("{refused_at_connect}"),
    ]
}

/// One build under the login flood (bcrypt cost 12).
async fn login_flood(binary: &Path, a: &Args) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(
        &users,
        format!("alice:{}\n", bcrypt::hash("right", 12).unwrap()),
    )
    .unwrap();
    let berth = start(
        binary,
        &dir.path().join("data"),
        &format!(
            "auth:\n  htpasswd:\n    realm: flood\n    path: {}\n",
            users.display()
        ),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..a.logins {
        let client = reqwest::Client::builder()
            .local_address(
                format!("127.0.0.{}", 2 + i)
                    .parse::<std::net::IpAddr>()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let (url, stop) = (format!("{}/v2/", berth.url), stop.clone());
        attackers.push(tokio::spawn(async move {
            let mut answered = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client
                    .get(&url)
                    .basic_auth("alice", Some("wrong"))
                    .send()
                    .await
                    .is_ok()
                {
                    answered += 1;
                }
            }
            answered
        }));
    }
    let flood_started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = (a.seconds * 10).max(10) as usize / 2;
    let (p50, worst, unanswered) = healthz(&berth.url, samples).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood_time = flood_started.elapsed();
    let mut answered = 0;
    for t in attackers {
        // Each finishes the attempt it has in flight.
        answered += tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .map_or(0, |r| r.unwrap_or(0));
    }
    vec![
        format!("{:.1} ms / {:.1} ms", ms(p50), ms(worst)),
        format!("{unanswered} of {samples}"),
        format!(
            "{answered} in {:.0} s ({:.0}/s)",
            flood_time.as_secs_f64(),
            answered as f64 / flood_time.as_secs_f64()
        ),
    ]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let limit = raise_limit();
    eprintln!("descriptor limit of this process: {limit}");
    let mut builds = vec![("Berth".to_owned(), integration::server::berth_binary())];
    if let Some(p) = &a.against {
        builds.push((format!("baseline ({})", p.display()), p.clone()));
    }
    let mut conn = Vec::new();
    let mut login = Vec::new();
    for (name, bin) in &builds {
        eprintln!("{name}: connection flood");
        conn.push(connection_flood(bin, &a).await);
        eprintln!("{name}: login flood");
        login.push(login_flood(bin, &a).await);
    }
    let names: Vec<&str> = builds.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "| {} + {} slow connections | {} |",
        a.connections,
        a.slow,
        names.join(" | ")
    );
    println!("| --- |{}", " --- |".repeat(names.len()));
    let labels = [
        "descriptors held at the peak",
        "/healthz p50 / worst during",
        "/healthz unanswered within 10 s",
        "descriptors held 30 s later (attackers still connected)",
        "/healthz p50 30 s later",
        "attacker connects refused by the kernel",
    ];
    for (i, l) in labels.iter().enumerate() {
        let cells: Vec<&str> = conn.iter().map(|c| c[i].as_str()).collect();
        println!("| {l} | {} |", cells.join(" | "));
    }
    println!();
    println!(
        "| {} clients, wrong passwords, bcrypt cost 12, while {} /healthz samples are taken | {} |",
        a.logins,
        (a.seconds * 10).max(10) / 2,
        names.join(" | ")
    );
    println!("| --- |{}", " --- |".repeat(names.len()));
    let labels = [
        "/healthz p50 / worst",
        "/healthz unanswered within 10 s",
        "login attempts answered",
    ];
    for (i, l) in labels.iter().enumerate() {
        let cells: Vec<&str> = login.iter().map(|c| c[i].as_str()).collect();
        println!("| {l} | {} |", cells.join(" | "));
    }
}
