//! Webhook notifications in distribution's event envelope, one bounded queue per endpoint so a
//! slow or dead listener never holds up a push: when a queue is full the event is dropped and
//! counted.

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
}

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

/// Sends events to every configured endpoint.
#[derive(Default)]
pub struct Notifier {
    endpoints: Vec<(EndpointSettings, mpsc::Sender<Event>)>,
    /// Events dropped because a queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Events delivered.
    pub delivered: Arc<AtomicU64>,
    /// Events given up on after their attempts.
    pub failed: Arc<AtomicU64>,
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
            tokio::spawn(deliver(
                client.clone(),
                e.clone(),
                rx,
                n.delivered.clone(),
                n.failed.clone(),
            ));
            n.endpoints.push((e, tx));
        }
        n
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
        for (settings, tx) in &self.endpoints {
            if settings.ignored_actions.iter().any(|a| a == action)
                || settings
                    .ignored_media_types
                    .contains(&event.target.media_type)
            {
                continue;
            }
            if tx.try_send(event.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

async fn deliver(
    client: reqwest::Client,
    e: EndpointSettings,
    mut rx: mpsc::Receiver<Event>,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    while let Some(event) = rx.recv().await {
        // Serialized once: the signature is of these very bytes.
        let body = bytes::Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "events": [event] })).unwrap_or_default(),
        );
        let signed = e.signing_secret.as_deref().map(|k| signature(k, &body));
        let mut ok = false;
        for attempt in 1..=e.threshold.max(1) {
            let mut req = client
                .post(&e.url)
                .timeout(e.timeout)
                .header("content-type", ENVELOPE_MEDIA_TYPE)
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
            tokio::time::sleep(e.backoff).await;
        }
        if ok {
            delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
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
