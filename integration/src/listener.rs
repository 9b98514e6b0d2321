//! A minimal HTTP listener on loopback that records requests and answers from a script.

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc::{Receiver, channel};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request line, e.g. `POST /events HTTP/1.1`.
    pub first_line: String,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Serves `answers` (whole raw HTTP responses) to successive connections, recording each request.
/// Returns the base URL and the receiver of recorded requests.
pub fn recording_listener(answers: Vec<String>) -> (String, Receiver<Recorded>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let Some(request) = read_request(&mut reader) else {
                continue;
            };
            let _ = tx.send(request);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    (base, rx)
}

/// Reads one request (head, and a body of its Content-Length); `None` at the end of the
/// connection or on a broken request.
pub fn read_request(reader: &mut impl BufRead) -> Option<Recorded> {
    let mut first_line = String::new();
    if reader.read_line(&mut first_line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        first_line: first_line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// A raw HTTP response with a status line, optional JSON body, and `Connection: close`.
pub fn response(status: &str, json_body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json_body}",
        json_body.len()
    )
}

/// Runs `serve` on a thread with a runtime of its own, so that sync and async tests can use
/// the server alike.
pub fn on_own_runtime<F>(serve: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve);
    });
}
