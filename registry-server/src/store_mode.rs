//! How this process may write its store, decided at startup from what the store was found to
//! honour (`registry_core::storage::guarantees`).
//!
//! - **multi-writer**: the store refuses a create-only put of an existing object and a replace
//!   of a changed one, so any number of replicas (and `berth gc` beside them) arbitrate there.
//! - **single-writer**: the store ignores those conditions (Garage, older MinIO and Ceph RGW)
//!   and `berth.storage.singlewriter` accepts it: this process decides the conditions itself
//!   (`storage_drivers::single_writer`), which holds only while it is the store's one writer.
//!   It says so in a heartbeat object; a second writer that starts waits for the heartbeat to
//!   stop moving and refuses if it does not, and a writer that finds another's heartbeat later
//!   reports it (log, metric, `/readyz` 503) instead of silently losing writes.
//! - **read-only** (`storage.maintenance.readonly`): nothing is written, nothing is probed.
//!
//! Without the switch, a store that ignores the conditions stops Berth at startup with a
//! message saying why and what to do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use registry_core::StorageDriver;
use registry_core::layout;
use registry_core::storage::guarantees::{Guarantees, Presigning, probe};
use registry_core::storage::{PutCondition, StorageError};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::serve::StartupError;

/// How often a single writer rewrites its heartbeat.
pub const BEAT: Duration = Duration::from_secs(5);
/// How long a heartbeat must stay unchanged before its writer counts as gone.
pub const STALE: Duration = Duration::from_secs(12);

/// The way this process writes the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// The store arbitrates between writers.
    MultiWriter,
    /// This process arbitrates, as the store's only writer.
    SingleWriter,
    /// Nothing is written.
    ReadOnly,
}

impl StoreMode {
    /// The name in logs, metrics and `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            StoreMode::MultiWriter => "multi-writer",
            StoreMode::SingleWriter => "single-writer",
            StoreMode::ReadOnly => "read-only",
        }
    }
}

/// The mode, what the probe found, and whether another writer has been seen.
#[derive(Debug)]
pub struct StoreStatus {
    /// The mode in force.
    pub mode: StoreMode,
    /// What the store honoured at startup (none in read-only mode).
    pub guarantees: Option<Guarantees>,
    /// This instance, as its heartbeat names it.
    pub instance: String,
    other_writer: AtomicBool,
}

impl StoreStatus {
    /// A status for a store that was not probed (read-only, or a test's in-memory store).
    pub fn unprobed(mode: StoreMode) -> StoreStatus {
        StoreStatus {
            mode,
            guarantees: None,
            instance: instance_name(),
            other_writer: AtomicBool::new(false),
        }
    }

    /// Whether a single writer has seen another process write its heartbeat.
    pub fn other_writer(&self) -> bool {
        self.other_writer.load(Ordering::SeqCst)
    }

    /// Appends the mode and guarantee families to a Prometheus text exposition.
    pub fn render_metrics(&self, text: &mut String) {
        use crate::observe::metrics::write_family;
        write_family(
            text,
            "berth_store_mode",
            "gauge",
            "The way this process writes the store (1 for the mode in force).",
            [
                StoreMode::MultiWriter,
                StoreMode::SingleWriter,
                StoreMode::ReadOnly,
            ]
            .map(|m| (format!("mode=\"{}\"", m.name()), u8::from(m == self.mode))),
        );
        if let Some(g) = &self.guarantees {
            write_family(
                text,
                "berth_store_guarantee",
                "gauge",
                "What the store honoured when probed at startup (1 honoured, 0 not).",
                [
                    ("conditional_create", g.conditional_create),
                    ("conditional_replace", g.conditional_replace),
                    ("presigned_get", g.presigning == Presigning::Served),
                ]
                .map(|(name, kept)| (format!("guarantee=\"{name}\""), u8::from(kept))),
            );
        }
        write_family(
            text,
            "berth_store_other_writer",
            "gauge",
            "1 once a single-writer Berth has seen another process write the store.",
            [(String::new(), u8::from(self.other_writer()))],
        );
    }
}

/// `host-pid-random`: names this process in its heartbeat and in the probe's scratch key.
fn instance_name() -> String {
    // It becomes part of a key: only characters every store takes in one.
    let host: String = std::env::var("HOSTNAME")
        .unwrap_or_else(|_| "berth".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(63)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// What a single writer's heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Heartbeat {
    instance: String,
    /// Counts up at each beat, so that a beat is a change even within one clock tick.
    beat: u64,
    /// Written when the writer stops cleanly: the next one need not wait.
    stopped: bool,
}

/// Who opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `berth serve`: in single-writer mode it claims the store with its heartbeat.
    Server,
    /// A command that runs and ends (`berth gc`, `berth index rebuild`, ...): in single-writer
    /// mode it refuses to run beside a live server, and leaves no heartbeat behind.
    Command,
}

/// Builds the store for `settings`, probes it, and decides the mode; may turn presigned
/// redirects off in `settings` when the store refuses its own URLs.
pub async fn open(
    settings: &mut Settings,
    role: Role,
) -> Result<(Arc<dyn StorageDriver>, Arc<StoreStatus>), StartupError> {
    let store = crate::backend::build(&settings.storage, settings.retry)?;
    if settings.read_only {
        tracing::info!(mode = "read-only", "store not probed: nothing is written");
        return Ok((store, Arc::new(StoreStatus::unprobed(StoreMode::ReadOnly))));
    }
    let instance = instance_name();
    let found = probe(
        store.as_ref(),
        &layout::store_probe(&instance),
        fetch_presigned,
    )
    .await
    .map_err(|e| StartupError::Io(format!("cannot probe the store: {e}")))?;
    tracing::info!(
        backend = store.name(),
        conditional_create = found.conditional_create,
        conditional_replace = found.conditional_replace,
        presigning = ?found.presigning,
        "store probed"
    );
    match &found.presigning {
        Presigning::Refused(why) if settings.redirect => {
            tracing::warn!(
                reason = %why,
                "the store refused a URL it presigned: blobs are served through Berth instead of redirects"
            );
            settings.redirect = false;
        }
        Presigning::Unchecked(why) if settings.redirect => tracing::warn!(
            reason = %why,
            "a presigned URL could not be fetched from here; clients are still redirected to such URLs"
        ),
        _ => {}
    }
    let (store, mode) = if found.arbitrates_writers() {
        (store, StoreMode::MultiWriter)
    } else if settings.single_writer {
        let wrapped: Arc<dyn StorageDriver> =
            Arc::new(storage_drivers::single_writer::SingleWriter::new(store));
        (wrapped, StoreMode::SingleWriter)
    } else {
        return Err(StartupError::Io(format!(
            "the store ignores conditional writes ({}): two Berth processes could both claim one \
             upload offset or the collection lease, and lose data. Run a single Berth process with \
             berth.storage.singlewriter: true (chart: singleWriter: true), or use a store that \
             honours If-None-Match and If-Match (README, \"Store compatibility\")",
            describe(&found)
        )));
    };
    let status = Arc::new(StoreStatus {
        mode,
        guarantees: Some(found),
        instance,
        other_writer: AtomicBool::new(false),
    });
    if mode == StoreMode::SingleWriter {
        tracing::warn!(
            instance = %status.instance,
            "single-writer mode: the store ignores conditional writes; this must be the only Berth process writing it"
        );
        claim(store.as_ref(), &status, role).await?;
    }
    Ok((store, status))
}

fn describe(g: &Guarantees) -> String {
    let word = |kept: bool| if kept { "honoured" } else { "ignored" };
    format!(
        "create-only put {}, replace-if-unchanged put {}",
        word(g.conditional_create),
        word(g.conditional_replace)
    )
}

/// GETs `url` and says whether it served `expected`.
async fn fetch_presigned(url: String, expected: Bytes) -> Presigning {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Presigning::Unchecked(e.to_string()),
    };
    match client.get(&url).send().await {
        Err(e) => Presigning::Unchecked(e.to_string()),
        // A 4xx is the store's verdict on the URL; a 5xx says nothing about it.
        Ok(r) if r.status().is_client_error() => Presigning::Refused(r.status().to_string()),
        Ok(r) if !r.status().is_success() => Presigning::Unchecked(r.status().to_string()),
        Ok(r) => match r.bytes().await {
            Ok(b) if b == expected => Presigning::Served,
            Ok(_) => Presigning::Refused("the URL served other bytes".into()),
            Err(e) => Presigning::Unchecked(e.to_string()),
        },
    }
}

async fn read_heartbeat(store: &dyn StorageDriver) -> Result<Option<Heartbeat>, StorageError> {
    match store.read_small(&layout::single_writer_heartbeat()).await {
        Ok((body, _)) => Ok(serde_json::from_slice(&body).ok()),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn write_heartbeat(store: &dyn StorageDriver, beat: &Heartbeat) -> Result<(), StorageError> {
    let body = serde_json::to_vec(beat).map_err(StorageError::backend)?;
    store
        .put_bytes(
            &layout::single_writer_heartbeat(),
            Bytes::from(body),
            PutCondition::Overwrite,
        )
        .await
        .map(|_| ())
}

/// Becomes the store's single writer: waits out a heartbeat left by a writer that did not
/// stop cleanly, refuses when that heartbeat still moves, then (a server) writes its own.
async fn claim(
    store: &dyn StorageDriver,
    status: &StoreStatus,
    role: Role,
) -> Result<(), StartupError> {
    let io = |e: StorageError| StartupError::Io(format!("single-writer heartbeat: {e}"));
    if let Some(seen) = read_heartbeat(store).await.map_err(io)?
        && !seen.stopped
    {
        tracing::info!(
            other = %seen.instance,
            wait = ?STALE,
            "a single-writer heartbeat is in the store: waiting to see whether its writer is alive"
        );
        tokio::time::sleep(STALE).await;
        if let Some(now) = read_heartbeat(store).await.map_err(io)?
            && !now.stopped
            && now != seen
        {
            return Err(StartupError::Io(format!(
                "another Berth ({}) writes this store in single-writer mode; the store cannot \
                 arbitrate between two writers (it ignores conditional writes). Stop it first",
                now.instance
            )));
        }
    }
    if role == Role::Command {
        return Ok(());
    }
    write_heartbeat(
        store,
        &Heartbeat {
            instance: status.instance.clone(),
            beat: 0,
            stopped: false,
        },
    )
    .await
    .map_err(io)
}

/// Rewrites the heartbeat every [`BEAT`] and reports another writer's heartbeat found in its
/// place. Runs for the life of a single-writer server.
pub async fn keep_beating(store: Arc<dyn StorageDriver>, status: Arc<StoreStatus>) {
    let mut beat = 0u64;
    loop {
        tokio::time::sleep(BEAT).await;
        match read_heartbeat(store.as_ref()).await {
            Ok(Some(seen)) if seen.instance != status.instance && !seen.stopped => {
                if !status.other_writer.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        other = %seen.instance,
                        "another Berth writes this store, which cannot arbitrate between writers: stop all but one (single-writer mode)"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "single-writer heartbeat not read"),
        }
        beat += 1;
        let mine = Heartbeat {
            instance: status.instance.clone(),
            beat,
            stopped: false,
        };
        if let Err(e) = write_heartbeat(store.as_ref(), &mine).await {
            tracing::warn!(error = %e, "single-writer heartbeat not written");
        }
    }
}

/// Says in the heartbeat that this writer stopped, so the next one starts without waiting.
pub async fn release(store: &dyn StorageDriver, status: &StoreStatus) {
    if status.mode != StoreMode::SingleWriter {
        return;
    }
    let last = Heartbeat {
        instance: status.instance.clone(),
        beat: u64::MAX,
        stopped: true,
    };
    if let Err(e) = write_heartbeat(store, &last).await {
        tracing::warn!(error = %e, "single-writer heartbeat not released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_the_mode_in_force_and_what_was_probed() {
        let status = StoreStatus {
            mode: StoreMode::SingleWriter,
            guarantees: Some(Guarantees {
                conditional_create: false,
                conditional_replace: false,
                presigning: Presigning::Served,
            }),
            instance: "test".into(),
            other_writer: AtomicBool::new(false),
        };
        let mut text = String::new();
        status.render_metrics(&mut text);
        for line in [
            "berth_store_mode{mode=\"single-writer\"} 1",
            "berth_store_mode{mode=\"multi-writer\"} 0",
            "berth_store_guarantee{guarantee=\"conditional_replace\"} 0",
            "berth_store_guarantee{guarantee=\"presigned_get\"} 1",
            "berth_store_other_writer 0",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        let mut text = String::new();
        StoreStatus::unprobed(StoreMode::ReadOnly).render_metrics(&mut text);
        assert!(text.contains("berth_store_mode{mode=\"read-only\"} 1"));
        assert!(!text.contains("berth_store_guarantee"), "{text}");
    }

    #[test]
    fn instance_names_are_one_key_segment() {
        let name = instance_name();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "{name}"
        );
        assert_ne!(name, instance_name(), "two processes' names differ");
    }
}
