//! Request metrics in the Prometheus text format, kept in this process (each replica is scraped).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn add(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Writes the histogram with `labels` (written out: `route="blob"`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Writes one metric family in the Prometheus text format: its HELP and TYPE lines, then a
/// sample per `(labels, value)` (labels as [`label`] writes them, joined by commas; empty
/// for none).
pub fn write_family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// `key="value"`, the value escaped as the text format asks (a configured name may hold a
/// quote or a backslash).
pub fn label(key: &str, value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{key}=\"{escaped}\"")
}

/// A kind of store operation: the backend's name and the operation's.
type StoreOperation = (&'static str, &'static str);

/// Counters and histograms of the HTTP API.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    storage: Mutex<BTreeMap<StoreOperation, (Histogram, u64)>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    redirects: AtomicU64,
    uploads_in_flight: AtomicI64,
    purged_uploads: AtomicU64,
    gc_swept: AtomicU64,
    gc_bytes: AtomicU64,
    cache_expired: AtomicU64,
    connections_open: AtomicI64,
    /// Counters with one label: (metric, label name, label value) to count.
    labelled: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// The biggest repositories as the last usage walk found them: name, bytes, unique
    /// bytes, tags.
    biggest: Mutex<Vec<(String, u64, u64, usize)>>,
}

/// Repositories the usage gauges name (a bounded label set).
pub const BIGGEST_REPOSITORIES: usize = 20;

/// What the labelled counters are, for their HELP lines.
const LABELLED_HELP: [(&str, &str); 4] = [
    (
        "berth_connections_refused_total",
        "Connections closed at once: the registry or the client at its cap, or no descriptor left.",
    ),
    (
        "berth_connections_timed_out_total",
        "Connections (or request bodies) cut off by a deadline.",
    ),
    (
        "berth_logins_total",
        "Password checks by result (accepted, refused, throttled before checking).",
    ),
    (
        "berth_gc_runs_total",
        "Scheduled garbage collections by result (ok, failed, skipped: another replica held the lease).",
    ),
];

impl Metrics {
    /// Records one finished request.
    pub fn observe(
        &self,
        route: &'static str,
        method: &str,
        status: u16,
        elapsed: Duration,
        bytes_out: u64,
    ) {
        if let Ok(mut r) = self.requests.lock() {
            // Static names: no allocation per request.
            let method = match method {
                "GET" => "GET",
                "HEAD" => "HEAD",
                "PUT" => "PUT",
                "POST" => "POST",
                "PATCH" => "PATCH",
                "DELETE" => "DELETE",
                _ => "OTHER",
            };
            *r.entry((route, method, status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            l.entry(route).or_default().add(elapsed.as_secs_f64());
        }
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if status == 307 {
            self.redirects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Store operations made so far, by kind (a listing counts once, whatever its pages).
    pub fn storage_operations(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Ok(m) = self.storage.lock() {
            for ((_, op), (h, _)) in m.iter() {
                *out.entry((*op).to_string()).or_default() += h.count;
            }
        }
        out
    }

    /// Records one storage operation of the `backend` (s3, azure, gcs, filesystem, ...).
    pub fn observe_storage(
        &self,
        backend: &'static str,
        op: &'static str,
        elapsed: Duration,
        failed: bool,
    ) {
        if let Ok(mut m) = self.storage.lock() {
            let (h, errors) = m.entry((backend, op)).or_default();
            h.add(elapsed.as_secs_f64());
            *errors += u64::from(failed);
        }
    }

    /// Counts request body bytes as they arrive.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// An upload request started (+1) or ended (-1).
    pub fn upload_in_flight(&self, delta: i64) {
        self.uploads_in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Upload requests streaming a body right now, and request body bytes received so far.
    pub fn upload_activity(&self) -> (i64, u64) {
        (
            self.uploads_in_flight.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
        )
    }

    /// Upload sessions removed by purging.
    pub fn add_purged(&self, n: u64) {
        self.purged_uploads.fetch_add(n, Ordering::Relaxed);
    }

    /// Results of a garbage collection run.
    pub fn add_gc(&self, blobs: u64, bytes: u64, expired: u64) {
        self.gc_swept.fetch_add(blobs, Ordering::Relaxed);
        self.gc_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.cache_expired.fetch_add(expired, Ordering::Relaxed);
    }

    /// Sets the usage gauges to the biggest repositories of `usage`.
    pub fn set_usage(&self, usage: &registry_core::registry::Usage) {
        if let Ok(mut b) = self.biggest.lock() {
            *b = usage
                .repositories
                .iter()
                .take(BIGGEST_REPOSITORIES)
                .map(|r| (r.name.clone(), r.bytes, r.unique_bytes, r.tags))
                .collect();
        }
    }

    fn count(&self, metric: &'static str, label: &'static str, value: &'static str) {
        if let Ok(mut m) = self.labelled.lock() {
            *m.entry((metric, label, value)).or_default() += 1;
        }
    }

    /// A connection was admitted.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was closed at once, for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.count("berth_connections_refused_total", "reason", reason);
    }

    /// A deadline (`header`, `idle`, `send`, `body`) cut a connection or a request body off.
    pub fn deadline_expired(&self, deadline: &'static str) {
        self.count("berth_connections_timed_out_total", "deadline", deadline);
    }

    /// A scheduled collection ended with `result` (`ok`, `failed`, `skipped`).
    pub fn gc_run(&self, result: &'static str) {
        self.count("berth_gc_runs_total", "result", result);
    }

    /// A password check ended with `result` (`accepted`, `refused`, `throttled`).
    pub fn login(&self, result: &'static str) {
        self.count("berth_logins_total", "result", result);
    }

    /// The Prometheus exposition of everything recorded.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP berth_http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(out, "# TYPE berth_http_requests_total counter");
        if let Ok(r) = self.requests.lock() {
            for ((route, method, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "berth_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP berth_http_request_duration_seconds Time to the response head, by route."
        );
        let _ = writeln!(out, "# TYPE berth_http_request_duration_seconds histogram");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                h.render(
                    &mut out,
                    "berth_http_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP berth_storage_operation_duration_seconds Storage operations by backend and kind."
        );
        let _ = writeln!(
            out,
            "# TYPE berth_storage_operation_duration_seconds histogram"
        );
        let mut errors = String::new();
        if let Ok(m) = self.storage.lock() {
            for ((backend, op), (h, e)) in m.iter() {
                let labels = format!("backend=\"{backend}\",operation=\"{op}\"");
                h.render(
                    &mut out,
                    "berth_storage_operation_duration_seconds",
                    &labels,
                );
                let _ = writeln!(
                    errors,
                    "berth_storage_operation_errors_total{{{labels}}} {e}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP berth_storage_operation_errors_total Storage operations that failed."
        );
        let _ = writeln!(out, "# TYPE berth_storage_operation_errors_total counter");
        out.push_str(&errors);
        if let Ok(m) = self.labelled.lock() {
            for (metric, help) in LABELLED_HELP {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
                for ((name, label, value), n) in m.iter() {
                    if *name == metric {
                        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
                    }
                }
            }
        }
        let scalars: [(&str, &str, &str, i64); 9] = [
            (
                "berth_connections_open",
                "gauge",
                "Client connections open.",
                self.connections_open.load(Ordering::Relaxed),
            ),
            (
                "berth_gc_swept_blobs_total",
                "counter",
                "Blobs removed by garbage collection.",
                self.gc_swept.load(Ordering::Relaxed) as i64,
            ),
            (
                "berth_gc_swept_bytes_total",
                "counter",
                "Bytes freed by garbage collection.",
                self.gc_bytes.load(Ordering::Relaxed) as i64,
            ),
            (
                "berth_cache_expired_total",
                "counter",
                "Cached tags and manifests removed because nobody pulled them within the TTL.",
                self.cache_expired.load(Ordering::Relaxed) as i64,
            ),
            (
                "berth_http_request_bytes_total",
                "counter",
                "Request body bytes received.",
                self.bytes_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "berth_http_response_bytes_total",
                "counter",
                "Response body bytes sent (by Content-Length).",
                self.bytes_out.load(Ordering::Relaxed) as i64,
            ),
            (
                "berth_blob_redirects_total",
                "counter",
                "Blob GETs answered with a presigned redirect.",
                self.redirects.load(Ordering::Relaxed) as i64,
            ),
            (
                "berth_uploads_in_flight",
                "gauge",
                "Upload requests being served.",
                self.uploads_in_flight.load(Ordering::Relaxed),
            ),
            (
                "berth_purged_uploads_total",
                "counter",
                "Abandoned upload sessions removed.",
                self.purged_uploads.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, v) in scalars {
            write_family(&mut out, name, kind, help, [(String::new(), v)]);
        }
        if let Ok(b) = self.biggest.lock()
            && !b.is_empty()
        {
            for (metric, help, pick) in [
                (
                    "berth_repository_bytes",
                    "Bytes a repository's manifests name, each blob once (the biggest, as of the last collection).",
                    0,
                ),
                (
                    "berth_repository_unique_bytes",
                    "Of those, bytes no other repository names.",
                    1,
                ),
                ("berth_repository_tags", "Tags of a repository.", 2),
            ] {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
                for (name, bytes, unique, tags) in b.iter() {
                    let v = [*bytes, *unique, *tags as u64][pick];
                    let _ = writeln!(out, "{metric}{{repository=\"{name}\"}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("endpoint", "ci"), "endpoint=\"ci\"");
        assert_eq!(
            super::label("endpoint", "a\"b\\c\nd"),
            "endpoint=\"a\\\"b\\\\c\\nd\""
        );
    }

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.observe("blob", "GET", 307, Duration::from_millis(3), 0);
        m.observe("blob", "GET", 200, Duration::from_millis(30), 100);
        let text = m.render();
        assert!(
            text.contains(
                "berth_http_requests_total{route=\"blob\",method=\"GET\",status=\"307\"} 1"
            )
        );
        assert!(
            text.contains(
                "berth_http_request_duration_seconds_bucket{route=\"blob\",le=\"0.005\"} 1"
            )
        );
        assert!(text.contains("berth_http_request_duration_seconds_count{route=\"blob\"} 2"));
        assert!(text.contains("berth_blob_redirects_total 1"));
        assert!(text.contains("berth_http_response_bytes_total 100"));
    }
}
