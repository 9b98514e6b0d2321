//! An HTTP server on loopback whose every answer the test scripts: a hostile or broken
//! upstream registry, a token realm, or a service that must never be reached. It records what
//! it receives and how many body bytes it managed to send.

use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::listener::{Recorded, read_request};

/// What the server answers one request with.
pub enum Answer {
    /// A whole raw HTTP response (status line, headers, body).
    Raw(Vec<u8>),
    /// `head` (status line and headers, ending in a blank line), then zeros for as long as the
    /// client reads; the connection is closed after.
    Endless(String),
}

impl Answer {
    /// A response with `status` (e.g. `307 Temporary Redirect`), extra header lines and a body.
    pub fn new(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let Answer::Raw(mut raw) = Answer::head(status, headers, body.len()) else {
            unreachable!()
        };
        raw.extend_from_slice(body);
        Answer::Raw(raw)
    }

    /// The answer to a HEAD: what [`Answer::new`] would send for a body of `length` bytes,
    /// without the body.
    pub fn head(status: &str, headers: &[(&str, &str)], length: usize) -> Answer {
        let mut raw = format!("HTTP/1.1 {status}\r\ncontent-length: {length}\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        Answer::Raw(raw.into_bytes())
    }
}

/// A running scripted server.
pub struct Scripted {
    /// `127.0.0.1:PORT`
    pub host: String,
    received: Arc<Mutex<Vec<Recorded>>>,
    sent: Arc<AtomicU64>,
}

impl Scripted {
    /// Serves every request with `script`'s answer.
    pub fn start(script: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Scripted {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let script = Arc::new(script);
        let (log, counter) = (received.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (script, log, counter) = (script.clone(), log.clone(), counter.clone());
                std::thread::spawn(move || serve(conn, &*script, &log, &counter));
            }
        });
        Scripted {
            host,
            received,
            sent,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    /// Body bytes of endless answers sent so far.
    pub fn endless_bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

fn serve(
    conn: std::net::TcpStream,
    script: &(dyn Fn(&Recorded) -> Answer + Send + Sync),
    log: &Mutex<Vec<Recorded>>,
    sent: &AtomicU64,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    while let Some(request) = read_request(&mut reader) {
        let answer = script(&request);
        log.lock().unwrap().push(request);
        match answer {
            Answer::Raw(raw) => {
                if conn.write_all(&raw).is_err() {
                    return;
                }
            }
            Answer::Endless(head) => {
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let zeros = vec![0u8; 64 << 10];
                while conn.write_all(&zeros).is_ok() {
                    sent.fetch_add(zeros.len() as u64, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}
