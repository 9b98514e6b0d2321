//! An HTTP proxy between Berth and a store emulator that makes the store behave as a cloud
//! store does on a bad day: slow, throttling (503 SlowDown), failing (500), resetting
//! connections, applying a write and then failing or resetting anyway, hanging, or down for a
//! while. It counts the requests it passes, so tests can say what an operation costs.
//!
//! GETs of presigned URLs (a client following Berth's redirect) are passed unharmed: they are
//! the client's business with the store. It runs on a thread of its own with its own runtime,
//! so sync and async tests use it alike.
//! Request and response bodies are held whole (parts of at most tens of MiB in the tests).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the store does wrong, each as a probability per request (0 to 1).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// 503 SlowDown, the request not passed on.
    pub unavailable: f64,
    /// 500, the request not passed on.
    pub server_error: f64,
    /// The request passed on (a write applied), then 500.
    pub applied_then_error: f64,
    /// The connection closed without an answer, the request not passed on.
    pub reset: f64,
    /// The request passed on (a write applied), then the connection closed without an answer.
    pub applied_then_reset: f64,
    /// Added before every answer.
    pub latency: Duration,
    /// The request hangs this long before it is passed on.
    pub hang: Option<(f64, Duration)>,
    /// Every request is 503 until then.
    pub outage_until: Option<Instant>,
    /// CopyObject of a source larger than this is refused as S3 refuses one above 5 GiB (the
    /// proxy asks the store for the source's size; moto answers unsigned requests).
    pub copy_object_limit: Option<u64>,
    /// `If-Match` and `If-None-Match` are dropped before the store sees them: the store then
    /// behaves as one that takes them and ignores them (Garage, older MinIO and Ceph RGW).
    pub ignore_conditions: bool,
    /// GETs of presigned URLs are answered 403, as a store that does not accept the signature.
    pub refuse_presigned: bool,
}

impl Faults {
    /// The mix: 5 % 503, 2 % 500, 1 % resets, and 2 % of requests applied before a 500
    /// or a reset.
    pub fn cloud_bad_day() -> Faults {
        Faults {
            unavailable: 0.05,
            server_error: 0.02,
            reset: 0.01,
            applied_then_error: 0.01,
            applied_then_reset: 0.01,
            ..Faults::default()
        }
    }
}

/// What the proxy passed on and what it made fail.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests that reached the store.
    pub passed: AtomicU64,
    /// Of those, GETs of presigned URLs (a client following a redirect).
    pub presigned: AtomicU64,
    /// Requests answered with a fault (or left hanging first).
    pub faulted: AtomicU64,
    /// `METHOD /path?query` of every request passed to the store, in order; a server-side copy
    /// is followed by ` copy-of /SOURCE` (its `x-amz-copy-source`), and ` range=A-B` for a part.
    pub seen: Mutex<Vec<String>>,
}

/// A running fault proxy.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: give it to Berth as the store's endpoint.
    pub endpoint: String,
    faults: Arc<Mutex<Faults>>,
    counts: Arc<Counts>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A small deterministic generator, so a failing run can be repeated.
struct Dice(Mutex<u64>);

impl Dice {
    fn roll(&self) -> f64 {
        let mut s = self.0.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Plan {
    Pass,
    Fail(StatusCode),
    Reset,
    PassThenFail,
    PassThenReset,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`), faulting as `faults` says.
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(faults));
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let (f, c) = (faults.clone(), counts.clone());
        crate::listener::on_own_runtime(serve(listener, upstream, f, c, stopped));
        FaultProxy {
            endpoint: format!("http://{addr}"),
            faults,
            counts,
            _stop: stop,
        }
    }

    /// Changes the faults from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// Makes every request a 503 for `d` from now.
    pub fn outage(&self, d: Duration) {
        self.faults.lock().unwrap().outage_until = Some(Instant::now() + d);
    }

    /// Requests passed to the store so far, presigned GETs excluded.
    pub fn store_requests(&self) -> u64 {
        self.counts.passed.load(Ordering::SeqCst) - self.counts.presigned.load(Ordering::SeqCst)
    }

    /// `METHOD /path?query` of the store requests passed since the `from`-th.
    pub fn requests_since(&self, from: usize) -> Vec<String> {
        self.counts.seen.lock().unwrap()[from..].to_vec()
    }

    /// Requests answered with a fault so far.
    pub fn faulted(&self) -> u64 {
        self.counts.faulted.load(Ordering::SeqCst)
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    faults: Arc<Mutex<Faults>>,
    counts: Arc<Counts>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let dice = Arc::new(Dice(Mutex::new(0x2545_f491_4f6c_dd1d)));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let (client, upstream, faults, counts, dice) = (
            client.clone(),
            upstream.clone(),
            faults.clone(),
            counts.clone(),
            dice.clone(),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                handle(
                    req,
                    client.clone(),
                    upstream.clone(),
                    faults.clone(),
                    counts.clone(),
                    dice.clone(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A fault that closes the connection: the service fails and hyper drops the connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    req: Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    faults: Arc<Mutex<Faults>>,
    counts: Arc<Counts>,
    dice: Arc<Dice>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    // A client following a presigned redirect talks to the store itself: what happens to it
    // is between the client and the store, and no registry can help it, so those requests
    // pass unharmed (and are counted apart).
    let presigned = ["X-Amz-Signature=", "X-Goog-Signature=", "sig="]
        .iter()
        .any(|s| path.contains(s));
    let f = faults.lock().unwrap().clone();
    if presigned && f.refuse_presigned {
        counts.faulted.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from_static(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code><Message>injected</Message></Error>",
        )));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return Ok(resp);
    }
    let f = if presigned { Faults::default() } else { f };
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    if let Some((p, d)) = f.hang
        && dice.roll() < p
    {
        counts.faulted.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(d).await;
    }
    let plan = if f.outage_until.is_some_and(|t| Instant::now() < t) {
        Plan::Fail(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        let odds = [
            (f.unavailable, Plan::Fail(StatusCode::SERVICE_UNAVAILABLE)),
            (
                f.server_error,
                Plan::Fail(StatusCode::INTERNAL_SERVER_ERROR),
            ),
            (f.reset, Plan::Reset),
            (f.applied_then_error, Plan::PassThenFail),
            (f.applied_then_reset, Plan::PassThenReset),
        ];
        let r = dice.roll();
        let mut edge = 0.0;
        odds.into_iter()
            .find(|(p, _)| {
                edge += p;
                r < edge
            })
            .map_or(Plan::Pass, |(_, plan)| plan)
    };
    if !f.latency.is_zero() {
        tokio::time::sleep(f.latency).await;
    }
    let error_body = |status: StatusCode| {
        let code = if status == StatusCode::SERVICE_UNAVAILABLE {
            "SlowDown"
        } else {
            "InternalError"
        };
        let mut resp = Response::new(Full::new(Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
        ))));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert("content-type", "application/xml".parse().unwrap());
        resp
    };
    match plan {
        Plan::Fail(status) => {
            counts.faulted.fetch_add(1, Ordering::SeqCst);
            return Ok(error_body(status));
        }
        Plan::Reset => {
            counts.faulted.fetch_add(1, Ordering::SeqCst);
            return Err(Dropped);
        }
        Plan::Pass | Plan::PassThenFail | Plan::PassThenReset => {}
    }
    let copy_source = parts
        .headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
        .map(|s| format!("/{}", s.trim_start_matches('/')));
    if let (Some(limit), Some(source)) = (f.copy_object_limit, &copy_source)
        && !path.contains("partNumber=")
        && source_size(&client, &upstream, source).await > Some(limit)
    {
        counts.faulted.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidRequest</Code><Message>The specified copy source is larger than the maximum allowable size for a copy source: {limit}</Message></Error>"
        ))));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    }
    let mut forward = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if f.ignore_conditions && (k == "if-match" || k == "if-none-match") {
            continue;
        }
        forward = forward.header(k, v);
    }
    let Ok(forward) = forward.body(Full::new(body)) else {
        return Err(Dropped);
    };
    let resp = match client.request(forward).await {
        Ok(r) => r,
        Err(_) => return Ok(error_body(StatusCode::BAD_GATEWAY)),
    };
    counts.passed.fetch_add(1, Ordering::SeqCst);
    let mut seen = format!("{} {path}", parts.method);
    if let Some(source) = &copy_source {
        seen.push_str(&format!(" copy-of {source}"));
        if let Some(r) = parts.headers.get("x-amz-copy-source-range") {
            seen.push_str(&format!(
                " range={}",
                r.to_str().unwrap_or("?").trim_start_matches("bytes=")
            ));
        }
    }
    counts.seen.lock().unwrap().push(seen);
    if presigned {
        counts.presigned.fetch_add(1, Ordering::SeqCst);
    }
    let (rparts, rbody) = resp.into_parts();
    let rbody = match rbody.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    match plan {
        Plan::PassThenFail => {
            counts.faulted.fetch_add(1, Ordering::SeqCst);
            Ok(error_body(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Plan::PassThenReset => {
            counts.faulted.fetch_add(1, Ordering::SeqCst);
            Err(Dropped)
        }
        _ => Ok(Response::from_parts(rparts, Full::new(rbody))),
    }
}

/// The size of the object at `source` (`/bucket/key`), asked of the store with an unsigned HEAD.
async fn source_size(
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
    source: &str,
) -> Option<u64> {
    let head = Request::builder()
        .method("HEAD")
        .uri(format!("{upstream}{source}"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = client.request(head).await.ok()?;
    resp.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
