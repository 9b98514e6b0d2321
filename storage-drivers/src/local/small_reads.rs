//! Small files (tag links, upload state) remembered against the identity of the file they were
//! read from, so that reading one again costs one `stat` instead of `open`, `fstat`, `read` and
//! `close`: half the syscalls of a manifest GET by tag.
//!
//! Every write of such a file renames a new one into place, so its inode (and change time)
//! differ from what was remembered, and a `stat` of the path sees it at once, in this process
//! or any other sharing the directory. Nothing is trusted without that `stat`.
//!
//! Not on network filesystems: an NFS client answers `stat` from its attribute cache (up to a
//! minute old) where `open` asks the server, so there a replica could keep serving a tag another
//! replica moved. On those the driver reads every time, as before.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Files remembered before the table starts over (links are ~71 bytes: about 2 MiB at most).
const MAX_ENTRIES: usize = 16_384;

/// What identifies one version of a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// The identity `meta` gives.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Contents of recently read small files, by path.
#[derive(Debug, Default)]
pub(crate) struct SmallReads {
    entries: Mutex<HashMap<PathBuf, (Stamp, Bytes)>>,
    disabled: bool,
}

/// `statfs` magic numbers of filesystems whose `stat` may be served from a client-side cache.
const NETWORK_FILESYSTEMS: [i64; 6] = [
    0x6969,                 // NFS
    0x517B,                 // SMB
    0xFE53_4D42,            // SMB2
    0xFF53_4D42,            // CIFS
    0x6573_5546,            // FUSE (sshfs, s3fs, gcsfuse, ...)
    0x0BD0_0BD0_u32 as i64, // Lustre
];

impl SmallReads {
    /// Remembering reads under `root`, unless it is on a network filesystem (or unknown).
    pub(crate) fn for_root(root: &Path) -> SmallReads {
        SmallReads {
            disabled: !is_local_filesystem(root),
            ..SmallReads::default()
        }
    }

    /// The contents remembered for `path`, if the file is still the one they were read from.
    pub(crate) fn get(&self, path: &Path, now: Stamp) -> Option<Bytes> {
        if self.disabled {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(path) {
            Some((stamp, bytes)) if *stamp == now => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Remembers what was read from `path` when it was `stamp`.
    pub(crate) fn put(&self, path: &Path, stamp: Stamp, bytes: Bytes) {
        if self.disabled {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(path) {
            entries.clear();
        }
        entries.insert(path.to_owned(), (stamp, bytes));
    }
}

fn is_local_filesystem(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stats = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type; read only on success.
    let ok = unsafe { libc::statfs(c_path.as_ptr(), stats.as_mut_ptr()) } == 0;
    if !ok {
        return false;
    }
    // SAFETY: statfs succeeded, so it filled the buffer.
    #[allow(clippy::unnecessary_cast)] // f_type is i64 here, a narrower integer on other targets
    let kind = unsafe { stats.assume_init() }.f_type as i64;
    !NETWORK_FILESYSTEMS.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replaced_in_place_or_by_rename_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link");
        std::fs::write(&path, b"sha256:aaaa").unwrap();
        let reads = SmallReads::for_root(dir.path());
        assert!(
            !reads.disabled,
            "a temporary directory is on a local filesystem"
        );
        let first = Stamp::of(&std::fs::metadata(&path).unwrap());
        reads.put(&path, first, Bytes::from_static(b"sha256:aaaa"));
        assert_eq!(
            reads.get(&path, first).as_deref(),
            Some(&b"sha256:aaaa"[..])
        );

        // Same size, renamed into place: another inode.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"sha256:bbbb").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let renamed = Stamp::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(renamed, first);
        assert_eq!(reads.get(&path, renamed), None);
        assert_eq!(reads.get(&dir.path().join("other"), first), None);
    }
}
