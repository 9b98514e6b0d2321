//! Local-disk driver: plain files under a root directory, written to a hidden temporary name and
//! renamed into place so that readers never see a partial object.

mod block_writer;
mod mapped_read;
mod small_reads;
mod trash;
mod writer_fence;

pub use block_writer::WriteMode;

use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use registry_core::storage::{
    ByteStream, GetResponse, Listing, MultipartHandle, ObjectInfo, ObjectVersion, PartPolicy,
    PartSlot, PutCondition, StorageDriver, StorageError, WrittenPart, resolve_range,
};

/// Names starting with this are in-progress files, never listed as objects.
const HIDDEN: &str = ".berth-";
/// Largest object `read_small` reads without leaving the request task (links, upload state).
const INLINE_READ: u64 = 4096;
/// Largest object `put_bytes` writes without leaving the request task (upload state, links).
const INLINE_WRITE: u64 = 4096;
/// Body chunks queued for the writer thread of a streamed put (bounded: memory per upload).
const WRITE_QUEUE: usize = 2;

/// Puts the freshly written `tmp` at `path` as `condition` says.
fn place_written(
    tmp: &Path,
    path: &Path,
    key: &str,
    condition: &PutCondition,
) -> Result<(), StorageError> {
    let fail = |e| io_err(key, e);
    match condition {
        PutCondition::Overwrite => std::fs::rename(tmp, path).map_err(fail),
        // link(2) fails if the target exists: an atomic create-only.
        PutCondition::CreateOnly => std::fs::hard_link(tmp, path).map_err(fail),
        PutCondition::IfVersion(expected) => {
            let lock_path = path.with_file_name(format!(
                "{HIDDEN}lock-{}",
                path.file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or("object")
            ));
            // flock serialises compare-and-swap across threads and processes on this host.
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(fail)?;
            lock.lock().map_err(fail)?;
            let current = std::fs::metadata(path).map_err(fail)?;
            if version_of(&current) != *expected {
                return Err(StorageError::Precondition(key.to_owned()));
            }
            std::fs::rename(tmp, path).map_err(fail)
        }
    }
}

/// Creates `dir` and its missing parents. Another writer's removal prunes directories it left
/// empty, and may prune one of these between its creation and the next (create_dir_all then
/// fails with NotFound, or with AlreadyExists when the directory vanished right after it was
/// seen): the creation is tried again, as each attempt makes progress unless such a removal
/// lands in the same instant.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Err(e)
                if tries < 16
                    && matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists) =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Writes `data` to a hidden sibling of `path` and puts it in place as `condition` says.
fn put_small(
    path: &Path,
    key: &str,
    data: &[u8],
    condition: &PutCondition,
) -> Result<ObjectInfo, StorageError> {
    let fail = |e| io_err(key, e);
    let tmp = hidden_sibling(path, "tmp");
    // The parent usually exists (a session's state, a repository's links): create it only
    // when the first write says it is missing.
    let mut tries = 0;
    let written = loop {
        match std::fs::write(&tmp, data) {
            // The parent is missing (or was pruned by a removal beside it just now).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 16 => {
                tries += 1;
                if let Some(parent) = path.parent() {
                    create_dirs(parent).map_err(fail)?;
                }
            }
            other => break other,
        }
    };
    if let Err(e) = written {
        // A short write (a full disk) may have created the file.
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    // A rename leaves nothing behind; a hard link or a refusal leaves the temporary file.
    let renames = !matches!(condition, PutCondition::CreateOnly);
    // The new file's inode and times are what the key will show: its version.
    let placed = std::fs::metadata(&tmp)
        .map(|m| info_of(&m))
        .map_err(fail)
        .and_then(|info| {
            place_written(&tmp, path, key, condition)?;
            Ok(info)
        });
    if placed.is_err() || !renames {
        let _ = std::fs::remove_file(&tmp);
    }
    placed
}

/// Runs `writer` on a blocking thread, fed `body`'s chunks through a short queue (bounded
/// memory per upload) while the request task keeps receiving and its caller keeps hashing.
/// `writer` gets a function returning the next chunk (`None` at the end, or when the body
/// failed); the body's own error, if any, wins over what `writer` returned.
async fn write_on_thread<W>(mut body: ByteStream, writer: W) -> Result<u64, StorageError>
where
    W: FnOnce(&mut dyn FnMut() -> Option<Bytes>) -> Result<u64, StorageError> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let thread = tokio::task::spawn_blocking(move || writer(&mut || rx.blocking_recv()));
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            // A closed queue means the writer stopped; its own error is what is reported.
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = thread.await.map_err(StorageError::backend).and_then(|r| r);
    match failure {
        Some(e) => Err(e),
        None => written,
    }
}

/// Stores objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalDriver {
    root: PathBuf,
    write_mode: WriteMode,
    trash: trash::Trash,
    small_reads: std::sync::Arc<small_reads::SmallReads>,
}

fn io_err(key: &str, e: std::io::Error) -> StorageError {
    match e.kind() {
        ErrorKind::NotFound => StorageError::NotFound(key.to_owned()),
        ErrorKind::AlreadyExists => StorageError::AlreadyExists(key.to_owned()),
        // The operator has to act; the client should learn it from the status, not a log.
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            StorageError::Full(format!("{key}: {e}"))
        }
        _ => StorageError::Backend(format!("{key}: {e}")),
    }
}

/// Upload state is rewritten twice per PATCH and links once per push: small puts run on the
/// request task, as small reads do; a hop to the blocking pool costs more than they.
async fn put_small_here_or_off_task(
    path: &Path,
    key: &str,
    data: &Bytes,
    condition: &PutCondition,
) -> Result<ObjectInfo, StorageError> {
    if data.len() as u64 <= INLINE_WRITE {
        return put_small(path, key, data, condition);
    }
    let (path, key, data, condition) = (
        path.to_owned(),
        key.to_owned(),
        data.clone(),
        condition.clone(),
    );
    tokio::task::spawn_blocking(move || put_small(&path, &key, &data, &condition))
        .await
        .map_err(StorageError::backend)?
}

fn version_of(meta: &std::fs::Metadata) -> ObjectVersion {
    // A rename-into-place always brings a new inode, so inode+mtime+size changes on every write.
    ObjectVersion {
        e_tag: Some(format!(
            "{:x}-{:x}.{:x}-{:x}",
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size()
        )),
        version: None,
    }
}

fn info_of(meta: &std::fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        size: meta.len(),
        last_modified: meta.modified().ok(),
        version: version_of(meta),
    }
}

/// Reads a whole file whose size `fstat` just gave, usually in one `read`.
///
/// `read_to_end` stats and seeks the file again to size its buffer and reads twice to see the
/// end; on a manifest GET by tag that is three of seven syscalls. A buffer one byte larger
/// than the size makes a short first read the end of the file, and a file that grew since
/// the stat is still read to its end.
fn read_stat_sized(file: &mut std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize + 1];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

fn hidden_sibling(path: &Path, tag: &str) -> PathBuf {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("object");
    path.with_file_name(format!(
        "{HIDDEN}{tag}-{}-{file}",
        uuid::Uuid::new_v4().simple()
    ))
}

impl LocalDriver {
    /// A stream cannot be written again, but a client that is told the disk is full retries:
    /// what the trash still holds is freed before the answer, so the retry finds the room.
    async fn settle_when_full<T>(
        &self,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if matches!(result, Err(StorageError::Full(_))) && self.trash.holds_any() {
            self.trash_settled().await;
        }
        result
    }

    /// Waits until everything removed so far is freed.
    async fn trash_settled(&self) {
        let trash = self.trash.clone();
        let _ = tokio::task::spawn_blocking(move || trash.settle()).await;
    }
    /// A driver rooted at `root` (created when missing) that writes blob data directly.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        Self::with_write_mode(root, WriteMode::Direct)
    }

    /// A driver rooted at `root` writing large objects the way `write_mode` says.
    pub fn with_write_mode(
        root: impl Into<PathBuf>,
        write_mode: WriteMode,
    ) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let trash = trash::Trash::open(&root);
        let small_reads = std::sync::Arc::new(small_reads::SmallReads::for_root(&root));
        Ok(LocalDriver {
            root,
            write_mode,
            small_reads,
            trash,
        })
    }

    /// Maps a key to a path, refusing anything that could leave the root.
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let key = key.trim_end_matches('/');
        let bad = key.is_empty()
            || key.contains('\\')
            || key.contains('\0')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.starts_with(HIDDEN));
        if bad {
            return Err(StorageError::InvalidKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }

    async fn ensure_parent(path: &Path, key: &str) -> Result<(), StorageError> {
        if let Some(parent) = path.parent() {
            let parent = parent.to_owned();
            tokio::task::spawn_blocking(move || create_dirs(&parent))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|e| io_err(key, e))?;
        }
        Ok(())
    }

    /// Removes now-empty directories above a deleted file, so listings match object stores.
    async fn prune_empty_dirs(&self, mut dir: Option<&Path>) {
        while let Some(d) = dir {
            if d == self.root
                || !d.starts_with(&self.root)
                || tokio::fs::remove_dir(d).await.is_err()
            {
                break;
            }
            dir = d.parent();
        }
    }

    /// Runs a removal through the trash on a blocking thread (stat and rename, never the
    /// freeing itself).
    async fn off_thread(
        &self,
        path: &Path,
        remove: fn(&trash::Trash, &Path) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let (trash, path) = (self.trash.clone(), path.to_owned());
        tokio::task::spawn_blocking(move || remove(&trash, &path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// A removal of something already gone succeeds; a real one prunes the emptied parents.
    async fn after_removal(
        &self,
        removed: std::io::Result<()>,
        path: &Path,
        key: &str,
    ) -> Result<(), StorageError> {
        match removed {
            Ok(()) => {
                self.prune_empty_dirs(path.parent()).await;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(key, e)),
        }
    }

    fn multipart_path(path: &Path, handle: &MultipartHandle) -> Result<PathBuf, StorageError> {
        let id = &handle.upload_id;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::InvalidKey(format!("multipart id {id}")));
        }
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("object");
        Ok(path.with_file_name(format!("{HIDDEN}mp-{id}-{file}")))
    }
}

#[async_trait]
impl StorageDriver for LocalDriver {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn part_policy(&self) -> PartPolicy {
        PartPolicy {
            part_size: 8 << 20,
            fixed_size: false,
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError> {
        let path = self.path(key)?;
        let owned_key = key.to_owned();
        // Open, stat and map (or read a small file) in one blocking call, not one hop each.
        tokio::task::spawn_blocking(move || -> Result<GetResponse, StorageError> {
            let key = owned_key.as_str();
            let mut file = std::fs::File::open(&path).map_err(|e| io_err(key, e))?;
            let meta = file.metadata().map_err(|e| io_err(key, e))?;
            if meta.is_dir() {
                return Err(StorageError::NotFound(key.to_owned()));
            }
            let range = resolve_range(range, meta.len())?;
            let len = range.end - range.start;
            let body = if len >= mapped_read::MAP_THRESHOLD {
                mapped_read::mapped_body(&file, range.clone()).map_err(|e| io_err(key, e))?
            } else {
                file.seek(SeekFrom::Start(range.start))
                    .map_err(|e| io_err(key, e))?;
                let mut buf = Vec::with_capacity(len as usize);
                file.take(len)
                    .read_to_end(&mut buf)
                    .map_err(|e| io_err(key, e))?;
                futures::stream::once(futures::future::ready(Ok(Bytes::from(buf)))).boxed()
            };
            Ok(GetResponse {
                info: info_of(&meta),
                range,
                body,
            })
        })
        .await
        .map_err(StorageError::backend)?
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let meta = tokio::fs::metadata(self.path(key)?)
            .await
            .map_err(|e| io_err(key, e))?;
        if meta.is_dir() {
            return Err(StorageError::NotFound(key.to_owned()));
        }
        Ok(info_of(&meta))
    }

    async fn read_small(&self, key: &str) -> Result<(Bytes, ObjectInfo), StorageError> {
        let path = self.path(key)?;
        // Links and upload state are a few dozen bytes in directories the page cache holds:
        // read them on the request task, as nginx reads files on its event loop. A hop to the
        // blocking pool costs two thread wake-ups, more than the read, and sits on every
        // manifest GET by tag. Anything larger goes to the blocking pool. A file read before
        // and not replaced since is answered from memory after one stat (small_reads.rs).
        let seen = std::fs::metadata(&path).map_err(|e| io_err(key, e))?;
        if seen.is_dir() {
            return Err(StorageError::NotFound(key.to_owned()));
        }
        let stamp = small_reads::Stamp::of(&seen);
        if let Some(bytes) = self.small_reads.get(&path, stamp) {
            return Ok((bytes, info_of(&seen)));
        }
        let mut file = std::fs::File::open(&path).map_err(|e| io_err(key, e))?;
        let meta = file.metadata().map_err(|e| io_err(key, e))?;
        if meta.len() <= INLINE_READ {
            let buf =
                Bytes::from(read_stat_sized(&mut file, meta.len()).map_err(|e| io_err(key, e))?);
            self.small_reads
                .put(&path, small_reads::Stamp::of(&meta), buf.clone());
            return Ok((buf, info_of(&meta)));
        }
        let owned_key = key.to_owned();
        tokio::task::spawn_blocking(move || -> Result<(Bytes, ObjectInfo), StorageError> {
            let buf = read_stat_sized(&mut file, meta.len()).map_err(|e| io_err(&owned_key, e))?;
            Ok((buf.into(), info_of(&meta)))
        })
        .await
        .map_err(StorageError::backend)?
    }

    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        let path = self.path(key)?;
        match put_small_here_or_off_task(&path, key, &data, &condition).await {
            // Space a removal just gave back may still be queued in the trash (a cancelled
            // upload, then its end mark): once it is freed the write fits.
            Err(StorageError::Full(_)) if self.trash.holds_any() => {
                self.trash_settled().await;
                put_small_here_or_off_task(&path, key, &data, &condition).await
            }
            done => done,
        }
    }

    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, StorageError> {
        let path = self.path(key)?;
        Self::ensure_parent(&path, key).await?;
        let tmp = hidden_sibling(&path, "tmp");
        let owned_key = key.to_owned();
        let (tmp2, mode) = (tmp.clone(), self.write_mode);
        let written = write_on_thread(body, move |next| {
            let fail = |e| io_err(&owned_key, e);
            let mut out = block_writer::BlockWriter::create(&tmp2, mode).map_err(fail)?;
            while let Some(chunk) = next() {
                out.write(&chunk).map_err(fail)?;
            }
            out.finish(true).map_err(fail)
        })
        .await;
        let result = match written {
            Err(e) => Err(e),
            Ok(n) => tokio::fs::rename(&tmp, &path)
                .await
                .map(|_| n)
                .map_err(|e| io_err(key, e)),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        self.settle_when_full(result).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let removed = self.off_thread(&path, trash::Trash::remove_file).await;
        self.after_removal(removed, &path, key).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let path = self.path(prefix)?;
        let removed = self.off_thread(&path, trash::Trash::remove_dir_all).await;
        self.after_removal(removed, &path, prefix).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StorageError> {
        let dir = self.path(prefix)?;
        let prefix = prefix.to_owned();
        // One blocking call for the whole directory: a tag list can hold tens of thousands.
        tokio::task::spawn_blocking(move || -> Result<Listing, StorageError> {
            let mut listing = Listing::default();
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    return Ok(listing);
                }
                Err(e) => return Err(io_err(&prefix, e)),
            };
            let base = prefix.trim_end_matches('/');
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&prefix, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.starts_with(HIDDEN) {
                    continue;
                }
                if entry.file_type().map_err(|e| io_err(&prefix, e))?.is_dir() {
                    listing.prefixes.push(name);
                } else {
                    listing.objects.push(format!("{base}/{name}"));
                }
            }
            Ok(listing)
        })
        .await
        .map_err(StorageError::backend)?
    }

    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>> {
        let start = match self.path(prefix) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let root = self.root.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, StorageError>>(256);
        tokio::task::spawn_blocking(move || {
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(StorageError::backend(e)));
                        return;
                    }
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.to_str().is_none_or(|n| n.starts_with(HIDDEN)) {
                        continue;
                    }
                    let path = entry.path();
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(path);
                    } else if let Some(key) = path.strip_prefix(&root).ok().and_then(|p| p.to_str())
                        && tx.blocking_send(Ok(key.to_owned())).is_err()
                    {
                        return;
                    }
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        Self::ensure_parent(&dst, to).await?;
        let tmp = hidden_sibling(&dst, "tmp");
        if let Err(e) = tokio::fs::copy(&src, &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_err(from, e));
        }
        tokio::fs::rename(&tmp, &dst)
            .await
            .map_err(|e| io_err(to, e))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        Self::ensure_parent(&dst, to).await?;
        tokio::fs::rename(&src, &dst)
            .await
            .map_err(|e| io_err(from, e))?;
        self.prune_empty_dirs(src.parent()).await;
        Ok(())
    }

    async fn presign_get(
        &self,
        _key: &str,
        _expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartHandle, StorageError> {
        let path = self.path(key)?;
        Self::ensure_parent(&path, key).await?;
        let handle = MultipartHandle {
            upload_id: uuid::Uuid::new_v4().simple().to_string(),
        };
        tokio::fs::File::create(Self::multipart_path(&path, &handle)?)
            .await
            .map_err(|e| io_err(key, e))?;
        Ok(handle)
    }

    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        let body = futures::stream::iter(data.into_iter().map(Ok)).boxed();
        self.put_part_stream(key, handle, slot, body)
            .await
            .map(|(part, _)| part)
    }

    async fn put_part_stream(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        body: ByteStream,
    ) -> Result<(WrittenPart, u64), StorageError> {
        let path = Self::multipart_path(&self.path(key)?, handle)?;
        let (owned_key, mode) = (key.to_owned(), self.write_mode);
        let written = write_on_thread(body, move |next| {
            let key = owned_key.as_str();
            let fail = |e| io_err(key, e);
            let fence = writer_fence::Fence::open(&path).map_err(fail)?;
            // Every write happens inside the fence: a newer request waits for the bytes in
            // flight and then overwrites from its own offset; this one is refused from then on.
            let enter = || {
                fence.enter(slot.writer).map_err(|e| match e {
                    writer_fence::Refused::Superseded => StorageError::Precondition(format!(
                        "{key}: a newer request has taken over this upload"
                    )),
                    writer_fence::Refused::Io(e) => io_err(key, e),
                })
            };
            let mut out = {
                let _in = enter()?;
                // Anything past the offset was written by a request that never committed.
                block_writer::BlockWriter::open_at(&path, slot.offset, mode).map_err(fail)?
            };
            while let Some(chunk) = next() {
                let _in = enter()?;
                out.write(&chunk).map_err(fail)?;
            }
            let _in = enter()?;
            // Synced once, at completion, not per part.
            Ok(out.finish(false).map_err(fail)? - slot.offset)
        })
        .await;
        let written = self.settle_when_full(written).await?;
        let part = WrittenPart {
            content_id: String::new(),
        };
        Ok((part, written))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        _parts: &[WrittenPart],
        size: u64,
    ) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let mp = Self::multipart_path(&path, handle)?;
        let (owned_key, mode) = (key.to_owned(), self.write_mode);
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let key = owned_key.as_str();
            // A part still being written by a request that lost its claim finishes first; its
            // bytes past `size` are cut and nothing can be written after this.
            let fence = writer_fence::Fence::open(&mp).map_err(|e| io_err(key, e))?;
            let closed = fence.close().map_err(|e| io_err(key, e))?;
            let file = std::fs::File::options()
                .write(true)
                .open(&mp)
                .map_err(|e| io_err(key, e))?;
            file.set_len(size).map_err(|e| io_err(key, e))?;
            drop(file);
            block_writer::sync_finished(&mp, mode).map_err(|e| io_err(key, e))?;
            std::fs::rename(&mp, &path).map_err(|e| io_err(key, e))?;
            drop(closed);
            writer_fence::remove(&mp).map_err(|e| io_err(key, e))
        })
        .await
        .map_err(StorageError::backend)?
    }

    async fn dangling_multiparts(
        &self,
        _prefix: &str,
        _before: std::time::SystemTime,
    ) -> Result<Vec<registry_core::storage::DanglingMultipart>, StorageError> {
        // A session's data is one file under its prefix, removed with it.
        Ok(Vec::new())
    }

    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError> {
        let mp = Self::multipart_path(&self.path(key)?, handle)?;
        let _ = writer_fence::remove(&mp);
        match self.off_thread(&mp, trash::Trash::remove_file).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(key, e)),
            _ => Ok(()),
        }
    }

    async fn settle(&self) {
        self.trash_settled().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Writers creating directories while others' removals prune the empty ones they leave
    /// (monolithic uploads: a session folder each under one `_uploads`, moved out when done).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_survive_removals_pruning_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(LocalDriver::new(dir.path()).unwrap());
        // Few writers, many rounds: `_uploads` is often empty, so often pruned and made again.
        let tasks: Vec<_> = (0..6)
            .map(|w| {
                let d = driver.clone();
                tokio::spawn(async move {
                    for n in 0..400 {
                        let i = format!("{w}-{n}");
                        let data = format!("repo/_uploads/{i}/data");
                        let body = futures::stream::iter([Ok(Bytes::from_static(b"x"))]).boxed();
                        d.put_stream(&data, body).await?;
                        d.rename(&data, &format!("blobs/{i}")).await?;
                        d.delete_prefix(&format!("repo/_uploads/{i}/")).await?;
                    }
                    Ok::<(), StorageError>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn passes_the_shared_driver_suite() {
        for mode in [WriteMode::Direct, WriteMode::Buffered] {
            let dir = tempfile::tempdir().unwrap();
            let driver = LocalDriver::with_write_mode(dir.path(), mode).unwrap();
            registry_core::storage::suite::run_all(Arc::new(driver)).await;
        }
    }

    #[test]
    fn stat_sized_reads_return_the_whole_file_whatever_the_size_said() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 70, 4096, 100_000] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            // The stat's size, a stale smaller one (the file grew), a stale larger one.
            for size in [len as u64, (len / 3) as u64, len as u64 + 9] {
                let mut f = std::fs::File::open(&path).unwrap();
                assert_eq!(read_stat_sized(&mut f, size).unwrap(), data, "{len} {size}");
            }
        }
    }

    /// Large reads come from a mapping whose sent pages are released as the body goes:
    /// every byte still arrives right, from any offset, however far the reader holds on.
    #[tokio::test]
    async fn mapped_reads_are_right_at_any_offset_while_pages_are_released() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::new(dir.path()).unwrap();
        let data: Vec<u8> = (0..(23 << 20) + 77)
            .map(|i: usize| (i * 7 % 251) as u8)
            .collect();
        d.put_bytes("big", Bytes::from(data.clone()), PutCondition::Overwrite)
            .await
            .unwrap();
        for range in [
            None,
            Some(12_345..(20 << 20) + 3),
            Some(4095..(23 << 20) + 77),
        ] {
            let mut body = d.get("big", range.clone()).await.unwrap().body;
            let mut got = Vec::new();
            // Held chunks stay readable while later ones are released.
            let mut held = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap();
                got.extend_from_slice(&chunk);
                held.push(chunk);
                if held.len() > 3 {
                    held.remove(0);
                }
            }
            let r = range.map_or(0..data.len(), |r| r.start as usize..r.end as usize);
            assert_eq!(got, data[r.clone()], "{r:?}");
            let tail: Vec<u8> = held.iter().flat_map(|c| c.to_vec()).collect();
            assert_eq!(&data[r.end - tail.len()..r.end], &tail[..]);
        }
    }

    #[tokio::test]
    async fn refuses_keys_that_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::new(dir.path().join("root")).unwrap();
        for key in [
            "../escape",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a\\b",
            ".berth-tmp-x",
        ] {
            let r = d
                .put_bytes(key, Bytes::from_static(b"x"), PutCondition::Overwrite)
                .await;
            assert!(matches!(r, Err(StorageError::InvalidKey(_))), "{key}");
        }
        assert!(!dir.path().join("escape").exists());
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::new(dir.path()).unwrap();
        d.put_bytes(
            "a/b/c/link",
            Bytes::from_static(b"x"),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
        d.put_bytes("a/keep", Bytes::from_static(b"x"), PutCondition::Overwrite)
            .await
            .unwrap();
        d.delete("a/b/c/link").await.unwrap();
        assert!(!dir.path().join("a/b").exists());
        assert!(dir.path().join("a/keep").exists());
    }

    /// Names under `dir` (recursively) that are temporary files of a put.
    fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(leftovers(&path));
            } else if path.to_string_lossy().contains(".berth-tmp-") {
                found.push(path);
            }
        }
        found
    }

    #[tokio::test]
    async fn small_reads_see_every_rewrite_by_any_replica() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            LocalDriver::new(dir.path()).unwrap(),
            LocalDriver::new(dir.path()).unwrap(),
        );
        let key = "repo/_manifests/tags/v1/current/link";
        // Tag links all have the same length, so only the file's identity can tell them apart.
        for (writer, text) in [
            (&a, "sha256:1111"),
            (&a, "sha256:2222"),
            (&b, "sha256:3333"),
        ] {
            writer
                .put_bytes(key, Bytes::from(text), PutCondition::Overwrite)
                .await
                .unwrap();
            for reader in [&a, &b] {
                for _ in 0..2 {
                    assert_eq!(reader.read_small(key).await.unwrap().0, text.as_bytes());
                }
            }
        }
        b.delete(key).await.unwrap();
        assert!(matches!(
            a.read_small(key).await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn small_puts_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::new(dir.path()).unwrap();
        let small = Bytes::from_static(b"state");
        let large = Bytes::from(vec![7u8; INLINE_WRITE as usize + 1]);
        for (key, data) in [("x/y/small", small), ("x/z/large", large)] {
            // Into a directory that does not exist yet, then every condition, kept and refused.
            let first = d
                .put_bytes(key, data.clone(), PutCondition::CreateOnly)
                .await
                .unwrap();
            let refused = d
                .put_bytes(key, data.clone(), PutCondition::CreateOnly)
                .await;
            assert!(
                matches!(refused, Err(StorageError::AlreadyExists(_))),
                "{key}"
            );
            let second = d
                .put_bytes(
                    key,
                    data.clone(),
                    PutCondition::IfVersion(first.version.clone()),
                )
                .await
                .unwrap();
            let stale = d
                .put_bytes(key, data.clone(), PutCondition::IfVersion(first.version))
                .await;
            assert!(matches!(stale, Err(StorageError::Precondition(_))), "{key}");
            d.put_bytes(key, data.clone(), PutCondition::Overwrite)
                .await
                .unwrap();
            assert_ne!(second.version, d.stat(key).await.unwrap().version);
            assert_eq!(d.read_small(key).await.unwrap().0, data);
        }
        assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
    }
}
