//! Large local reads served from a memory map of the file.
//!
//! The body chunks handed to the HTTP server point straight into page-cache pages, so a pull
//! costs one copy (page cache to socket) instead of two, and no read buffers are allocated per
//! request. Safe only because this driver never changes a visible file in place: every write goes
//! to a hidden name and is renamed over the key, and a deleted file stays mapped until unmapped.

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

/// One chunk of a mapping; keeps the mapping alive while the HTTP server holds the bytes.
struct MappedChunk {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MappedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
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
    let map = Arc::new(map);
    let chunks = (0..len).step_by(CHUNK).map(move |at| {
        let ahead = at + READ_AHEAD;
        if ahead < len {
            let _ = map.advise_range(Advice::WillNeed, ahead, CHUNK.min(len - ahead));
        }
        Ok(Bytes::from_owner(MappedChunk {
            map: map.clone(),
            range: at..(at + CHUNK).min(len),
        }))
    });
    Ok(futures::stream::iter(chunks).boxed())
}
