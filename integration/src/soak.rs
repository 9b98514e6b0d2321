//! Replicas and crashes under load: several `berth` processes on one bucket behind a
//! round-robin balancer, clients pushing (in chunks that land on any replica), pulling and
//! deleting, a replica killed with SIGKILL and restarted again and again, and online garbage
//! collection running all along. What must hold: every push that was acknowledged pulls back
//! byte-identical, right after it and at the end, and nothing acknowledged goes missing.
//!
//! The test suite runs a short version (`tests/soak.rs`); `BERTH_SOAK_FULL=1` runs the full
//! one (32 clients, 10 minutes, a replica killed every 20 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::json;

use crate::balancer::Balancer;
use crate::emulators::Moto;
use crate::layout::{random_bytes, sha256};
use crate::server::Berth;

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Registry processes sharing the bucket.
    pub replicas: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients keep starting pushes.
    pub duration: Duration,
    /// A replica is killed (and started again) this often.
    pub kill_every: Duration,
    /// The largest layer a push carries.
    pub largest_layer: usize,
    /// The collectors' grace window (what is younger is never removed).
    pub grace: Duration,
}

impl SoakOptions {
    /// The version the default test run affords.
    pub fn short() -> SoakOptions {
        SoakOptions {
            replicas: 3,
            clients: 6,
            duration: Duration::from_secs(60),
            kill_every: Duration::from_secs(10),
            largest_layer: 12 << 20,
            grace: Duration::from_secs(15),
        }
    }

    /// The version: 32 clients for 10 minutes, a replica killed every 20 s.
    pub fn full() -> SoakOptions {
        SoakOptions {
            replicas: 3,
            clients: 32,
            duration: Duration::from_secs(600),
            kill_every: Duration::from_secs(20),
            largest_layer: 24 << 20,
            grace: Duration::from_secs(60),
        }
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Pushes whose manifest PUT was answered 201.
    pub acknowledged: u64,
    /// Pushes that failed somewhere (a killed replica, mostly) and were given up.
    pub failed_pushes: u64,
    /// Acknowledged pushes pulled back and compared, right after the push and at the end.
    pub verified_pulls: u64,
    /// Acknowledged pushes whose tag was deleted afterwards (garbage for the collector).
    pub deleted: u64,
    /// Of those, deletes whose first try got no answer (its replica killed) and whose retry
    /// found the tag gone: the first try had been applied.
    pub deletes_applied_unanswered: u64,
    /// Replicas killed with SIGKILL.
    pub kills: u64,
    /// Acknowledged pushes kept to the end and pulled back once more then.
    pub acknowledged_kept: u64,
    /// Blobs the collectors removed (from each replica's metrics before it was killed, and the
    /// survivors' at the end).
    pub swept: u64,
    /// Deleted pushes whose manifest was still there a while after the end (collections
    /// stopped, say, behind the lease of a killed collector): must be none.
    pub uncollected: Vec<String>,
    /// Acknowledged pushes that did not pull back byte-identical: must stay empty.
    pub lost: Vec<String>,
}

/// One acknowledged push: what its tag must give back.
#[derive(Debug, Clone)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: String,
    blobs: Vec<String>,
}

#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    verified: AtomicU64,
    deleted: AtomicU64,
    deletes_applied_unanswered: AtomicU64,
    lost: Mutex<Vec<String>>,
    /// Deleted pushes: garbage the collectors must remove.
    garbage: Mutex<Vec<Pushed>>,
}

/// Why a request did not give an answer to judge by.
#[derive(Debug)]
enum Failure {
    /// The connection broke or a replica answered 5xx: try again.
    Transient(String),
    /// A definite wrong answer.
    Wrong(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(e) => write!(f, "no answer for a minute: {e}"),
            Failure::Wrong(e) => write!(f, "{e}"),
        }
    }
}

type Outcome<T> = Result<T, Failure>;

fn transient(e: reqwest::Error) -> Failure {
    Failure::Transient(e.to_string())
}

async fn expect(
    resp: reqwest::Response,
    want: StatusCode,
    what: &str,
) -> Outcome<reqwest::Response> {
    let status = resp.status();
    if status == want {
        Ok(resp)
    } else if status.is_server_error() {
        Err(Failure::Transient(format!("{what}: {status}")))
    } else {
        let body = resp.text().await.unwrap_or_default();
        Err(Failure::Wrong(format!("{what}: {status} {body}")))
    }
}

fn location(resp: &reqwest::Response) -> Outcome<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Failure::Wrong("no Location".into()))
}

fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

/// A client of the balancer: a fresh connection per request, so consecutive requests of one
/// upload land on different replicas.
struct Session {
    http: Client,
    base: String,
}

impl Session {
    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// Pushes a blob in chunks of `chunk` bytes (POST, PATCHes, PUT).
    async fn push_chunked(&self, repo: &str, data: &[u8], chunk: usize) -> Outcome<String> {
        let digest = sha256(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .map_err(transient)?;
        let mut loc = location(&expect(r, StatusCode::ACCEPTED, "POST").await?)?;
        let mut offset = 0usize;
        for piece in data.chunks(chunk) {
            let end = offset + piece.len() - 1;
            let r = self
                .http
                .patch(self.url(&loc))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{offset}-{end}"))
                .body(piece.to_vec())
                .send()
                .await
                .map_err(transient)?;
            loc = location(&expect(r, StatusCode::ACCEPTED, "PATCH").await?)?;
            offset += piece.len();
        }
        let r = self
            .http
            .put(self.url(&with_digest(&loc, &digest)))
            .send()
            .await
            .map_err(transient)?;
        expect(r, StatusCode::CREATED, "PUT blob").await?;
        Ok(digest)
    }

    /// Pushes a blob in one request (`POST ?digest=`).
    async fn push_whole(&self, repo: &str, data: &[u8]) -> Outcome<String> {
        let digest = sha256(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .map_err(transient)?;
        expect(r, StatusCode::CREATED, "monolithic POST").await?;
        Ok(digest)
    }

    async fn put_manifest(&self, repo: &str, tag: &str, body: &[u8]) -> Outcome<()> {
        let r = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(transient)?;
        expect(r, StatusCode::CREATED, "PUT manifest").await?;
        Ok(())
    }

    /// Pulls `p` back by its tag and compares every byte (blobs by their digests).
    async fn verify(&self, p: &Pushed) -> Outcome<()> {
        let r = self
            .http
            .get(self.url(&format!("/v2/{}/manifests/{}", p.repo, p.tag)))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .map_err(transient)?;
        let body = expect(r, StatusCode::OK, "GET manifest")
            .await?
            .bytes()
            .await
            .map_err(transient)?;
        if sha256(&body) != p.manifest {
            return Err(Failure::Wrong(format!(
                "{}:{} names {} instead of {}",
                p.repo,
                p.tag,
                sha256(&body),
                p.manifest
            )));
        }
        for d in &p.blobs {
            let r = self
                .http
                .get(self.url(&format!("/v2/{}/blobs/{d}", p.repo)))
                .send()
                .await
                .map_err(transient)?;
            let bytes = expect(r, StatusCode::OK, "GET blob")
                .await?
                .bytes()
                .await
                .map_err(transient)?;
            if &sha256(&bytes) != d {
                return Err(Failure::Wrong(format!("{}@{d}: other bytes", p.repo)));
            }
        }
        Ok(())
    }

    async fn delete_tag(&self, p: &Pushed) -> Outcome<()> {
        let r = self
            .http
            .request(
                Method::DELETE,
                self.url(&format!("/v2/{}/manifests/{}", p.repo, p.tag)),
            )
            .send()
            .await
            .map_err(transient)?;
        expect(r, StatusCode::ACCEPTED, "DELETE tag").await?;
        Ok(())
    }

    /// Deletes `p`'s tag, trying again while replicas fail; says whether the tag is gone.
    /// A DELETE whose replica was killed before it answered may still have been applied, so a
    /// 404 after such an attempt means the tag is gone, not that the push was lost.
    async fn delete_until_gone(&self, p: &Pushed, tally: &Tally) -> bool {
        let mut unanswered = false;
        let started = Instant::now();
        loop {
            match self.delete_tag(p).await {
                Ok(()) => return true,
                Err(Failure::Wrong(e)) => {
                    let gone = unanswered && e.starts_with("DELETE tag: 404");
                    if gone {
                        tally
                            .deletes_applied_unanswered
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return gone;
                }
                Err(Failure::Transient(_)) if started.elapsed() < Duration::from_secs(60) => {
                    unanswered = true;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(Failure::Transient(_)) => return false,
            }
        }
    }
}

/// Keeps trying `op` while it fails transiently (a replica down), for up to a minute.
async fn patiently<T, F, Fut>(mut op: F) -> Outcome<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome<T>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Err(Failure::Transient(_)) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

/// One image: a large layer pushed in chunks, a small one and the config pushed whole.
async fn push_image(s: &Session, o: &SoakOptions, client: usize, n: u64) -> Outcome<Pushed> {
    let seed = (client as u64) << 32 | n;
    let repo = format!("soak/c{client}");
    let large = o.largest_layer / 8 + (seed as usize * 7919) % (o.largest_layer * 7 / 8);
    let layer = random_bytes(seed, large);
    let small = random_bytes(seed ^ 0x5eed, 1 + (seed as usize % 65_536));
    let config = json!({"architecture": "amd64", "os": "linux", "soak": seed}).to_string();
    let l1 = s.push_chunked(&repo, &layer, 5 << 20).await?;
    let l2 = s.push_whole(&repo, &small).await?;
    let c = s.push_whole(&repo, config.as_bytes()).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l1, "size": layer.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l2, "size": small.len()},
        ],
    })
    .to_string();
    let tag = format!("n{n}");
    s.put_manifest(&repo, &tag, manifest.as_bytes()).await?;
    Ok(Pushed {
        repo,
        tag,
        manifest: sha256(manifest.as_bytes()),
        blobs: vec![c, l1, l2],
    })
}

async fn client_loop(
    s: Session,
    o: SoakOptions,
    client: usize,
    deadline: Instant,
    tally: Arc<Tally>,
) -> Vec<Pushed> {
    let mut kept = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let pushed = match push_image(&s, &o, client, n).await {
            Ok(p) => p,
            Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tally.acknowledged.fetch_add(1, Ordering::Relaxed);
        match patiently(|| s.verify(&pushed)).await {
            Ok(()) => {
                tally.verified.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally
                .lost
                .lock()
                .unwrap()
                .push(format!("right after the push: {e}")),
        }
        // One push in four is kept to the end; the others become garbage for the collector.
        if n.is_multiple_of(4) {
            kept.push(pushed);
        } else if s.delete_until_gone(&pushed, &tally).await {
            tally.deleted.fetch_add(1, Ordering::Relaxed);
            tally.garbage.lock().unwrap().push(pushed);
        } else {
            kept.push(pushed);
        }
    }
    kept
}

/// Collections run this often (each replica tries; the lease lets one through).
const GC_INTERVAL_SECS: u64 = 5;
/// A killed collector's lease is taken over after this.
const LEASE_TTL_SECS: u64 = 10;

fn config_yaml(moto: &Moto, grace: Duration) -> String {
    format!(
        "storage:\n  {}\n  delete:\n    enabled: true\nberth:\n  gc:\n    enabled: true\n    interval: {GC_INTERVAL_SECS}s\n    grace: {}s\n    deleteuntagged: true\n    leasettl: {LEASE_TTL_SECS}s\n",
        moto.storage_yaml("soak"),
        grace.as_secs()
    )
}

/// Runs the soak and says what happened.
pub fn run(o: &SoakOptions) -> SoakReport {
    let moto = Moto::start();
    moto.create_bucket("soak");
    let yaml = config_yaml(&moto, o.grace);
    let replicas: Vec<Berth> = (0..o.replicas)
        .map(|_| Berth::with_config(&yaml, &[]))
        .collect();
    let balancer = Balancer::start(replicas.iter().map(|b| b.host.clone()).collect());
    let replicas = Arc::new(Mutex::new(replicas));
    let tally = Arc::new(Tally::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let session = || Session {
        http: Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        base: balancer.url.clone(),
    };
    let deadline = Instant::now() + o.duration;
    let mut kills = 0u64;
    let mut swept = 0u64;
    let kept: Vec<Pushed> = rt.block_on(async {
        let clients: Vec<_> = (0..o.clients)
            .map(|c| {
                tokio::spawn(client_loop(
                    session(),
                    o.clone(),
                    c,
                    deadline,
                    tally.clone(),
                ))
            })
            .collect();
        let mut victim = 0usize;
        while Instant::now() + o.kill_every < deadline {
            tokio::time::sleep(o.kill_every).await;
            let (replicas, yaml) = (replicas.clone(), yaml.clone());
            let i = victim % o.replicas;
            victim += 1;
            let victim_url = replicas.lock().unwrap()[i].url.clone();
            swept += swept_by(&victim_url).await;
            let host = tokio::task::spawn_blocking(move || {
                let fresh = {
                    let mut all = replicas.lock().unwrap();
                    all[i].kill();
                    Berth::with_config(&yaml, &[])
                };
                let host = fresh.host.clone();
                replicas.lock().unwrap()[i] = fresh;
                host
            })
            .await
            .unwrap();
            balancer.replace(i, host);
            kills += 1;
        }
        let mut kept = Vec::new();
        for c in clients {
            kept.extend(c.await.unwrap());
        }
        kept
    });
    // The end: every kept push, through any replica.
    let s = session();
    rt.block_on(async {
        for p in &kept {
            match patiently(|| s.verify(p)).await {
                Ok(()) => {
                    tally.verified.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tally.lost.lock().unwrap().push(format!("at the end: {e}")),
            }
        }
    });
    // The garbage: once the last deletes are older than the grace window and a killed
    // collector's lease has run out, collections remove every deleted push's manifest.
    let garbage = std::mem::take(&mut *tally.garbage.lock().unwrap());
    let uncollected = rt.block_on(async {
        let give_up =
            Instant::now() + o.grace + Duration::from_secs(LEASE_TTL_SECS + 6 * GC_INTERVAL_SECS);
        loop {
            let mut left = Vec::new();
            for p in &garbage {
                let r = s
                    .http
                    .head(s.url(&format!("/v2/{}/manifests/{}", p.repo, p.manifest)))
                    .send()
                    .await;
                if !matches!(r, Ok(r) if r.status() == StatusCode::NOT_FOUND) {
                    left.push(format!("{}@{}", p.repo, p.manifest));
                }
            }
            if left.is_empty() || Instant::now() > give_up {
                return left;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let urls: Vec<String> = replicas
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.url.clone())
        .collect();
    for url in urls {
        swept += rt.block_on(swept_by(&url));
    }
    let lost = std::mem::take(&mut *tally.lost.lock().unwrap());
    SoakReport {
        acknowledged: tally.acknowledged.load(Ordering::Relaxed),
        failed_pushes: tally.failed.load(Ordering::Relaxed),
        verified_pulls: tally.verified.load(Ordering::Relaxed),
        deleted: tally.deleted.load(Ordering::Relaxed),
        deletes_applied_unanswered: tally.deletes_applied_unanswered.load(Ordering::Relaxed),
        kills,
        acknowledged_kept: kept.len() as u64,
        swept,
        uncollected,
        lost,
    }
}

/// Blobs the replica at `url` has removed since it started (its metrics).
async fn swept_by(url: &str) -> u64 {
    let Ok(r) = reqwest::get(format!("{url}/metrics")).await else {
        return 0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("berth_gc_swept_blobs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
