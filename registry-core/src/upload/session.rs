//! The upload state machine: start, append chunks, report status, finish, cancel.
//!
//! Bytes go into the backend's multipart write in parts of the backend's part size. On object
//! stores every part but the last must have that size, so a tail shorter than a part is staged
//! as a small object and joined with the next chunk. The state object is rewritten with an
//! if-version condition after each part, so a crash loses at most the part in flight and two
//! replicas can never both append at one offset.

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

/// Upload operations over a storage driver.
pub struct UploadSessions {
    store: Arc<dyn StorageDriver>,
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

/// Loaded session plus the version it was read at.
struct Loaded {
    state: UploadState,
    version: ObjectVersion,
}

/// Appends one request's bytes to a session, committing state after every part (a crash loses
/// at most the part in flight) and at its end.
struct Appender<'a> {
    store: &'a dyn StorageDriver,
    name: &'a RepositoryName,
    id: &'a str,
    policy: PartPolicy,
    state: UploadState,
    version: ObjectVersion,
    hasher: DigestHasher,
    buf: Vec<Bytes>,
    buf_len: u64,
    /// Staged fragments already joined into parts, deleted once a commit no longer names them.
    joined: Vec<StagedFragment>,
    /// Whether this request changed the session since its claim was written.
    changed: bool,
}

impl<'a> Appender<'a> {
    fn data_key(&self) -> String {
        layout::upload_data(self.name, self.id)
    }

    async fn commit(&mut self) -> Result<()> {
        self.state.hash_state = hex::encode(self.hasher.save());
        self.version =
            write_state(self.store, self.name, self.id, &self.state, &self.version).await?;
        for f in std::mem::take(&mut self.joined) {
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
            let (b, _) = self
                .store
                .read_small(&layout::upload_staged(self.name, self.id, f.generation))
                .await?;
            if b.len() as u64 != f.len {
                return Err(RegistryError::BlobUploadInvalid(
                    "staged upload data is incomplete".into(),
                ));
            }
            out.push(b);
        }
        Ok(out)
    }

    async fn write_part(&mut self, data: Vec<Bytes>, len: u64) -> Result<()> {
        self.ensure_multipart().await?;
        let handle = self
            .state
            .multipart
            .clone()
            .ok_or(RegistryError::BlobUploadUnknown)?;
        let part = self
            .store
            .put_part(
                &self.data_key(),
                &handle,
                PartSlot {
                    index: self.state.parts.len(),
                    offset: self.state.parts_bytes,
                    writer: self.state.claim,
                },
                data,
            )
            .await?;
        self.state.parts.push(part);
        self.state.parts_bytes += len;
        Ok(())
    }

    async fn write_fixed_part(&mut self) -> Result<()> {
        let staged_len = self.state.staged_len();
        let fresh = take_front(&mut self.buf, self.policy.part_size - staged_len);
        self.buf_len -= self.policy.part_size - staged_len;
        for c in &fresh {
            self.hasher.update(c);
        }
        let mut data = self.read_staged().await?;
        data.extend(fresh);
        self.write_part(data, self.policy.part_size).await?;
        let joined = std::mem::take(&mut self.state.staged);
        self.joined.extend(joined);
        self.state.offset = self.state.parts_bytes;
        self.commit().await
    }

    /// Persists what is buffered at the end of a request and commits.
    async fn end(&mut self) -> Result<()> {
        if self.buf_len > 0 {
            let data = Bytes::from(std::mem::take(&mut self.buf).concat());
            let len = std::mem::take(&mut self.buf_len);
            self.hasher.update(&data);
            let generation = self.state.next_generation;
            self.state.next_generation += 1;
            let key = layout::upload_staged(self.name, self.id, generation);
            self.store
                .put_bytes(&key, data, PutCondition::Overwrite)
                .await?;
            self.state.staged.push(StagedFragment { generation, len });
            self.state.offset += len;
            self.changed = true;
        }
        // A request that brought no bytes (a PUT that only finishes) left the claim as it was.
        if !self.changed {
            return Ok(());
        }
        self.changed = false;
        self.commit().await
    }
}

async fn write_state(
    store: &dyn StorageDriver,
    name: &RepositoryName,
    id: &str,
    state: &UploadState,
    version: &ObjectVersion,
) -> Result<ObjectVersion> {
    let json =
        serde_json::to_vec(state).map_err(|e| RegistryError::BlobUploadInvalid(e.to_string()))?;
    match store
        .put_bytes(
            &layout::upload_state(name, id),
            json.into(),
            PutCondition::IfVersion(version.clone()),
        )
        .await
    {
        Ok(info) => Ok(info.version),
        Err(StorageError::Precondition(_)) | Err(StorageError::NotFound(_)) => Err(
            RegistryError::Conflict("upload was changed or ended by another request".into()),
        ),
        Err(e) => Err(e.into()),
    }
}

impl UploadSessions {
    /// Upload operations over `store`.
    pub fn new(store: Arc<dyn StorageDriver>) -> Self {
        UploadSessions { store }
    }

    /// The part size clients should use (advertised as `OCI-Chunk-Min-Length`), where it matters.
    pub fn chunk_min_length(&self) -> Option<u64> {
        let p = self.store.part_policy();
        p.fixed_size.then_some(p.part_size)
    }

    /// Starts a session and returns its id.
    pub async fn start(&self, name: &RepositoryName) -> Result<String> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let state = UploadState {
            started_at: now_secs(),
            offset: 0,
            hash_state: hex::encode(DigestHasher::new(Algorithm::Sha256).save()),
            multipart: None,
            parts: Vec::new(),
            parts_bytes: 0,
            staged: Vec::new(),
            next_generation: 0,
            claim: 0,
            assembled: false,
        };
        let json = serde_json::to_vec(&state)
            .map_err(|e| RegistryError::BlobUploadInvalid(e.to_string()))?;
        self.store
            .put_bytes(
                &layout::upload_state(name, &id),
                json.into(),
                PutCondition::CreateOnly,
            )
            .await?;
        Ok(id)
    }

    async fn load(&self, name: &RepositoryName, id: &str) -> Result<Loaded> {
        match self.store.read_small(&layout::upload_state(name, id)).await {
            Ok((body, info)) => {
                let state = serde_json::from_slice(&body)
                    .map_err(|_| RegistryError::BlobUploadInvalid("corrupt upload state".into()))?;
                Ok(Loaded {
                    state,
                    version: info.version,
                })
            }
            Err(StorageError::NotFound(_)) => Err(RegistryError::BlobUploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads and claims a session: the claim is a conditional write, so of two requests acting on
    /// one version of the state only one proceeds.
    async fn claim(
        &self,
        name: &RepositoryName,
        id: &str,
        expected_start: Option<u64>,
    ) -> Result<Loaded> {
        let mut l = self.load(name, id).await?;
        if let Some(start) = expected_start
            && start != l.state.offset
        {
            return Err(RegistryError::UploadRangeInvalid {
                offset: l.state.offset,
            });
        }
        l.state.claim += 1;
        l.version = write_state(self.store.as_ref(), name, id, &l.state, &l.version).await?;
        Ok(l)
    }

    /// Bytes received so far.
    pub async fn status(&self, name: &RepositoryName, id: &str) -> Result<u64> {
        Ok(self.load(name, id).await?.state.offset)
    }

    /// Appends a request body; `range` is the Content-Range, if one was sent. Returns the new offset.
    pub async fn append(
        &self,
        name: &RepositoryName,
        id: &str,
        range: Option<crate::upload::ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let l = self.claim(name, id, range.map(|r| r.start)).await?;
        let mut app = self.appender(name, id, l)?;
        append_body(&mut app, body, range.map(|r| r.len())).await?;
        Ok(app.state.offset)
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
        })
    }

    /// Completes a session with the client's final body and digest; on success the blob is at its
    /// content-addressed key (not yet linked into the repository).
    pub async fn finish(
        &self,
        name: &RepositoryName,
        id: &str,
        digest: &Digest,
        range: Option<crate::upload::ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let l = self.claim(name, id, range.map(|r| r.start)).await?;
        if l.state.is_pristine() {
            // The whole blob arrives in this request: stream it straight to storage.
            let size = self
                .stream_verified(name, id, digest, body, range.map(|r| r.len()))
                .await;
            self.discard(name, id, Some(&l.state)).await;
            return size;
        }
        let mut app = self.appender(name, id, l)?;
        let source = if app.state.assembled {
            // A session assembled by an older version of Berth, which recorded it.
            layout::upload_data(name, id)
        } else {
            append_body(&mut app, body, range.map(|r| r.len())).await?;
            self.assemble(&mut app).await?
        };
        let computed = if digest.algorithm() == Algorithm::Sha256 {
            app.hasher.clone().finish()
        } else {
            self.hash_object(&source, digest.algorithm()).await?
        };
        let size = app.state.offset;
        let result = self.place(&source, digest, &computed).await;
        self.discard(name, id, Some(&app.state)).await;
        result.map(|_| size)
    }

    /// Brings every byte of the session together as one object and returns its key: the
    /// completed multipart write at the data key, or a lone staged fragment where it is (a blob
    /// smaller than a part: no copy). The state is not rewritten: a finish tried again after a
    /// crash finds the multipart write completed by the object at the data key.
    async fn assemble(&self, app: &mut Appender<'_>) -> Result<String> {
        let data_key = app.data_key();
        let staged_len = app.state.staged_len();
        let source = match app.state.multipart.clone() {
            Some(handle) => {
                let completed: Result<()> = async {
                    if staged_len > 0 {
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
                data_key
            }
            None if app.state.staged.len() == 1 => {
                layout::upload_staged(app.name, app.id, app.state.staged[0].generation)
            }
            None => {
                let staged = app.read_staged().await?;
                self.store
                    .put_bytes(
                        &data_key,
                        Bytes::from(staged.concat()),
                        PutCondition::Overwrite,
                    )
                    .await?;
                data_key
            }
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

    /// Puts verified bytes at the blob's key, or refuses them when the digest differs.
    async fn place(&self, data_key: &str, expected: &Digest, computed: &Digest) -> Result<()> {
        if computed != expected {
            let _ = self.store.delete(data_key).await;
            return Err(RegistryError::DigestInvalid(format!(
                "content digest is {computed}"
            )));
        }
        let blob_key = layout::blob_data(expected);
        // What is left at the data key goes with the session, right after.
        match self.store.stat(&blob_key).await {
            Ok(_) => {}
            Err(StorageError::NotFound(_)) => self.store.publish(data_key, &blob_key).await?,
            Err(e) => return Err(e.into()),
        }
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
    ) -> Result<u64> {
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
        self.place(&data_key, digest, &computed).await?;
        Ok(size)
    }

    /// A whole blob in one request (`POST ?digest=`): no session state is kept.
    pub async fn monolithic(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let r = self.stream_verified(name, &id, digest, body, None).await;
        let _ = self
            .store
            .delete_known(
                &layout::upload_prefix(name, &id),
                &[layout::upload_data(name, &id)],
            )
            .await;
        r
    }

    /// Cancels a session and frees what it stored.
    pub async fn cancel(&self, name: &RepositoryName, id: &str) -> Result<()> {
        let l = self.load(name, id).await?;
        self.discard(name, id, Some(&l.state)).await;
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
                Ok(l) => l.state,
                // No readable state: a crash before its first write, a monolithic push that
                // never finished, or another registry's format. It goes when everything in it
                // is older than the cutoff, as distribution's own purge would have it.
                Err(_) => {
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
            .is_ok_and(|l| l.state.multipart.as_ref() == Some(handle))
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
    while let Some(next) = body.next().await {
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
