//! Removal of large files and whole directories off the request path.
//!
//! Unlinking a 1 GiB file on ext4 takes ~200 ms (every block is freed in the journal), and a
//! push of a blob the store already has ends with exactly that: the verified upload is dropped.
//! Here a removal is a rename into a hidden directory under the root, which is immediate and
//! atomic, and a background thread frees the space. What a crash leaves in that directory is
//! garbage by construction, so any driver opened on the root empties it, on any replica.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

/// Directory under the root holding what waits to be freed (hidden: no key can name it).
const TRASH_DIR: &str = ".berth-trash";
/// Files at least this large are freed in the background; smaller ones are unlinked at once,
/// which costs no more than the rename.
const LARGE_FILE: u64 = 8 << 20;

/// Hands removals to a background thread; cloning shares the thread.
#[derive(Debug, Clone)]
pub(crate) struct Trash {
    dir: PathBuf,
    reaper: Option<mpsc::Sender<Job>>,
    /// Removals queued and not yet freed.
    queued: Arc<AtomicUsize>,
}

/// Work for the thread, done in order.
#[derive(Debug)]
enum Job {
    /// Free this path (a file or a directory) in the trash.
    Free(PathBuf),
    /// Answer once everything queued before is done.
    Barrier(mpsc::Sender<()>),
}

impl Trash {
    /// The trash of `root`; starts the thread and queues whatever an earlier process left.
    pub(crate) fn open(root: &Path) -> Trash {
        let dir = root.join(TRASH_DIR);
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let freed = queued.clone();
        let started = std::thread::Builder::new()
            .name("berth-trash".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Free(path) => {
                            free(&path);
                            freed.fetch_sub(1, Ordering::AcqRel);
                        }
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        let reaper = started.ok().map(|_| tx);
        if let (Some(tx), Ok(entries)) = (&reaper, std::fs::read_dir(&dir)) {
            for e in entries.flatten() {
                queued.fetch_add(1, Ordering::AcqRel);
                let _ = tx.send(Job::Free(e.path()));
            }
        }
        Trash {
            dir,
            reaper,
            queued,
        }
    }

    /// Whether removals wait to be freed (the space they hold is not yet back).
    pub(crate) fn holds_any(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// Blocks until everything removed so far is freed.
    pub(crate) fn settle(&self) {
        let (done, finished) = mpsc::channel();
        if let Some(tx) = &self.reaper
            && tx.send(Job::Barrier(done)).is_ok()
        {
            let _ = finished.recv();
        }
    }

    /// Removes the file at `path`: a large one is renamed away and freed later.
    pub(crate) fn remove_file(&self, path: &Path) -> io::Result<()> {
        let large = std::fs::symlink_metadata(path)?.len() >= LARGE_FILE;
        if large && self.defer(path) {
            return Ok(());
        }
        std::fs::remove_file(path)
    }

    /// Removes the directory at `path` with everything in it, freed later.
    pub(crate) fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        if !std::fs::symlink_metadata(path)?.is_dir() {
            return Err(io::Error::new(ErrorKind::NotADirectory, "not a directory"));
        }
        if self.defer(path) {
            return Ok(());
        }
        std::fs::remove_dir_all(path)
    }

    /// Moves `path` into the trash and queues it (or frees it here if the thread is gone);
    /// false when it must be removed in place (no thread, or a rename the filesystem refuses,
    /// such as across a mount point).
    fn defer(&self, path: &Path) -> bool {
        let Some(tx) = &self.reaper else { return false };
        let target = self.dir.join(uuid::Uuid::new_v4().simple().to_string());
        let moved = std::fs::rename(path, &target).or_else(|e| {
            if e.kind() != ErrorKind::NotFound {
                return Err(e);
            }
            // The trash itself is missing (first use, or emptied by hand); a vanished `path`
            // fails again below and is reported by the caller's removal in place.
            std::fs::create_dir_all(&self.dir)?;
            std::fs::rename(path, &target)
        });
        if moved.is_err() {
            return false;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(job)) = tx.send(Job::Free(target))
            && let Job::Free(target) = job
        {
            free(&target);
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }
}

fn free(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    if let Err(e) = result
        && e.kind() != ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not free a removed object");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `dir` becomes empty (or absent) within a few seconds.
    fn emptied(dir: &Path) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn removed_at_once_and_freed_in_the_background() {
        let root = tempfile::tempdir().unwrap();
        let trash = Trash::open(root.path());
        let large = root.path().join("large");
        std::fs::File::create(&large)
            .unwrap()
            .set_len(LARGE_FILE)
            .unwrap();
        let small = root.path().join("small");
        std::fs::write(&small, b"x").unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir_all(dir.join("e")).unwrap();
        std::fs::write(dir.join("e/f"), b"y").unwrap();

        trash.remove_file(&large).unwrap();
        trash.remove_file(&small).unwrap();
        trash.remove_dir_all(&dir).unwrap();
        for p in [&large, &small, &dir] {
            assert!(!p.exists(), "{} still there", p.display());
        }
        let dir_of_trash = root.path().join(TRASH_DIR);
        assert!(dir_of_trash.is_dir(), "nothing was deferred");
        assert!(trash.holds_any());
        trash.settle();
        assert!(!trash.holds_any());
        assert_eq!(std::fs::read_dir(&dir_of_trash).unwrap().count(), 0);
        // Gone is NotFound, as for a removal in place; a file is not a directory.
        assert_eq!(
            trash.remove_file(&large).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            trash.remove_dir_all(&dir).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        std::fs::write(&small, b"x").unwrap();
        assert!(trash.remove_dir_all(&small).is_err());
        assert!(small.exists());
    }

    #[test]
    fn what_a_crash_left_is_freed_by_the_next_driver() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(TRASH_DIR);
        std::fs::create_dir_all(dir.join("abandoned/deep")).unwrap();
        std::fs::write(dir.join("abandoned/deep/data"), b"z").unwrap();
        std::fs::write(dir.join("upload"), b"z").unwrap();
        let _trash = Trash::open(root.path());
        assert!(emptied(&dir));
    }
}
