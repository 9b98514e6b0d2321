//! A round-robin TCP balancer in front of registry replicas, as a Kubernetes Service is: each
//! connection goes to the next replica that accepts it, and a replica that is down is skipped.
//! Replicas can be replaced while it runs (a restarted process listens on a new port).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A running balancer; it stops when dropped.
pub struct Balancer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    backends: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Balancer {
    /// Balances over `backends` (`127.0.0.1:PORT` each).
    pub fn start(backends: Vec<String>) -> Balancer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let b = backends.clone();
        crate::listener::on_own_runtime(serve(listener, b, stopped));
        Balancer {
            url: format!("http://{addr}"),
            host: addr.to_string(),
            backends,
            _stop: stop,
        }
    }

    /// Points slot `i` at a new address (a replica restarted on another port).
    pub fn replace(&self, i: usize, backend: String) {
        self.backends.lock().unwrap()[i] = backend;
    }
}

async fn serve(
    listener: std::net::TcpListener,
    backends: Arc<Mutex<Vec<String>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut inbound, _) = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let candidates = backends.lock().unwrap().clone();
            for _ in 0..candidates.len() {
                let i = next.fetch_add(1, Ordering::Relaxed) % candidates.len();
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&candidates[i]).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
            // No replica is up: the client sees its connection closed.
        });
    }
}
