//! Serving connections: who gets one, how long each may sit idle or dribble, TLS, HTTP/1.1 and
//! HTTP/2, and a graceful stop.
//!
//! Anyone can reach a public registry's port, so no client may hold more than its share of
//! descriptors or tasks: connections are counted in all and per client ([`admission`]), each
//! socket has deadlines for idle, head and send ([`deadlines`]), and each request body one for
//! a quiet client ([`request_body`]).

pub mod admission;
pub mod deadlines;
pub mod request_body;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::observe::Metrics;
use admission::{Admission, Refusal, Ticket};
use deadlines::{Activity, DeadlineIo, Expired, InFlight, Timeouts};
use request_body::{DRAIN_LIMIT, IdleLimitedBody, SharedBody};

/// Connection limits (`berth.connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Most connections open at once; `None`: derived from the descriptor limit.
    pub max: Option<usize>,
    /// Most connections from one client address (an IPv6 client: its /64).
    pub per_client: usize,
    /// Socket deadlines.
    pub timeouts: Timeouts,
    /// How long a request body may send nothing.
    pub body_idle: Duration,
}

impl Default for ConnectionSettings {
    /// What a registry on the internet wants: heads in 20 s, idle keep-alive for 120 s (longer
    /// than Go's and so docker's 90 s, so that the client closes first and never sends into a
    /// connection the server is closing), 60 s for a quiet body or a client that reads nothing.
    fn default() -> Self {
        ConnectionSettings {
            max: None,
            per_client: 512,
            timeouts: Timeouts {
                header: Duration::from_secs(20),
                idle: Duration::from_secs(120),
                send: Duration::from_secs(60),
            },
            body_idle: Duration::from_secs(60),
        }
    }
}

/// The most connections open at once when the configuration does not say: at most 10,000 and
/// three quarters of the descriptors, after raising the soft descriptor limit to the hard one.
/// The rest stay for the store, the disk and upstreams.
pub fn default_max_connections() -> usize {
    let limit = raise_descriptor_limit();
    let reserve = (limit / 4).max(256);
    (limit.saturating_sub(reserve) as usize).clamp(16, 10_000)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force.
fn raise_descriptor_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// What every connection of one server shares.
struct Shared {
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: Timeouts,
    body_idle: Duration,
    metrics: Arc<Metrics>,
    on_expiry: Arc<dyn Fn(Expired) + Send + Sync>,
    on_body_expiry: Arc<dyn Fn() + Send + Sync>,
}

/// Serves `router` on `listener` (with TLS when `tls` is given) until `shutdown` completes,
/// then lets open requests finish for up to 30 s.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tls::ReloadingCertificate>>,
    router: Router,
    settings: &ConnectionSettings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = settings.max.unwrap_or_else(default_max_connections);
    let admission = Admission::new(max, settings.per_client);
    tracing::info!(
        max_connections = max,
        per_client = settings.per_client,
        "connection limits"
    );
    let expiry_metrics = metrics.clone();
    let body_metrics = metrics.clone();
    let shared = Arc::new(Shared {
        router,
        tls: tls.map(|c| tokio_rustls::TlsAcceptor::from(c.server_config())),
        timeouts: settings.timeouts,
        body_idle: settings.body_idle,
        metrics: metrics.clone(),
        on_expiry: Arc::new(move |e: Expired| expiry_metrics.deadline_expired(e.label())),
        on_body_expiry: Arc::new(move || body_metrics.deadline_expired("body")),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refusals = RareLog::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: let connections end before trying again,
                // instead of spinning on accept.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    metrics.connection_refused("descriptors");
                    if refusals.due() {
                        tracing::warn!(error = %e, open = admission.open(), "cannot accept connections: waiting");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Full => "full",
                    Refusal::ClientFull => "client_full",
                };
                metrics.connection_refused(why);
                if refusals.due() {
                    tracing::warn!(client = %peer.ip(), reason = why, open = admission.open(), "connection refused");
                }
                continue;
            }
        };
        let watcher = graceful.watcher();
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.connection_opened();
            connection(stream, peer, ticket, &shared, watcher).await;
            shared.metrics.connection_closed();
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after 30 s: stopping anyway");
    }
}

/// Serves one connection to its end.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    shared: &Shared,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ticket = ticket;
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = DeadlineIo::new(
        stream,
        activity.clone(),
        shared.timeouts,
        shared.on_expiry.clone(),
    );
    let (router, body_idle, on_body_expiry) = (
        shared.router.clone(),
        shared.body_idle,
        shared.on_body_expiry.clone(),
    );
    // Known once the TLS handshake is done, before the first request.
    let certificate: Arc<std::sync::OnceLock<tls::ClientCertificate>> = Default::default();
    let certified = certificate.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let in_flight = activity.request();
        let (parts, body) = req.into_parts();
        let (handler_body, mut rest) = SharedBody::new(IdleLimitedBody::new(
            body,
            body_idle,
            on_body_expiry.clone(),
        ));
        let mut req = hyper::Request::from_parts(parts, axum::body::Body::new(handler_body));
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        if let Some(c) = certified.get() {
            req.extensions_mut().insert(c.clone());
        }
        let router = router.clone();
        async move {
            let mut resp = router.oneshot(req).await?;
            // What the handler left unread: read it now if it is small, so that a client
            // still sending gets this answer instead of a reset; else the connection closes.
            if !rest.drain(DRAIN_LIMIT).await {
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(resp.map(|b| {
                axum::body::Body::new(UntilSent {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let served = match &shared.tls {
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(io), service))
                .await
        }
        Some(acceptor) => match acceptor.accept(io).await {
            Ok(tls) => {
                if let Some(c) = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|der| tls::ClientCertificate::of(der))
                {
                    let _ = certificate.set(c);
                }
                watcher
                    .watch(builder.serve_connection(TokioIo::new(tls), service))
                    .await
            }
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
struct UntilSent {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for UntilSent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// At most one warning every ten seconds, for events a flood repeats thousands of times.
#[derive(Default)]
struct RareLog {
    last: AtomicU64,
}

impl RareLog {
    fn due(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last.load(Ordering::Relaxed);
        now >= last + 10
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
