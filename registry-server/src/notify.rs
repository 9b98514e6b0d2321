//! Webhook notifications in distribution's event envelope (or as CloudEvents), one bounded
//! queue per endpoint so a slow or dead listener never holds up a push: when a queue is full
//! the event is dropped and counted. A failed delivery is tried again after a pause that
//! doubles each time (from the endpoint's `backoff`, up to a minute), `threshold` times in
//! all; then the event is given up on and counted as a dead letter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

/// Media type of the envelope.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// Events waiting per endpoint before new ones are dropped.
const QUEUE: usize = 1024;

/// One webhook endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSettings {
    /// Name for logs.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// Extra headers (e.g. Authorization).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per event before it is dropped.
    pub threshold: u32,
    /// Pause between attempts.
    pub backoff: Duration,
    /// Actions not sent (e.g. `pull`).
    pub ignored_actions: Vec<String>,
    /// Target media types not sent.
    pub ignored_media_types: Vec<String>,
    /// The key each body is signed with, so that the receiver knows it came from here.
    pub signing_secret: Option<String>,
    /// The body's shape.
    pub format: EventFormat,
}

/// How events are written to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// distribution's envelope, `{"events": [...]}`, as its receivers expect.
    #[default]
    Distribution,
    /// One CloudEvents 1.0 event per request, in structured mode
    /// (`application/cloudevents+json`), the distribution event as its `data`.
    CloudEvents,
}

/// CloudEvents' media type for one event in structured mode.
pub const CLOUDEVENTS_MEDIA_TYPE: &str = "application/cloudevents+json";

/// Longest pause between two attempts at one event.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The header carrying a body's signature: `sha256=` and the hex HMAC-SHA256 of the exact
/// bytes sent, keyed with the endpoint's `signingsecret` (the scheme GitHub's webhooks use).
pub const SIGNATURE_HEADER: &str = "x-berth-signature-256";

fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What happened to which object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Media type of the object.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its digest.
    pub digest: String,
    /// Its size again (distribution sends both).
    pub length: u64,
    /// The repository.
    pub repository: String,
    /// Where it can be fetched.
    pub url: String,
    /// The tag, for manifest events by tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The request that caused an event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    /// Request id.
    pub id: String,
    /// Client address (as forwarded, when behind a proxy).
    pub addr: String,
    /// Host the client addressed.
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// Client's User-Agent.
    pub useragent: String,
}

/// One event of the envelope.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// RFC 3339 time.
    pub timestamp: String,
    /// push, pull, delete or mount.
    pub action: String,
    /// The object.
    pub target: Target,
    /// The request.
    pub request: RequestInfo,
    /// Who (the authenticated account, when known).
    pub actor: serde_json::Value,
    /// This registry.
    pub source: serde_json::Value,
}

/// What happened to one endpoint's events in this process.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Delivered.
    pub delivered: AtomicU64,
    /// Given up on after `threshold` attempts (dead letters).
    pub failed: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Dropped because the endpoint's queue was full.
    pub dropped: AtomicU64,
}

/// One endpoint: its settings, its queue, its counts.
struct Endpoint {
    settings: EndpointSettings,
    queue: mpsc::Sender<Event>,
    stats: Arc<EndpointStats>,
}

/// Sends events to every configured endpoint.
#[derive(Default)]
pub struct Notifier {
    endpoints: Vec<Endpoint>,
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::civil_time::CivilTime::of_unix(secs).rfc3339()
}

impl Notifier {
    /// Starts one delivery task per endpoint (call inside a tokio runtime).
    pub fn start(endpoints: Vec<EndpointSettings>) -> Notifier {
        let mut n = Notifier::default();
        let client = reqwest::Client::new();
        for e in endpoints {
            let (tx, rx) = mpsc::channel(QUEUE);
            let stats = Arc::new(EndpointStats::default());
            tokio::spawn(deliver(client.clone(), e.clone(), rx, stats.clone()));
            n.endpoints.push(Endpoint {
                settings: e,
                queue: tx,
                stats,
            });
        }
        n
    }

    /// The Prometheus exposition of every endpoint's counts and queue.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::observe::metrics::{label, write_family};
        if self.endpoints.is_empty() {
            return;
        }
        write_family(
            out,
            "berth_notifications_total",
            "counter",
            "Webhook events by endpoint and outcome (failed: given up on after every attempt).",
            self.endpoints.iter().flat_map(|e| {
                let s = &e.stats;
                [
                    ("delivered", &s.delivered),
                    ("failed", &s.failed),
                    ("retried", &s.retried),
                    ("dropped", &s.dropped),
                ]
                .map(|(result, n)| {
                    (
                        format!(
                            "{},{}",
                            label("endpoint", &e.settings.name),
                            label("result", result)
                        ),
                        n.load(Ordering::Relaxed),
                    )
                })
            }),
        );
        write_family(
            out,
            "berth_notifications_queued",
            "gauge",
            "Webhook events waiting to be sent, by endpoint.",
            self.endpoints.iter().map(|e| {
                (
                    label("endpoint", &e.settings.name),
                    QUEUE - e.queue.capacity(),
                )
            }),
        );
    }

    /// Whether any endpoint listens (skips building events when none does).
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Queues an event for every endpoint that wants it; never waits.
    pub fn emit(&self, action: &str, target: Target, request: RequestInfo, actor: Option<String>) {
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: rfc3339(SystemTime::now()),
            action: action.to_owned(),
            target,
            request,
            actor: actor.map_or(serde_json::json!({}), |a| serde_json::json!({ "name": a })),
            source: serde_json::json!({ "instanceID": instance_id() }),
        };
        for e in &self.endpoints {
            if e.settings.ignored_actions.iter().any(|a| a == action)
                || e.settings
                    .ignored_media_types
                    .contains(&event.target.media_type)
            {
                continue;
            }
            if e.queue.try_send(event.clone()).is_err() {
                e.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// The body sent for `event`, and its content type.
fn body_of(event: &Event, format: EventFormat) -> (bytes::Bytes, &'static str) {
    let value = match format {
        EventFormat::Distribution => serde_json::json!({ "events": [event] }),
        EventFormat::CloudEvents => {
            let subject = match &event.target.tag {
                Some(t) => format!("{}:{t}", event.target.repository),
                None => format!("{}@{}", event.target.repository, event.target.digest),
            };
            serde_json::json!({
                "specversion": "1.0",
                "id": event.id,
                "source": format!("/berth/{}", instance_id()),
                "type": format!("io.berth.registry.{}", event.action),
                "subject": subject,
                "time": event.timestamp,
                "datacontenttype": "application/json",
                "data": event,
            })
        }
    };
    let media_type = match format {
        EventFormat::Distribution => ENVELOPE_MEDIA_TYPE,
        EventFormat::CloudEvents => CLOUDEVENTS_MEDIA_TYPE,
    };
    (
        bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
        media_type,
    )
}

/// The pause after the `attempt`-th failure: `backoff`, doubled each time, at most a minute
/// (or `backoff`, if that is longer).
fn pause_after(backoff: Duration, attempt: u32) -> Duration {
    let doubled = backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF.max(backoff))
}

async fn deliver(
    client: reqwest::Client,
    e: EndpointSettings,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<EndpointStats>,
) {
    while let Some(event) = rx.recv().await {
        // Serialized once: the signature is of these very bytes.
        let (body, media_type) = body_of(&event, e.format);
        let signed = e.signing_secret.as_deref().map(|k| signature(k, &body));
        let mut ok = false;
        let attempts = e.threshold.max(1);
        for attempt in 1..=attempts {
            let mut req = client
                .post(&e.url)
                .timeout(e.timeout)
                .header("content-type", media_type)
                .body(body.clone());
            if let Some(sig) = &signed {
                req = req.header(SIGNATURE_HEADER, sig.as_str());
            }
            for (k, v) in &e.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    ok = true;
                    break;
                }
                Ok(r) => {
                    tracing::warn!(endpoint = %e.name, status = %r.status(), attempt, "notification refused")
                }
                Err(err) => {
                    tracing::warn!(endpoint = %e.name, error = %err, attempt, "notification failed")
                }
            }
            if attempt < attempts {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause_after(e.backoff, attempt)).await;
            }
        }
        if ok {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(endpoint = %e.name, id = %event.id, action = %event.action, repository = %event.target.repository, "a notification was given up on after every attempt");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pauses_double_up_to_a_minute() {
        let ms = Duration::from_millis;
        let p = |attempt| super::pause_after(ms(100), attempt);
        assert_eq!((p(1), p(2), p(3)), (ms(100), ms(200), ms(400)));
        assert_eq!(p(30), Duration::from_secs(60));
        // A configured pause longer than a minute is kept, as configured.
        assert_eq!(
            super::pause_after(Duration::from_secs(90), 3),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn timestamps() {
        let t = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(1_795_392_000 + 3661);
        assert_eq!(super::rfc3339(t), "2026-11-23T01:01:01Z");
        assert_eq!(
            super::rfc3339(std::time::SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }
}
