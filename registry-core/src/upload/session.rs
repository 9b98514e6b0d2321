//! The upload state machine: start, append chunks, report status, finish, cancel.
//!
//! Bytes go into the backend's multipart write in parts of the backend's part size. On object
//! stores every part but the last must have that size, so a tail shorter than a part is staged
//! as a small object and joined with the next chunk (or, at the end, copied into the last part
//! inside the store). The state object is rewritten with an if-version condition every few
//! parts and at the end of each request, so a crash loses at most the parts since the last
//! commit and two replicas can never both append at one offset.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::oneshot;

use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::names::RepositoryName;
use crate::storage::{
    ByteStream, ObjectVersion, PartPolicy, PartSlot, PutCondition, StorageDriver, StorageError,
};
use crate::upload::hash_feed::HashFeed;
use crate::upload::hashed_body::{BodyFailure, HashOutcome, OnFailure, hashed_body};
use crate::upload::state::{StagedFragment, UploadState};

/// A blob an upload ended with, verified and at its content-addressed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedBlob {
    /// Its size in bytes.
    pub size: u64,
}

/// What the caller of a finish does once the bytes are verified, while they are published
/// (linking them into the repository): one round trip instead of two.
pub type Alongside<'a> = futures::future::BoxFuture<'a, Result<()>>;

/// Where a finished session's bytes are, together.
enum Assembled {
    /// In one object.
    Object(String),
    /// In memory (small fragments kept in the state).
    Bytes(Bytes),
}

/// Upload operations over a storage driver.
pub struct UploadSessions {
    store: Arc<dyn StorageDriver>,
    recent: crate::upload::recent_states::RecentStates<Loaded>,
}

/// What a request's URL says of its session: made with the URL the start gave (nothing
/// stored yet), and the tag of the state the replica that answered last kept in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionUrl {
    /// The URL the start gave.
    pub fresh: bool,
    /// The tag a previous answer's Location carried.
    pub tag: Option<u32>,
}

impl From<bool> for SessionUrl {
    fn from(fresh: bool) -> SessionUrl {
        SessionUrl { fresh, tag: None }
    }
}

/// Checks an upload id is a UUID and returns its canonical form (it becomes part of a key).
pub fn parse_upload_id(id: &str) -> Result<String> {
    let u = uuid::Uuid::try_parse(id).map_err(|_| RegistryError::BlobUploadUnknown)?;
    Ok(u.hyphenated().to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_state() -> UploadState {
    UploadState::new(
        now_secs(),
        hex::encode(DigestHasher::new(Algorithm::Sha256).save()),
    )
}

fn hasher_of(state: &UploadState) -> Result<DigestHasher> {
    let raw = hex::decode(&state.hash_state)
        .map_err(|_| RegistryError::BlobUploadInvalid("corrupt upload state".into()))?;
    DigestHasher::restore(Algorithm::Sha256, &raw)
        .map_err(|_| RegistryError::BlobUploadInvalid("corrupt upload state".into()))
}

/// Takes exactly `n` bytes from the front of a rope, splitting a chunk if needed.
fn take_front(buf: &mut Vec<Bytes>, n: u64) -> Vec<Bytes> {
    let mut taken = Vec::new();
    let mut need = n as usize;
    let mut rest = Vec::with_capacity(buf.len());
    for mut chunk in buf.drain(..) {
        if need == 0 {
            rest.push(chunk);
        } else if chunk.len() <= need {
            need -= chunk.len();
            taken.push(chunk);
        } else {
            taken.push(chunk.split_to(need));
            need = 0;
            rest.push(chunk);
        }
    }
    *buf = rest;
    taken
}

/// Loaded session plus the version it was read at (`None`: not stored yet, written first by
/// a create-only write).
struct Loaded {
    state: UploadState,
    version: Option<ObjectVersion>,
}

/// Appends one request's bytes to a session, uploading each full part while the next one
/// arrives, committing state every few parts (a crash loses at most those since the last
/// commit) and at its end.
struct Appender<'a> {
    store: &'a dyn StorageDriver,
    name: &'a RepositoryName,
    id: &'a str,
    policy: PartPolicy,
    state: UploadState,
    version: Option<ObjectVersion>,
    hasher: DigestHasher,
    buf: Vec<Bytes>,
    buf_len: u64,
    /// Staged fragments already joined into parts, deleted once a commit no longer names them.
    joined: Vec<StagedFragment>,
    /// Whether this request changed the session since the state was last committed.
    changed: bool,
    /// Parts written since the state was last committed.
    uncommitted_parts: u32,
    /// The store, for the part upload that runs on while the request reads on.
    shared: Arc<dyn StorageDriver>,
    /// The full part uploading while the next one is received.
    in_flight: Option<tokio::task::JoinHandle<PartResult>>,
}

impl Drop for Appender<'_> {
    /// A request that ends early (its client gone, an error) stops its part upload too, so
    /// that no part's bytes outlive the request that holds them.
    fn drop(&mut self) {
        if let Some(upload) = self.in_flight.take() {
            upload.abort();
        }
    }
}

/// What a part's upload gives.
type PartResult = std::result::Result<crate::storage::WrittenPart, StorageError>;
/// A part's upload task, ended.
type PartDone = std::result::Result<PartResult, tokio::task::JoinError>;

/// A tail up to this size rides in the state (hex) instead of an object of its own: the small
/// layers and configs of an image cost no extra write.
const INLINE_MAX: u64 = 32 << 10;

/// Parts a request writes between commits of the state: what a crash can lose (32 MiB at the
/// default part size), against a state write per part. Two spare the write in the middle of
/// the common layer of one to two parts.
const COMMIT_EVERY_PARTS: u32 = 2;

impl<'a> Appender<'a> {
    fn data_key(&self) -> String {
        layout::upload_data(self.name, self.id)
    }

    async fn commit(&mut self) -> Result<()> {
        self.uncommitted_parts = 0;
        self.state.hash_state = hex::encode(self.hasher.save());
        self.version =
            Some(write_state(self.store, self.name, self.id, &self.state, &self.version).await?);
        for f in std::mem::take(&mut self.joined)
            .into_iter()
            .filter(|f| f.inline.is_none())
        {
            // Unreferenced now; a failure here only leaves garbage for upload purging.
            let _ = self
                .store
                .delete(&layout::upload_staged(self.name, self.id, f.generation))
                .await;
        }
        Ok(())
    }

    async fn ensure_multipart(&mut self) -> Result<()> {
        if self.state.multipart.is_none() {
            self.state.multipart = Some(self.store.create_multipart(&self.data_key()).await?);
        }
        Ok(())
    }

    async fn push(&mut self, chunk: Bytes) -> Result<()> {
        self.buf_len += chunk.len() as u64;
        self.buf.push(chunk);
        while self.state.staged_len() + self.buf_len >= self.policy.part_size {
            self.write_fixed_part().await?;
        }
        Ok(())
    }

    async fn read_staged(&self) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(self.state.staged.len());
        for f in &self.state.staged {
            let b = match &f.inline {
                Some(hex_bytes) => Bytes::from(hex::decode(hex_bytes).map_err(|_| {
                    RegistryError::BlobUploadInvalid("corrupt upload state".into())
                })?),
                None => {
                    self.store
                        .read_small(&layout::upload_staged(self.name, self.id, f.generation))
                        .await?
                        .0
                }
            };
            if b.len() as u64 != f.len {
                return Err(RegistryError::BlobUploadInvalid(
                    "staged upload data is incomplete".into(),
                ));
            }
            out.push(b);
        }
        Ok(out)
    }

    /// The multipart write (started if need be) and the slot of its next part.
    async fn next_slot(&mut self) -> Result<(crate::storage::MultipartHandle, PartSlot)> {
        self.ensure_multipart().await?;
        let handle = self
            .state
            .multipart
            .clone()
            .ok_or(RegistryError::BlobUploadUnknown)?;
        let slot = PartSlot {
            index: self.state.parts.len(),
            offset: self.state.parts_bytes,
            writer: self.state.claim,
        };
        Ok((handle, slot))
    }

    async fn write_part(&mut self, data: Vec<Bytes>, len: u64) -> Result<()> {
        let (handle, slot) = self.next_slot().await?;
        let part = self
            .store
            .put_part(&self.data_key(), &handle, slot, data)
            .await?;
        self.state.parts.push(part);
        self.state.parts_bytes += len;
        Ok(())
    }

    /// Starts uploading the next full part and returns while it uploads, so that the request's
    /// next bytes arrive meanwhile; the part before it is settled first (one in flight).
    async fn write_fixed_part(&mut self) -> Result<()> {
        // Settled (and committed, when due) before this part's bytes enter the hash, so that a
        // commit never records a hash ahead of the parts it names.
        self.settle().await?;
        let staged_len = self.state.staged_len();
        let fresh = take_front(&mut self.buf, self.policy.part_size - staged_len);
        self.buf_len -= self.policy.part_size - staged_len;
        for c in &fresh {
            self.hasher.update(c);
        }
        let mut data = self.read_staged().await?;
        data.extend(fresh);
        let (handle, slot) = self.next_slot().await?;
        let (store, key) = (self.shared.clone(), self.data_key());
        // A task of its own (not a future held across the request's awaits): it runs while
        // the body is read, and is aborted with the request if that ends first.
        let upload = tokio::spawn(async move { store.put_part(&key, &handle, slot, data).await });
        let joined = std::mem::take(&mut self.state.staged);
        self.joined.extend(joined);
        self.changed = true;
        self.in_flight = Some(upload);
        Ok(())
    }

    /// Waits for the part in flight, records it, and commits every few parts.
    async fn settle(&mut self) -> Result<()> {
        let Some(upload) = self.in_flight.take() else {
            return Ok(());
        };
        self.record(upload.await).await
    }

    /// Records a part whose upload ended, and commits every few parts.
    async fn record(&mut self, done: PartDone) -> Result<()> {
        let part = done.map_err(|e| {
            RegistryError::BlobUploadInvalid(format!("a part's upload stopped: {e}"))
        })??;
        self.state.parts.push(part);
        self.state.parts_bytes += self.policy.part_size;
        self.state.offset = self.state.parts_bytes;
        self.uncommitted_parts += 1;
        if self.uncommitted_parts < COMMIT_EVERY_PARTS {
            return Ok(());
        }
        self.changed = false;
        self.commit().await
    }

    /// Persists what is buffered at the end of a request and commits. A tail too large to
    /// ride in the state is written as a staged object beside the commit that names it, not
    /// before: one round trip. Should the object's write fail where the commit did not, the
    /// commit is taken back; if even that fails, the session names bytes it lacks, which its
    /// finish detects (it checks each fragment's length) and refuses: a failed upload, never
    /// a wrong blob.
    async fn end(&mut self) -> Result<()> {
        self.settle().await?;
        // What to take back to: the state as it stands, with the hash through its bytes.
        let mut before = self.state.clone();
        before.hash_state = hex::encode(self.hasher.save());
        let mut staged_write = None;
        if self.buf_len > 0 {
            let data = Bytes::from(std::mem::take(&mut self.buf).concat());
            let len = std::mem::take(&mut self.buf_len);
            self.hasher.update(&data);
            let generation = uuid::Uuid::new_v4().as_u64_pair().0 >> 1;
            let inline = if len <= INLINE_MAX {
                Some(hex::encode(&data))
            } else {
                let key = layout::upload_staged(self.name, self.id, generation);
                let store = self.shared.clone();
                staged_write =
                    Some(async move { store.put_bytes(&key, data, PutCondition::Overwrite).await });
                None
            };
            self.state.staged.push(StagedFragment {
                generation,
                len,
                inline,
            });
            self.state.offset += len;
            self.changed = true;
        }
        // A request that brought no bytes (a PUT that only finishes) left the claim as it was.
        if !self.changed {
            return Ok(());
        }
        self.changed = false;
        let Some(staged_write) = staged_write else {
            return self.commit().await;
        };
        let (written, committed) = futures::join!(staged_write, self.commit());
        match (written, committed) {
            (Ok(_), committed) => committed,
            (Err(e), Ok(())) => {
                let state = before;
                if let Some(now) = self.version.clone()
                    && let Ok(back) =
                        write_state(self.store, self.name, self.id, &state, &Some(now)).await
                {
                    self.state = state;
                    self.version = Some(back);
                }
                Err(e.into())
            }
            (Err(e), Err(_)) => Err(e.into()),
        }
    }
}

/// A state as its object holds it.
fn encode_state(state: &UploadState) -> Result<Bytes> {
    serde_json::to_vec(state)
        .map(Bytes::from)
        .map_err(|e| RegistryError::BlobUploadInvalid(e.to_string()))
}

async fn write_state(
    store: &dyn StorageDriver,
    name: &RepositoryName,
    id: &str,
    state: &UploadState,
    version: &Option<ObjectVersion>,
) -> Result<ObjectVersion> {
    let json = encode_state(state)?;
    let condition = match version {
        Some(v) => PutCondition::IfVersion(v.clone()),
        None => PutCondition::CreateOnly,
    };
    match store
        .put_bytes(&layout::upload_state(name, id), json, condition)
        .await
    {
        Ok(info) => Ok(info.version),
        Err(
            StorageError::Precondition(_)
            | StorageError::NotFound(_)
            | StorageError::AlreadyExists(_),
        ) => Err(RegistryError::Conflict(
            "upload was changed or ended by another request".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// What a request's URL says of its session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Stored: read it.
    Stored,
    /// Maybe not stored yet: read it, and take it as new if it is not there.
    Asked,
    /// Maybe not stored yet, and a wrong guess is caught later: take it as new unread.
    Unasked,
}

impl Freshness {
    /// For a request made with the URL `start` gave (`fresh`) or a later one, read first.
    fn asked(fresh: bool) -> Freshness {
        if fresh {
            Freshness::Asked
        } else {
            Freshness::Stored
        }
    }
}

/// How a session was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its id.
    pub id: String,
    /// Nothing is stored yet: requests made with the URL `start` gave (they say so) take the
    /// session as new instead of reading its state, and the first chunk writes it.
    pub deferred: bool,
}

impl UploadSessions {
    /// Upload operations over `store`.
    pub fn new(store: Arc<dyn StorageDriver>) -> Self {
        UploadSessions {
            store,
            recent: Default::default(),
        }
    }

    /// The part size clients should use (advertised as `OCI-Chunk-Min-Length`), where it matters.
    pub fn chunk_min_length(&self) -> Option<u64> {
        let p = self.store.part_policy();
        p.fixed_size.then_some(p.part_size)
    }

    /// Starts a session. On object stores nothing is written: the state costs a request, and
    /// the first chunk writes it anyway (create-only, so of two racing first chunks one
    /// wins). Local disk writes it at once, as its claims need a state to bump.
    pub async fn start(&self, name: &RepositoryName) -> Result<Started> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        if self.store.part_policy().fixed_size {
            return Ok(Started { id, deferred: true });
        }
        self.store
            .put_bytes(
                &layout::upload_state(name, &id),
                encode_state(&new_state())?,
                PutCondition::CreateOnly,
            )
            .await?;
        Ok(Started {
            id,
            deferred: false,
        })
    }

    /// The stored state of a session; `None` when none was ever written (or the purge
    /// removed it), `BlobUploadUnknown` when it was cancelled.
    async fn load(&self, name: &RepositoryName, id: &str) -> Result<Option<Loaded>> {
        match self.store.read_small(&layout::upload_state(name, id)).await {
            Ok((body, info)) => {
                let state: UploadState = serde_json::from_slice(&body)
                    .map_err(|_| RegistryError::BlobUploadInvalid("corrupt upload state".into()))?;
                if state.ended {
                    return Err(RegistryError::BlobUploadUnknown);
                }
                Ok(Some(Loaded {
                    state,
                    version: Some(info.version),
                }))
            }
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A session's state: read, and new if `fresh` and none was written yet. A chunk made
    /// with the URL `start` gave (`Unasked`) beginning at 0 takes it as new without asking,
    /// on object stores: if a state was written after all (a client that kept using that
    /// URL), the create-only commit fails and nothing the chunk wrote counts.
    async fn load_or_new(
        &self,
        name: &RepositoryName,
        id: &str,
        fresh: Freshness,
        expected_start: Option<u64>,
        tag: Option<u32>,
    ) -> Result<Loaded> {
        let unwritten = || Loaded {
            state: new_state(),
            version: None,
        };
        if let Some(tag) = tag
            && fresh == Freshness::Stored
            && let Some(kept) = self.recent.take(name, id, tag)
        {
            return Ok(kept);
        }
        if fresh == Freshness::Unasked
            && self.store.part_policy().fixed_size
            && expected_start.unwrap_or(0) == 0
        {
            return Ok(unwritten());
        }
        let fresh = fresh != Freshness::Stored;
        match self.load(name, id).await? {
            Some(l) => Ok(l),
            None if fresh => Ok(unwritten()),
            None => Err(RegistryError::BlobUploadUnknown),
        }
    }

    /// Loads a session, claiming it where parts share one file: the claim is a conditional
    /// write, so of two requests acting on one version of the state only one proceeds.
    async fn claim(
        &self,
        name: &RepositoryName,
        id: &str,
        fresh: Freshness,
        expected_start: Option<u64>,
        tag: Option<u32>,
    ) -> Result<Loaded> {
        let mut l = self
            .load_or_new(name, id, fresh, expected_start, tag)
            .await?;
        if let Some(start) = expected_start
            && start != l.state.offset
        {
            return Err(RegistryError::UploadRangeInvalid {
                offset: l.state.offset,
            });
        }
        if !self.store.part_policy().fixed_size {
            l.state.claim += 1;
            l.version =
                Some(write_state(self.store.as_ref(), name, id, &l.state, &l.version).await?);
        }
        Ok(l)
    }

    /// Bytes received so far. `fresh`: the request was made with the URL `start` gave.
    pub async fn status(&self, name: &RepositoryName, id: &str, fresh: bool) -> Result<u64> {
        let l = self
            .load_or_new(name, id, Freshness::asked(fresh), None, None)
            .await?;
        Ok(l.state.offset)
    }

    /// Appends a request body; `range` is the Content-Range, if one was sent; `fresh`: the
    /// request was made with the URL `start` gave. Returns the new offset.
    pub async fn append(
        &self,
        name: &RepositoryName,
        id: &str,
        url: impl Into<SessionUrl>,
        range: Option<crate::upload::ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        Ok(self.append_tagged(name, id, url, range, body).await?.0)
    }

    /// As [`append`](Self::append); also the tag the next request's URL may carry, on
    /// object stores, for this replica to take the state it left from memory.
    pub async fn append_tagged(
        &self,
        name: &RepositoryName,
        id: &str,
        url: impl Into<SessionUrl>,
        range: Option<crate::upload::ChunkRange>,
        body: ByteStream,
    ) -> Result<(u64, Option<u32>)> {
        let url = url.into();
        let fresh = if url.fresh {
            Freshness::Unasked
        } else {
            Freshness::Stored
        };
        let l = self
            .claim(name, id, fresh, range.map(|r| r.start), url.tag)
            .await?;
        let unwritten = l.version.is_none();
        let mut app = self.appender(name, id, l)?;
        match append_body(&mut app, body, range.map(|r| r.len())).await {
            Ok(()) => {
                let offset = app.state.offset;
                // Where parts share one file (local disk) every request claims the session
                // by a write of its state anyway, and reading it back is cheap.
                let tag = match (&app.version, self.store.part_policy().fixed_size) {
                    (Some(version), true) => {
                        let weight = std::mem::size_of::<UploadState>()
                            + app.state.hash_state.len()
                            + app
                                .state
                                .staged
                                .iter()
                                .map(|f| f.inline.as_ref().map_or(0, String::len) + 64)
                                .sum::<usize>()
                            + app.state.parts.len() * 128;
                        Some(self.recent.keep(
                            name,
                            id,
                            Loaded {
                                state: app.state.clone(),
                                version: Some(version.clone()),
                            },
                            weight,
                        ))
                    }
                    _ => None,
                };
                Ok((offset, tag))
            }
            // Taken as new without asking, but another request had written it (a first chunk
            // sent twice): this one's parts count for nothing, and the client learns where
            // the session is.
            Err(RegistryError::Conflict(_)) if unwritten => {
                if let Some(h) = app.state.multipart.take() {
                    let _ = self.store.abort_multipart(&app.data_key(), &h).await;
                }
                drop(app);
                match self.load(name, id).await? {
                    Some(l) => Err(RegistryError::UploadRangeInvalid {
                        offset: l.state.offset,
                    }),
                    None => Err(RegistryError::BlobUploadUnknown),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn appender<'a>(
        &'a self,
        name: &'a RepositoryName,
        id: &'a str,
        l: Loaded,
    ) -> Result<Appender<'a>> {
        Ok(Appender {
            store: self.store.as_ref(),
            name,
            id,
            policy: self.store.part_policy(),
            hasher: hasher_of(&l.state)?,
            state: l.state,
            version: l.version,
            buf: Vec::new(),
            buf_len: 0,
            joined: Vec::new(),
            changed: false,
            uncommitted_parts: 0,
            shared: self.store.clone(),
            in_flight: None,
        })
    }

    /// Completes a session with the client's final body and digest; on success the blob is at its
    /// content-addressed key, and `alongside` (run once the bytes are verified) has run.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        name: &RepositoryName,
        id: &str,
        url: impl Into<SessionUrl>,
        digest: &Digest,
        range: Option<crate::upload::ChunkRange>,
        body: ByteStream,
        alongside: Alongside<'_>,
    ) -> Result<FinishedBlob> {
        // Asked even with the URL `start` gave: taking a session with bytes as new would
        // finish it as an empty one, and discard it.
        let url = url.into();
        let fresh = Freshness::asked(url.fresh);
        let l = self
            .claim(name, id, fresh, range.map(|r| r.start), url.tag)
            .await?;
        // Whatever this replica kept of the session is past.
        self.recent.forget(name, id);
        if l.state.is_pristine() {
            // The whole blob arrives in this request: stream it straight to storage.
            let stored_state = l.version.is_some();
            let (finished, ()) = futures::join!(
                self.stream_verified(name, id, digest, body, range.map(|r| r.len()), alongside),
                self.end_now(name, id, stored_state),
            );
            let data = vec![layout::upload_data(name, id)];
            self.remove_rest(name, id, data, finished.is_ok()).await;
            return finished;
        }
        let mut app = self.appender(name, id, l)?;
        let source = if app.state.assembled {
            // A session assembled by an older version of Berth, which recorded it.
            Assembled::Object(layout::upload_data(name, id))
        } else {
            append_body(&mut app, body, range.map(|r| r.len())).await?;
            self.assemble(&mut app).await?
        };
        let computed = match &source {
            _ if digest.algorithm() == Algorithm::Sha256 => app.hasher.clone().finish(),
            Assembled::Object(key) => self.hash_object(key, digest.algorithm()).await?,
            Assembled::Bytes(b) => Digest::of(digest.algorithm(), b),
        };
        let size = app.state.offset;
        // Its objects: the one the blob is published from (if any) and staged fragments.
        let mut objects: Vec<String> = app
            .state
            .staged
            .iter()
            .filter(|f| f.inline.is_none())
            .map(|f| layout::upload_staged(name, id, f.generation))
            .collect();
        if let Assembled::Object(k) = &source
            && !objects.contains(k)
        {
            objects.push(k.clone());
        }
        let (result, ()) = futures::join!(
            self.place(&source, size, digest, &computed, alongside),
            self.end_now(name, id, true),
        );
        self.remove_rest(name, id, objects, result.is_ok()).await;
        result.map(|()| FinishedBlob { size })
    }

    /// Ends a finished session beside the publish: its state (when one was stored) goes now,
    /// so that the session is gone by the time the client is answered.
    async fn end_now(&self, name: &RepositoryName, id: &str, stored_state: bool) {
        if stored_state {
            // A failure leaves garbage for the purge, never a failed upload.
            let _ = self.store.delete(&layout::upload_state(name, id)).await;
        }
    }

    /// Removes what is left of a finished session (`objects`, which its blob may have been
    /// published from), in one batch: after the answer when the finish succeeded (the purge
    /// removes them if this process dies first), at once when it failed.
    async fn remove_rest(
        &self,
        name: &RepositoryName,
        id: &str,
        objects: Vec<String>,
        succeeded: bool,
    ) {
        let store = self.store.clone();
        let prefix = layout::upload_prefix(name, id);
        let removal = async move {
            let _ = store.delete_known(&prefix, &objects).await;
        };
        if succeeded {
            tokio::spawn(removal);
        } else {
            removal.await;
        }
    }

    /// Brings every byte of the session together: the completed multipart write at the data
    /// key, a lone staged fragment where it is (a blob smaller than a part: no copy), or the
    /// bytes of fragments that fit in memory (the tails of small blobs, kept in the state).
    /// The state is not rewritten: a finish tried again after a crash finds the multipart
    /// write completed by the object at the data key.
    async fn assemble(&self, app: &mut Appender<'_>) -> Result<Assembled> {
        let data_key = app.data_key();
        let staged_len = app.state.staged_len();
        let source = match app.state.multipart.clone() {
            Some(handle) => {
                let completed: Result<()> = async {
                    if let [tail] = app.state.staged.clone().as_slice()
                        && tail.inline.is_none()
                    {
                        // The last part may be short: copied inside the store where it can be.
                        let (_, slot) = app.next_slot().await?;
                        let part = self
                            .store
                            .put_part_copy(
                                &data_key,
                                &handle,
                                slot,
                                &layout::upload_staged(app.name, app.id, tail.generation),
                                tail.len,
                            )
                            .await?;
                        app.state.parts.push(part);
                        app.state.parts_bytes += staged_len;
                    } else if staged_len > 0 {
                        let staged = app.read_staged().await?;
                        app.write_part(staged, staged_len).await?;
                    }
                    self.store
                        .complete_multipart(
                            &data_key,
                            &handle,
                            &app.state.parts,
                            app.state.parts_bytes,
                        )
                        .await?;
                    Ok(())
                }
                .await;
                if let Err(e) = completed {
                    // Completed by an earlier try of this finish?
                    match self.store.stat(&data_key).await {
                        Ok(info) if info.size == app.state.offset => {}
                        _ => return Err(e),
                    }
                }
                Assembled::Object(data_key)
            }
            None if app.state.staged.len() == 1 && app.state.staged[0].inline.is_none() => {
                Assembled::Object(layout::upload_staged(
                    app.name,
                    app.id,
                    app.state.staged[0].generation,
                ))
            }
            None => Assembled::Bytes(Bytes::from(app.read_staged().await?.concat())),
        };
        app.state.assembled = true;
        Ok(source)
    }

    async fn hash_object(&self, key: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut hasher = DigestHasher::new(algorithm);
        let mut body = self.store.get(key, None).await?.body;
        while let Some(chunk) = body.next().await {
            hasher.update(&chunk?);
        }
        Ok(hasher.finish())
    }

    /// Puts verified bytes at the blob's key, or refuses them when the digest differs. They are
    /// published without asking first, even when the same bytes may be stored already: the
    /// same bytes written again are harmless, a fresh push (the common case) saves a request,
    /// and what this process remembers of another blob can be stale (a collection on another
    /// replica may have removed it).
    async fn place(
        &self,
        source: &Assembled,
        size: u64,
        expected: &Digest,
        computed: &Digest,
        alongside: Alongside<'_>,
    ) -> Result<()> {
        if computed != expected {
            if let Assembled::Object(key) = source {
                let _ = self.store.delete(key).await;
            }
            return Err(RegistryError::DigestInvalid(format!(
                "content digest is {computed}"
            )));
        }
        let blob_key = layout::blob_data(expected);
        let publish = async {
            match source {
                // What is left at the source goes with the session, right after.
                Assembled::Object(key) => self.store.publish(key, &blob_key, size).await?,
                Assembled::Bytes(b) => {
                    self.store
                        .put_bytes(&blob_key, b.clone(), PutCondition::Overwrite)
                        .await?;
                }
            }
            Ok(())
        };
        // New bytes: a candidate of the next incremental collection, until a revision refers
        // to them (see `registry::references`).
        let candidate = async {
            self.store
                .put_bytes(
                    &layout::gc_candidate(expected),
                    Bytes::new(),
                    PutCondition::Overwrite,
                )
                .await?;
            Ok(())
        };
        futures::try_join!(publish, alongside, candidate)?;
        Ok(())
    }

    /// Streams a whole blob to storage, hashing on the way, and places it if the digest matches.
    async fn stream_verified(
        &self,
        name: &RepositoryName,
        id: &str,
        digest: &Digest,
        body: ByteStream,
        expected_len: Option<u64>,
        alongside: Alongside<'_>,
    ) -> Result<FinishedBlob> {
        let (done, outcome) = oneshot::channel();
        let feed = HashFeed::resume(DigestHasher::new(digest.algorithm()), expected_len);
        let body = hashed_body(body, feed, expected_len, OnFailure::Fail, done);
        let data_key = layout::upload_data(name, id);
        let mut outcome = outcome;
        let size = match self.store.put_stream(&data_key, body).await {
            Ok(n) => n,
            Err(e) => {
                let _ = self.store.delete(&data_key).await;
                // A failure of the body itself is the client's, not the store's.
                return Err(match outcome.try_recv() {
                    Ok(Some(HashOutcome {
                        failure: Some(f), ..
                    })) => body_failure(f),
                    _ => e.into(),
                });
            }
        };
        if expected_len.is_some_and(|n| n != size) {
            let _ = self.store.delete(&data_key).await;
            return Err(RegistryError::SizeInvalid(
                "body shorter than Content-Range".into(),
            ));
        }
        let computed = match outcome.await {
            Ok(HashOutcome {
                hasher: Ok(h),
                failure: None,
                ..
            }) => h.finish(),
            // The driver stopped reading before the end, or the hashing thread died.
            _ => {
                let _ = self.store.delete(&data_key).await;
                return Err(RegistryError::BlobUploadInvalid(
                    "the blob could not be hashed".into(),
                ));
            }
        };
        self.place(
            &Assembled::Object(data_key),
            size,
            digest,
            &computed,
            alongside,
        )
        .await?;
        Ok(FinishedBlob { size })
    }

    /// A whole blob in one request (`POST ?digest=`): no session state is kept.
    pub async fn monolithic(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
        alongside: Alongside<'_>,
    ) -> Result<FinishedBlob> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let r = self
            .stream_verified(name, &id, digest, body, None, alongside)
            .await;
        let data = vec![layout::upload_data(name, &id)];
        self.remove_rest(name, &id, data, r.is_ok()).await;
        r
    }

    /// Cancels a session and frees what it stored. What is left is a mark that it ended, so
    /// that the URL `start` gave (which needs no state) is refused too.
    pub async fn cancel(&self, name: &RepositoryName, id: &str, fresh: bool) -> Result<()> {
        self.recent.forget(name, id);
        let l = self
            .load_or_new(name, id, Freshness::asked(fresh), None, None)
            .await?;
        if l.version.is_some() {
            self.discard(name, id, Some(&l.state)).await;
        }
        let mut ended = new_state();
        ended.ended = true;
        self.store
            .put_bytes(
                &layout::upload_state(name, id),
                encode_state(&ended)?,
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }

    /// Removes the repository's sessions started before `cutoff` (unix seconds), aborting their
    /// multipart writes; returns the ids removed (or, with `dry_run`, that would be).
    pub async fn purge_older_than(
        &self,
        name: &RepositoryName,
        cutoff: u64,
        dry_run: bool,
    ) -> Result<Vec<String>> {
        let listing = self.store.list(&layout::uploads_prefix(name)).await?;
        let mut removed = Vec::new();
        for id in listing.prefixes {
            let Ok(id) = parse_upload_id(&id) else {
                continue;
            };
            let state = match self.load(name, &id).await {
                Ok(Some(l)) => l.state,
                // No readable state: a crash before its first write, a monolithic push that
                // never finished, a cancelled session's mark, or another registry's format. It
                // goes when everything in it is older than the cutoff, as distribution's own
                // purge would have it.
                Ok(None) | Err(_) => {
                    if self.untouched_since(name, &id, cutoff).await? {
                        if !dry_run {
                            self.discard(name, &id, None).await;
                        }
                        removed.push(id);
                    }
                    continue;
                }
            };
            if state.started_at < cutoff {
                if !dry_run {
                    self.discard(name, &id, Some(&state)).await;
                }
                removed.push(id);
            }
        }
        Ok(removed)
    }

    /// Whether session `id` holds objects and none was written since `cutoff` (unix seconds).
    async fn untouched_since(&self, name: &RepositoryName, id: &str, cutoff: u64) -> Result<bool> {
        let keys: Vec<String> = self
            .store
            .list_recursive(&layout::upload_prefix(name, id))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::result::Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(false);
        }
        for key in keys {
            let written = match self.store.stat(&key).await {
                Ok(info) => info.last_modified,
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let secs = written
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_secs());
            if secs >= cutoff {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether session `id` exists and its state names the multipart write `handle`.
    pub async fn names_multipart(
        &self,
        name: &RepositoryName,
        id: &str,
        handle: &crate::storage::MultipartHandle,
    ) -> bool {
        self.load(name, id)
            .await
            .is_ok_and(|l| l.is_some_and(|l| l.state.multipart.as_ref() == Some(handle)))
    }

    async fn discard(&self, name: &RepositoryName, id: &str, state: Option<&UploadState>) {
        if let Some(s) = state
            && let (Some(h), false) = (&s.multipart, s.assembled)
        {
            let _ = self
                .store
                .abort_multipart(&layout::upload_data(name, id), h)
                .await;
        }
        let prefix = layout::upload_prefix(name, id);
        let _ = match state {
            // Everything the session wrote is named by its state: no listing needed.
            Some(s) => {
                let mut keys = vec![
                    layout::upload_state(name, id),
                    layout::upload_data(name, id),
                ];
                keys.extend(
                    s.staged
                        .iter()
                        .filter(|f| f.inline.is_none())
                        .map(|f| layout::upload_staged(name, id, f.generation)),
                );
                self.store.delete_known(&prefix, &keys).await
            }
            None => self.store.delete_prefix(&prefix).await,
        };
    }
}

/// Loose parts (local disk): the whole request body becomes one part, streamed to the driver
/// while a thread hashes it. What arrived before a body failure is kept and committed, so the
/// client can resume after it; nothing is committed in the middle of a request.
async fn append_streamed(
    app: &mut Appender<'_>,
    body: ByteStream,
    expected_len: Option<u64>,
) -> Result<()> {
    app.ensure_multipart().await?;
    let handle = app
        .state
        .multipart
        .clone()
        .ok_or(RegistryError::BlobUploadUnknown)?;
    let (done, outcome) = oneshot::channel();
    let feed = HashFeed::resume(app.hasher.clone(), expected_len);
    let body = hashed_body(body, feed, expected_len, OnFailure::EndCleanly, done);
    let slot = PartSlot {
        index: app.state.parts.len(),
        offset: app.state.parts_bytes,
        writer: app.state.claim,
    };
    let (part, written) = app
        .store
        .put_part_stream(&app.data_key(), &handle, slot, body)
        .await?;
    let unhashed = || RegistryError::BlobUploadInvalid("the upload could not be hashed".into());
    let outcome = outcome.await.map_err(|_| unhashed())?;
    let hasher = outcome.hasher.map_err(|_| unhashed())?;
    if outcome.passed != written {
        return Err(unhashed());
    }
    if let Some(BodyFailure::TooLong) = outcome.failure {
        return Err(body_failure(BodyFailure::TooLong));
    }
    app.hasher = hasher;
    if written > 0 {
        app.state.parts.push(part);
        app.state.parts_bytes += written;
        app.state.offset = app.state.parts_bytes;
    }
    app.commit().await?;
    if let Some(f) = outcome.failure {
        return Err(body_failure(f));
    }
    if expected_len.is_some_and(|n| n != written) {
        return Err(RegistryError::SizeInvalid(
            "body shorter than Content-Range".into(),
        ));
    }
    Ok(())
}

/// The error a request gets when its body stopped early.
fn body_failure(f: BodyFailure) -> RegistryError {
    match f {
        BodyFailure::TooLong => RegistryError::SizeInvalid("body longer than Content-Range".into()),
        BodyFailure::Body(e) => RegistryError::BlobUploadInvalid(format!("request body: {e}")),
    }
}

async fn append_body(
    app: &mut Appender<'_>,
    mut body: ByteStream,
    expected_len: Option<u64>,
) -> Result<()> {
    if !app.policy.fixed_size {
        return append_streamed(app, body, expected_len).await;
    }
    let mut seen = 0u64;
    loop {
        // A part that finishes uploading is recorded (and committed, when due) at once, not
        // only when the next part is ready: a client that pauses still has its parts counted.
        let next = match app.in_flight.as_mut() {
            Some(upload) => tokio::select! {
                done = upload => {
                    app.in_flight = None;
                    app.record(done).await?;
                    continue;
                }
                next = body.next() => next,
            },
            None => body.next().await,
        };
        let Some(next) = next else {
            break;
        };
        let chunk = match next {
            Ok(c) => c,
            Err(e) => {
                // Keep what arrived intact so a resuming client can continue from the offset.
                app.end().await?;
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "request body: {e}"
                )));
            }
        };
        seen += chunk.len() as u64;
        if expected_len.is_some_and(|n| seen > n) {
            return Err(RegistryError::SizeInvalid(
                "body longer than Content-Range".into(),
            ));
        }
        app.push(chunk).await?;
    }
    app.end().await?;
    if expected_len.is_some_and(|n| n != seen) {
        return Err(RegistryError::SizeInvalid(
            "body shorter than Content-Range".into(),
        ));
    }
    Ok(())
}
