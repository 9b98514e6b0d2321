//! Large local reads served from a memory map of the file.
//!
//! The body chunks handed to the HTTP server point straight into page-cache pages, so a pull
//! costs one copy (page cache to socket) instead of two, and no read buffers are allocated per
//! request. Safe only because this driver never changes a visible file in place: every write goes
//! to a hidden name and is renamed over the key, and a deleted file stays mapped until unmapped.
//!
//! Sent pages are dropped from the mapping (`MADV_DONTNEED`; the page cache keeps them) every
//! few MiB. Before, every page of a pull stayed mapped until the
//! pull ended and counted in the process's resident set (the working set Kubernetes evicts by):
//! 1 GiB for one 1 GiB pull, 3.6 GiB for four, against a 512 Mi limit.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use memmap2::{Advice, Mmap, MmapOptions};
use registry_core::storage::ByteStream;

/// Files below this size are read with plain reads: mapping costs more than it saves.
pub(crate) const MAP_THRESHOLD: u64 = 1 << 20;
/// Bytes per body chunk: large, so the server writes big runs per syscall.
const CHUNK: usize = 1 << 20;
/// How far ahead of the chunk being sent the kernel is asked to read a cold file, so that the
/// page faults taken while sending find the pages already arriving.
const READ_AHEAD: usize = 8 * CHUNK;

/// Sent bytes are released from the mapping in runs of this size: one `madvise` (and its TLB
/// flush) per run, not per chunk.
const RELEASE: usize = 8 * CHUNK;

/// A mapping and how much of it has been released.
struct Mapping {
    map: Mmap,
    released: std::sync::atomic::AtomicUsize,
}

/// One chunk of a mapping; keeps the mapping alive while the HTTP server holds the bytes.
struct MappedChunk {
    map: Arc<Mapping>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MappedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.map.map[self.range.clone()]
    }
}

impl Drop for MappedChunk {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        // Chunks are sent, and so dropped, in order: everything before this chunk's end has
        // gone out.
        let released = self.map.released.load(Ordering::Relaxed);
        let last = self.range.end == self.map.map.len();
        if self.range.end < released + RELEASE && !last {
            return;
        }
        self.map.released.store(self.range.end, Ordering::Relaxed);
        let page = page_size();
        let base = self.map.map.as_ptr() as usize;
        let start = (base + released).next_multiple_of(page);
        let end = (base + self.range.end) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside the mapping, whose pages are file-backed and
            // never written; dropping them only makes a later read (of a chunk still in flight,
            // should one be) fault them in again from the page cache, with the same bytes.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// A stream of `range` of `file` in chunks that borrow the mapped pages.
pub(crate) fn mapped_body(file: &File, range: Range<u64>) -> io::Result<ByteStream> {
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| io::Error::other("range larger than the address space"))?;
    // SAFETY: the driver never truncates or rewrites a visible file in place (see the module
    // comment), so the mapped bytes stay valid and unchanged for the life of the mapping.
    let map = unsafe { MmapOptions::new().offset(range.start).len(len).map(file)? };
    // Hints for cold files; one failing only costs speed.
    let _ = map.advise(Advice::Sequential);
    let _ = map.advise_range(Advice::WillNeed, 0, READ_AHEAD.min(len));
    let map = Arc::new(Mapping {
        map,
        released: std::sync::atomic::AtomicUsize::new(0),
    });
    let chunks = (0..len).step_by(CHUNK).map(move |at| {
        let ahead = at + READ_AHEAD;
        if ahead < len {
            let _ = map
                .map
                .advise_range(Advice::WillNeed, ahead, CHUNK.min(len - ahead));
        }
        Ok(Bytes::from_owner(MappedChunk {
            map: map.clone(),
            range: at..(at + CHUNK).min(len),
        }))
    });
    Ok(futures::stream::iter(chunks).boxed())
}
