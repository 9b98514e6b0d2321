//! Orders the requests that write one local multipart file.
//!
//! On local disk every part of an upload lands in one file, so two requests that both believe
//! they own a session (a client retrying while its first request still streams, or two replicas
//! on a shared volume) could interleave their bytes while only one of them has hashed what ends
//! up there. A sidecar file holds the newest writer (the session's claim number) and is locked
//! around each part: a newer writer waits for an in-flight part and then overwrites from its own
//! offset, an older one is refused, and completion closes the fence to everyone.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why a writer was not let in.
pub(crate) enum Refused {
    /// A newer request wrote to this upload, or it was completed.
    Superseded,
    /// The fence could not be read or written.
    Io(io::Error),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Refused::Io(e)
    }
}

/// The fence of one multipart file, open for a request's writes.
pub(crate) struct Fence {
    file: File,
}

/// Held while bytes are written; dropping it lets the next writer in.
pub(crate) struct Entered<'a> {
    file: &'a File,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The fence value after completion: no writer is newer.
const CLOSED: u64 = u64::MAX;

fn fence_path(multipart: &Path) -> PathBuf {
    let mut name = multipart.as_os_str().to_owned();
    name.push(".writer");
    PathBuf::from(name)
}

impl Fence {
    /// Opens (creating) the fence of `multipart`.
    pub(crate) fn open(multipart: &Path) -> io::Result<Fence> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(fence_path(multipart))?;
        Ok(Fence { file })
    }

    /// Locks the fence and reads the newest writer recorded so far (0 when none).
    fn lock(&self) -> io::Result<(Entered<'_>, u64)> {
        self.file.lock()?;
        let entered = Entered { file: &self.file };
        let mut buf = [0u8; 24];
        let n = self.file.read_at(&mut buf, 0)?;
        let newest = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Ok((entered, newest))
    }

    fn record(&self, writer: u64) -> io::Result<()> {
        // Fixed width (u64::MAX has 20 digits): one write replaces the old value, no truncate.
        let text = format!("{writer:>20}");
        self.file.write_all_at(text.as_bytes(), 0)
    }

    /// Lets `writer` write, waiting for bytes in flight; refuses a writer older than the newest
    /// one seen.
    pub(crate) fn enter(&self, writer: u64) -> Result<Entered<'_>, Refused> {
        let (entered, newest) = self.lock()?;
        if writer < newest || newest == CLOSED {
            return Err(Refused::Superseded);
        }
        if writer > newest {
            self.record(writer)?;
        }
        Ok(entered)
    }

    /// Waits for bytes in flight and refuses every later write: the file is being completed.
    pub(crate) fn close(&self) -> io::Result<Entered<'_>> {
        let (entered, _) = self.lock()?;
        self.record(CLOSED)?;
        Ok(entered)
    }
}

/// Deletes the fence of a finished or abandoned multipart file.
pub(crate) fn remove(multipart: &Path) -> io::Result<()> {
    match std::fs::remove_file(fence_path(multipart)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(mp: &Path, writer: u64) -> bool {
        Fence::open(mp).unwrap().enter(writer).is_ok()
    }

    #[test]
    fn newer_writers_take_over_and_older_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mp");
        assert!(admit(&mp, 3));
        assert!(admit(&mp, 3));
        assert!(!admit(&mp, 2));
        assert!(admit(&mp, 4));
        assert!(!admit(&mp, 3));
        drop(Fence::open(&mp).unwrap().close().unwrap());
        assert!(!admit(&mp, 5));
        remove(&mp).unwrap();
        assert!(!fence_path(&mp).exists());
    }

    #[test]
    fn a_newer_writer_waits_for_the_bytes_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mp");
        let fence = Fence::open(&mp).unwrap();
        let held = fence.enter(1).ok().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mp2 = mp.clone();
        let newer = std::thread::spawn(move || {
            assert!(admit(&mp2, 2));
            tx.send(()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "entered while bytes were in flight");
        drop(held);
        newer.join().unwrap();
        assert!(rx.try_recv().is_ok());
        assert!(
            fence.enter(1).is_err(),
            "the older writer is refused afterwards"
        );
    }
}
