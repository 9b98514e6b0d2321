//! Sequential file writes that bypass the page cache (`O_DIRECT`) in whole aligned blocks.
//!
//! Blob data is written once and read later, often by other nodes. Pushing it through the page
//! cache fills memory with dirty pages (charged to the pod's memory cgroup on Kubernetes), evicts
//! the hot layers that pulls need, and throttles every other writer when writeback falls behind;
//! and the 201 a client gets says nothing about the bytes being on disk. Direct writes avoid all
//! three, and with `fdatasync` at the end a finished blob is durable before it is linked.
//!
//! `O_DIRECT` needs the buffer address, length and file offset aligned, so bytes are gathered in
//! one aligned buffer; an unaligned head (a part starting mid-block) and the final partial block
//! go through a second, buffered descriptor. Filesystems that refuse `O_DIRECT` (tmpfs, some
//! network filesystems) get buffered writes throughout.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Alignment that satisfies `O_DIRECT` on every common block device (4 KiB logical sectors).
const ALIGN: usize = 4096;
/// Bytes gathered before a direct write: large enough for full device speed, small enough that
/// many concurrent uploads stay cheap in memory.
const BLOCK_BUFFER: usize = 1 << 20;
/// Block buffers kept for the next writer. A fresh one costs 256 first-touch page faults, paid
/// on every PATCH of a chunked upload otherwise; a few spares cover a node's usual concurrency.
const SPARE_BUFFERS: usize = 8;

static SPARES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_buffer() -> Vec<u8> {
    let spare = SPARES.lock().ok().and_then(|mut s| s.pop());
    spare.unwrap_or_else(|| vec![0u8; BLOCK_BUFFER + ALIGN])
}

fn return_buffer(storage: Vec<u8>) {
    if let Ok(mut spares) = SPARES.lock()
        && spares.len() < SPARE_BUFFERS
    {
        spares.push(storage);
    }
}

/// How a local driver writes large objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `O_DIRECT` in aligned blocks plus `fdatasync` before an object becomes visible.
    Direct,
    /// Through the page cache, no sync (what distribution's filesystem driver does).
    Buffered,
}

/// Writes a file sequentially from a starting offset.
pub(crate) struct BlockWriter {
    /// The direct descriptor, when the filesystem accepted `O_DIRECT`.
    direct: Option<File>,
    /// A plain descriptor for unaligned heads and tails (and everything in buffered mode).
    plain: File,
    /// Backing store of the aligned buffer; `start` is the aligned offset into it.
    storage: Vec<u8>,
    start: usize,
    filled: usize,
    /// File offset where `buf[0]` goes.
    pos: u64,
}

impl BlockWriter {
    /// Creates (or truncates) `path` and writes from offset 0.
    pub(crate) fn create(path: &Path, mode: WriteMode) -> io::Result<Self> {
        let plain = File::create(path)?;
        Self::with_plain(path, plain, 0, mode)
    }

    /// Opens an existing `path`, drops anything past `offset` and writes from there; a file
    /// shorter than `offset` is an error (bytes before the offset would be missing).
    pub(crate) fn open_at(path: &Path, offset: u64, mode: WriteMode) -> io::Result<Self> {
        let plain = File::options().write(true).open(path)?;
        let len = plain.metadata()?.len();
        if len < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("part at {offset} but only {len} bytes written"),
            ));
        }
        // Usually the file ends at `offset` already; a truncate is a journaled metadata change.
        if len != offset {
            plain.set_len(offset)?;
        }
        Self::with_plain(path, plain, offset, mode)
    }

    fn with_plain(path: &Path, plain: File, pos: u64, mode: WriteMode) -> io::Result<Self> {
        let direct = match mode {
            WriteMode::Buffered => None,
            // EINVAL here means the filesystem has no direct I/O: fall back, don't fail.
            WriteMode::Direct => File::options()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok(),
        };
        let storage = if direct.is_some() {
            take_buffer()
        } else {
            Vec::new()
        };
        let start = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
        Ok(BlockWriter {
            direct,
            plain,
            storage,
            start,
            filled: 0,
            pos,
        })
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.direct.is_none() {
            self.flush_plain()?;
            self.plain.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let room = BLOCK_BUFFER - self.filled;
            let n = room.min(data.len());
            let at = self.start + self.filled;
            self.storage[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == BLOCK_BUFFER {
                self.drain(false)?;
            }
        }
        Ok(())
    }

    /// Writes out the buffer: the unaligned head through the plain descriptor, whole blocks
    /// directly, and (only when `all`) the partial last block through the plain descriptor.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let mut from = 0usize;
        let misalign = (self.pos % ALIGN as u64) as usize;
        if misalign != 0 {
            let head = (ALIGN - misalign).min(self.filled);
            self.write_plain(0, head)?;
            from = head;
        }
        let whole = (self.filled - from) / ALIGN * ALIGN;
        if whole > 0 && self.pos.is_multiple_of(ALIGN as u64) {
            // The buffer is aligned at `start`; `from` is 0 here or the head moved pos onto a
            // boundary, in which case the data must move to the buffer start to stay aligned.
            if from != 0 {
                let s = self.start;
                self.storage.copy_within(s + from..s + self.filled, s);
                self.filled -= from;
            }
            let s = self.start;
            let result = match &self.direct {
                Some(f) => f.write_all_at(&self.storage[s..s + whole], self.pos),
                None => self
                    .plain
                    .write_all_at(&self.storage[s..s + whole], self.pos),
            };
            if let Err(e) = result {
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
                // The device wants a larger alignment than ALIGN: stay correct, go buffered.
                self.fall_back();
                self.plain
                    .write_all_at(&self.storage[s..s + whole], self.pos)?;
            }
            self.pos += whole as u64;
            from = whole;
        }
        if all && from < self.filled {
            let tail = self.filled - from;
            self.write_plain(from, tail)?;
            from += tail;
        }
        let s = self.start;
        self.storage.copy_within(s + from..s + self.filled, s);
        self.filled -= from;
        Ok(())
    }

    /// Stops direct writes; what the buffer holds goes out through the plain descriptor with
    /// the next write (or at finish).
    fn fall_back(&mut self) {
        self.direct = None;
    }

    /// Writes what the buffer still holds through the plain descriptor (after a fall-back, the
    /// bytes after the last whole block: without this they were skipped and the file had a hole).
    fn flush_plain(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.write_plain(0, self.filled)?;
            self.filled = 0;
        }
        Ok(())
    }

    fn write_plain(&mut self, from: usize, len: usize) -> io::Result<()> {
        let s = self.start + from;
        self.plain
            .write_all_at(&self.storage[s..s + len], self.pos)?;
        self.pos += len as u64;
        Ok(())
    }

    /// Writes what is buffered; with `sync` in direct mode, also makes the file's data durable.
    pub(crate) fn finish(mut self, sync: bool) -> io::Result<u64> {
        if self.direct.is_some() {
            self.drain(true)?;
        }
        self.flush_plain()?;
        // Direct mode was taken at open (a buffer exists): the data must be durable even if a
        // fall-back sent some of it through the page cache.
        if sync && !self.storage.is_empty() {
            self.plain.sync_data()?;
        }
        Ok(self.pos)
    }

    /// Whether the filesystem took direct writes (false after a fallback to buffered).
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.direct.is_some()
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.storage.is_empty() {
            return_buffer(std::mem::take(&mut self.storage));
        }
    }
}

/// Makes a finished file's data durable when it was written directly (a no-op when buffered,
/// where distribution's behaviour, no sync, is what was asked for).
pub(crate) fn sync_finished(path: &Path, mode: WriteMode) -> io::Result<()> {
    match mode {
        WriteMode::Direct => File::options().write(true).open(path)?.sync_data(),
        WriteMode::Buffered => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a misplaced block shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn odd_sized_writes_at_odd_offsets_land_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [WriteMode::Direct, WriteMode::Buffered] {
            let path = dir.path().join(format!("{mode:?}"));
            let first = pattern(3 * BLOCK_BUFFER / 2 + 7, 1);
            let mut w = BlockWriter::create(&path, mode).unwrap();
            for piece in first.chunks(65_537) {
                w.write(piece).unwrap();
            }
            // /tmp on this project's machines is ext4, which takes O_DIRECT.
            assert_eq!(w.is_direct(), mode == WriteMode::Direct);
            assert_eq!(w.finish(true).unwrap(), first.len() as u64);
            assert_eq!(std::fs::read(&path).unwrap(), first, "{mode:?}");

            // Continue from an unaligned offset inside what was written (a resumed part).
            let keep = 1_000_003usize;
            let second = pattern(2 * BLOCK_BUFFER + ALIGN + 5, 9);
            let mut w = BlockWriter::open_at(&path, keep as u64, mode).unwrap();
            for piece in second.chunks(4093) {
                w.write(piece).unwrap();
            }
            w.finish(false).unwrap();
            let mut expected = first[..keep].to_vec();
            expected.extend_from_slice(&second);
            assert_eq!(std::fs::read(&path).unwrap(), expected, "{mode:?}");
        }
    }

    #[test]
    fn block_buffers_are_reused_and_spares_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<BlockWriter> = (0..SPARE_BUFFERS + 4)
            .map(|i| BlockWriter::create(&dir.path().join(i.to_string()), WriteMode::Direct))
            .collect::<io::Result<_>>()
            .unwrap();
        let used: Vec<*const u8> = writers.iter().map(|w| w.storage.as_ptr()).collect();
        drop(writers);
        assert!(SPARES.lock().unwrap().len() <= SPARE_BUFFERS);
        let again = BlockWriter::create(&dir.path().join("again"), WriteMode::Direct).unwrap();
        assert!(
            used.contains(&again.storage.as_ptr()),
            "a spare buffer was not reused"
        );
    }

    #[test]
    fn bytes_buffered_when_direct_writes_stop_land_in_place() {
        // A device refusing ALIGN-aligned direct writes (EINVAL) makes the writer fall back
        // after a block; a resumed part at an unaligned offset leaves bytes in the buffer then.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let keep = 1_000_003usize;
        std::fs::write(&path, pattern(keep, 1)).unwrap();
        let data = pattern(BLOCK_BUFFER + 3 * ALIGN + 11, 5);
        for split in [BLOCK_BUFFER, BLOCK_BUFFER + 2 * ALIGN, data.len()] {
            let mut w = BlockWriter::open_at(&path, keep as u64, WriteMode::Direct).unwrap();
            w.write(&data[..split]).unwrap();
            assert!(w.filled > 0, "nothing left in the buffer at {split}");
            w.fall_back();
            w.write(&data[split..]).unwrap();
            assert_eq!(w.finish(true).unwrap(), (keep + data.len()) as u64);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk.len(), keep + data.len(), "{split}");
            assert!(on_disk[keep..] == data[..], "{split}");
        }
    }

    #[test]
    fn resuming_past_the_end_of_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let e = BlockWriter::open_at(&path, 4, WriteMode::Direct)
            .err()
            .expect("a part after a gap was accepted");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }

    #[test]
    fn empty_and_tiny_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(
            BlockWriter::create(&path, WriteMode::Direct)
                .unwrap()
                .finish(true)
                .unwrap(),
            0
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        let mut w = BlockWriter::create(&path, WriteMode::Direct).unwrap();
        w.write(b"abc").unwrap();
        w.finish(false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }
}
