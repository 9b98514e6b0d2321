//! Orders the requests that write one local multipart file.
//!
//! On local disk every part of an upload lands in one file, so two requests that both believe
//! they own a session (a client retrying while its first request still streams, or two replicas
//! on a shared volume) could interleave their bytes while only one of them has hashed what ends
//! up there. A sidecar file holds the newest writer (the session's claim number) and is locked
//! around each part: a newer writer waits for an in-flight part and then overwrites from its own
//! offset, an older one is refused, and completion closes the fence to everyone.

use std::fs::File;
use std::io::{self, Read};
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

/// Held while a part is written; dropping it lets the next writer in.
pub(crate) struct Admitted {
    _lock: File,
}

/// The fence value after completion: no writer is newer.
const CLOSED: u64 = u64::MAX;

fn fence_path(multipart: &Path) -> PathBuf {
    let mut name = multipart.as_os_str().to_owned();
    name.push(".writer");
    PathBuf::from(name)
}

/// Locks the fence and returns it with the newest writer recorded so far (0 when none).
fn lock(multipart: &Path) -> io::Result<(File, u64)> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(fence_path(multipart))?;
    file.lock()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((file, text.trim().parse().unwrap_or(0)))
}

fn record(file: &File, writer: u64) -> io::Result<()> {
    let text = writer.to_string();
    file.set_len(0)?;
    file.write_all_at(text.as_bytes(), 0)
}

/// Lets `writer` write a part, waiting for a part in flight; refuses a writer older than the
/// newest one seen.
pub(crate) fn admit(multipart: &Path, writer: u64) -> Result<Admitted, Refused> {
    let (file, newest) = lock(multipart)?;
    if writer < newest || newest == CLOSED {
        return Err(Refused::Superseded);
    }
    if writer > newest {
        record(&file, writer)?;
    }
    Ok(Admitted { _lock: file })
}

/// Waits for a part in flight and refuses every later one: the file is about to be completed.
pub(crate) fn close(multipart: &Path) -> io::Result<Admitted> {
    let (file, _) = lock(multipart)?;
    record(&file, CLOSED)?;
    Ok(Admitted { _lock: file })
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

    #[test]
    fn newer_writers_take_over_and_older_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mp");
        drop(admit(&mp, 3).ok().unwrap());
        drop(admit(&mp, 3).ok().unwrap());
        assert!(matches!(admit(&mp, 2), Err(Refused::Superseded)));
        drop(admit(&mp, 4).ok().unwrap());
        assert!(matches!(admit(&mp, 3), Err(Refused::Superseded)));
        drop(close(&mp).unwrap());
        assert!(matches!(admit(&mp, 5), Err(Refused::Superseded)));
        remove(&mp).unwrap();
        assert!(!fence_path(&mp).exists());
    }

    #[test]
    fn a_newer_writer_waits_for_the_part_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mp");
        let held = admit(&mp, 1).ok().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mp2 = mp.clone();
        let newer = std::thread::spawn(move || {
            let _a = admit(&mp2, 2).ok().unwrap();
            tx.send(()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "entered while a part was in flight");
        drop(held);
        newer.join().unwrap();
        assert!(rx.try_recv().is_ok());
    }
}
