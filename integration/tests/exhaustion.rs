//! Clients that hold connections and send nothing, or a byte at a time, or read nothing, or
//! go quiet in the middle of an upload: none of them keeps a descriptor for long, and a normal
//! client's pushes and `/healthz` keep answering in their usual time meanwhile. Attackers
//! connect from other loopback addresses (127.0.0.2, .3) than the normal client (127.0.0.1),
//! as they would from other hosts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration::Berth;
use integration::http::{Api, header};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Open descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// A Berth on local disk with `berth.connections` set to `limits` (YAML, indented by four).
fn berth(root: &std::path::Path, limits: &str) -> Berth {
    Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\nberth:\n  connections:\n{limits}",
            root.display()
        ),
        &[],
    )
}

/// Whether the server has closed `conn` (a read ends or fails) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The value of a labelled counter in Prometheus text.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_cut_off_while_normal_clients_are_served() {
    let work = tempfile::tempdir().unwrap();
    let berth = berth(
        work.path(),
        "    max: 2000\n    perclient: 500\n    headertimeout: 2s\n    idletimeout: 3s\n",
    );
    let addr: SocketAddr = berth.host.parse().unwrap();
    let api = Api::new(&berth.url);
    assert_eq!(
        api.send(Method::GET, "/healthz", &[], None).await.status(),
        200
    );
    let baseline = descriptors(berth.pid());

    // 700 connections that each send one header line and stop: 500 are held (until the
    // header timeout), the others closed at once.
    let mut idle = Vec::new();
    for _ in 0..700 {
        let mut c = connect_from("127.0.0.2", addr).await.unwrap();
        let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\n").await;
        idle.push(c);
    }
    // 200 that send their head a byte every 300 ms.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = connect_from("127.0.0.3", addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            for b in
                b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
            {
                if c.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            false
        }));
    }
    let during = descriptors(berth.pid());
    assert!(
        during <= baseline + 500 + 200 + 50,
        "{during} descriptors for 900 attackers (baseline {baseline})"
    );

    // The normal client meanwhile: fresh connections to /healthz, and a push.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let fresh = Api::new(&berth.url);
        let started = Instant::now();
        let r = fresh.send(Method::GET, "/healthz", &[], None).await;
        assert_eq!(r.status(), 200);
        worst = worst.max(started.elapsed());
    }
    let pushed = Instant::now();
    let data = integration::layout::random_bytes(7, 1 << 20);
    api.push_blob("team/app", &data).await;
    let push_time = pushed.elapsed();
    eprintln!(
        "under 900 hostile connections: /healthz worst {worst:?}, 1 MiB push {push_time:?}, {during} descriptors (baseline {baseline})"
    );
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");

    // Past the header timeout every attacker is gone, and so are their descriptors.
    for c in &mut idle {
        assert!(
            closed_within(c, Duration::from_secs(6)).await,
            "a one-line connection stayed open"
        );
    }
    for s in slow {
        assert!(
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .unwrap()
                .unwrap(),
            "a slowloris connection got its whole head in"
        );
    }
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while descriptors(berth.pid()) > baseline + 10 {
        assert!(
            Instant::now() < deadline,
            "descriptors stayed at {} (baseline {baseline})",
            descriptors(berth.pid())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = api.metrics().await;
    assert!(
        counter(
            &metrics,
            "berth_connections_refused_total{reason=\"client_full\"}"
        ) >= 150,
        "{metrics}"
    );
    assert!(
        counter(
            &metrics,
            "berth_connections_timed_out_total{deadline=\"header\"}"
        ) >= 600,
        "{metrics}"
    );
    // An idle keep-alive connection of the normal client goes too, after the idle timeout.
    let mut kept = connect_from("127.0.0.1", addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(kept.read(&mut buf).await.unwrap() > 0);
    let started = Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(6)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "closed before the idle timeout"
    );
}

#[tokio::test]
async fn a_full_registry_refuses_at_once_and_recovers() {
    let work = tempfile::tempdir().unwrap();
    let berth = berth(work.path(), "    max: 5\n    headertimeout: 1s\n");
    let addr: SocketAddr = berth.host.parse().unwrap();
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(
            connect_from(&format!("127.0.0.{}", 10 + i), addr)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect_from("127.0.0.20", addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)).await,
        "a sixth connection was kept"
    );
    // Once the silent ones are cut off, there is room again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = Api::new(&berth.url)
        .send(Method::GET, "/healthz", &[], None)
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_upload_that_goes_quiet_is_cut_off_and_resumes() {
    let work = tempfile::tempdir().unwrap();
    let berth = berth(work.path(), "    bodytimeout: 1s\n");
    let api = Api::new(&berth.url);
    let data = integration::layout::random_bytes(9, 3 << 20);
    let digest = integration::layout::sha256(&data);
    let r = api
        .send(Method::POST, "/v2/team/app/blobs/uploads/", &[], None)
        .await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").unwrap();

    // A PATCH announcing all of it that sends half and then nothing.
    let mut conn = TcpStream::connect(&berth.host).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data[..data.len() / 2]).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(10)).await);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The session is still there, at what it kept; the rest finishes it.
    let r = api.send(Method::GET, &location, &[], None).await;
    assert_eq!(r.status(), 204);
    let range = header(&r, "range").unwrap();
    let kept: usize = range
        .trim_start_matches("0-")
        .parse::<usize>()
        .map(|last| last + 1)
        .unwrap_or(0);
    let kept = if range == "0-0" { 0 } else { kept };
    assert!(kept <= data.len() / 2, "{range}");
    let r = api
        .send(
            Method::PUT,
            &Api::digest_url(&location, &digest),
            &[("content-range", &format!("{kept}-{}", data.len() - 1))],
            Some(data[kept..].to_vec()),
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = api
        .send(
            Method::GET,
            &format!("/v2/team/app/blobs/{digest}"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        integration::layout::sha256(&r.bytes().await.unwrap()),
        digest
    );
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off() {
    let work = tempfile::tempdir().unwrap();
    let berth = berth(work.path(), "    sendtimeout: 1s\n");
    let api = Api::new(&berth.url);
    let data = integration::layout::random_bytes(3, 32 << 20);
    let digest = api.push_blob("team/big", &data).await;
    let pid = berth.pid();
    let baseline = descriptors(pid);
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(&berth.host).await.unwrap();
        c.write_all(
            format!("GET /v2/team/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        stuck.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(descriptors(pid) >= baseline + 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while descriptors(pid) > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors held by clients that read nothing (baseline {baseline})",
            descriptors(pid)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TLS client trusting `ca`.
fn tls_client(ca: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[test]
fn tls_connections_idle_after_their_handshake_are_closed() {
    use std::io::Read;
    let work = tempfile::tempdir().unwrap();
    let (ca, cert, key) = integration::certs::ca_and_server(work.path());
    let berth = Berth::with_config(
        &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  tls:\n    certificate: {}\n    key: {}\nberth:\n  connections:\n    headertimeout: 2s\n    idletimeout: 2s\n",
            work.path().display(),
            cert.display(),
            key.display()
        ),
        &[],
    );
    let config = tls_client(&ca);
    let baseline = descriptors(berth.pid());
    let handshaken: Vec<_> = (0..30)
        .map(|_| {
            let mut sock = std::net::TcpStream::connect(&berth.host).unwrap();
            let mut tls =
                rustls::ClientConnection::new(config.clone(), "127.0.0.1".try_into().unwrap())
                    .unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut sock).unwrap();
            }
            sock
        })
        .collect();
    assert!(descriptors(berth.pid()) >= baseline + 30);
    let started = Instant::now();
    for mut sock in handshaken {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while descriptors(berth.pid()) > baseline + 2 {
        assert!(Instant::now() < deadline, "descriptors stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
