//! Deadlines on one connection's socket: a client that sends nothing, sends a request head a
//! byte at a time, or reads nothing of its response is cut off.
//!
//! Which deadline applies depends on where the connection is, which only the HTTP layer
//! knows; it tells [`Activity`] when a request starts and when its response has been sent:
//! - no request in flight, no byte of the next one yet: the idle timeout (keep-alive);
//! - from the connection's start (its TLS handshake included) or the first byte of a request
//!   head, until the server has the whole head: the header timeout, however slowly the bytes
//!   come (slowloris);
//! - a request in flight: no read deadline here (the body has its own, see `request_body`, and
//!   a handler may wait on the store as long as the store allows);
//! - a write that makes no progress: the send timeout (a client that reads nothing).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The socket deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a connection's start or a request's first byte to its complete head.
    pub header: Duration,
    /// Between requests of a keep-alive connection.
    pub idle: Duration,
    /// A write that moves no byte.
    pub send: Duration,
}

/// Which deadline cut a connection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The head took too long.
    Header,
    /// Idle between requests.
    Idle,
    /// The client read nothing.
    Send,
}

impl Expired {
    /// Its name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Expired::Header => "header",
            Expired::Idle => "idle",
            Expired::Send => "send",
        }
    }
}

const NONE: u64 = u64::MAX;

/// Where one connection is in its life, shared by its socket and its HTTP service.
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds after `started` when the connection last went idle (`NONE`: not idle).
    idle_since: AtomicU64,
    /// Nanoseconds after `started` when the next request's head began (`NONE`: not yet).
    head_since: AtomicU64,
    reader: AtomicWaker,
}

impl Activity {
    /// A connection accepted now: its head deadline runs from here.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(NONE),
            head_since: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// A request's head is complete and its handler runs; the returned guard ends it (when
    /// its response has been sent, or abandoned).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        self.idle_since.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == NONE
        {
            self.head_since.store(self.now(), Ordering::Release);
        }
    }

    /// The read deadline now and what it is for; `None` while a request is in flight.
    fn read_deadline(&self, t: &Timeouts) -> Option<(Instant, Expired)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |nanos: u64, d: Duration| self.started + Duration::from_nanos(nanos) + d;
        match self.head_since.load(Ordering::Acquire) {
            NONE => match self.idle_since.load(Ordering::Acquire) {
                NONE => None,
                idle => Some((at(idle, t.idle), Expired::Idle)),
            },
            head => Some((at(head, t.header), Expired::Header)),
        }
    }
}

/// One request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since.store(a.now(), Ordering::Release);
            // A read pending without a deadline must arm the idle one.
            a.reader.wake();
        }
    }
}

/// A socket with [`Timeouts`]; an expired deadline fails the read or write with `TimedOut`,
/// which ends the connection.
pub struct DeadlineIo<S> {
    inner: S,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    on_expiry: Arc<dyn Fn(Expired) + Send + Sync>,
    read_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> DeadlineIo<S> {
    /// `inner` under `timeouts`, reporting each expiry to `on_expiry`.
    pub fn new(
        inner: S,
        activity: Arc<Activity>,
        timeouts: Timeouts,
        on_expiry: Arc<dyn Fn(Expired) + Send + Sync>,
    ) -> Self {
        DeadlineIo {
            inner,
            activity,
            timeouts,
            on_expiry,
            read_timer: None,
            write_timer: None,
        }
    }

    fn expired(&self, what: Expired) -> io::Error {
        (self.on_expiry)(what);
        io::Error::new(io::ErrorKind::TimedOut, format!("{what:?} timeout"))
    }

    /// After a pending read: arms the deadline that applies, or fails if it has passed.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.activity.reader.register(cx.waker());
        let Some((deadline, what)) = self.activity.read_deadline(&self.timeouts) else {
            self.read_timer = None;
            return Poll::Pending;
        };
        match &mut self.read_timer {
            Some((at, timer)) if *at == deadline => {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.expired(what)));
                }
            }
            slot => {
                let mut timer = Box::pin(tokio::time::sleep_until(deadline));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.expired(what)));
                }
                *slot = Some((deadline, timer));
            }
        }
        Poll::Pending
    }

    /// After a pending write: arms the send deadline, or fails if it has passed.
    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let send = self.timeouts.send;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        if timer.as_mut().poll(cx).is_ready() {
            self.write_timer = None;
            return Poll::Ready(self.expired(Expired::Send));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.bytes_read();
                }
                this.read_timer = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_read_deadline(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_write_deadline(cx).map(Err),
            done => {
                this.write_timer = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_write_deadline(cx).map(Err),
            done => {
                this.write_timer = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_write_deadline(cx).map(Err),
            done => {
                this.write_timer = None;
                done
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_write_deadline(cx).map(Err),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Timeouts = Timeouts {
        header: Duration::from_millis(200),
        idle: Duration::from_millis(400),
        send: Duration::from_millis(200),
    };

    fn wrap(s: tokio::io::DuplexStream) -> (DeadlineIo<tokio::io::DuplexStream>, Arc<Activity>) {
        let a = Activity::new();
        (DeadlineIo::new(s, a.clone(), T, Arc::new(|_| {})), a)
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_be_complete_within_the_header_timeout() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut io, _a) = wrap(server);
        let mut client = client;
        let mut buf = [0u8; 16];
        client.write_all(b"G").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        // A byte now and then does not extend it.
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if client.write_all(b"E").await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let err = loop {
            if let Err(e) = io.read(&mut buf).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= T.header);
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_have_no_read_deadline_and_idle_ones_do() {
        let (_client, server) = tokio::io::duplex(1024);
        let (mut io, a) = wrap(server);
        let request = a.request();
        let mut buf = [0u8; 4];
        let waited = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
        assert!(waited.is_err(), "no deadline while the request is handled");
        drop(request);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= T.idle && took < T.idle * 2, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_cut_off() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut io, _a) = wrap(server);
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
