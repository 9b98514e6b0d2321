//! The persisted state of one upload session (`_uploads/<id>/berth-state.json`).

use serde::{Deserialize, Serialize};

use crate::storage::{MultipartHandle, WrittenPart};

/// A fragment smaller than a part, stored as its own small object until more bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFragment {
    /// Names the object `staged/<generation>`; random, so that two requests racing on one
    /// version of the state never write the same object.
    pub generation: u64,
    /// Length in bytes.
    pub len: u64,
    /// The bytes themselves, in hex, for a fragment small enough to ride in the state instead
    /// of an object of its own (no `staged/<generation>` object then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// Everything a replica needs to continue an upload another replica started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// Unix seconds when the session started (for purging abandoned uploads).
    pub started_at: u64,
    /// Bytes accepted so far: `parts_bytes` plus the staged fragments.
    pub offset: u64,
    /// Hex of the serialized SHA-256 state over bytes `[0, offset)`.
    pub hash_state: String,
    /// The backend's multipart write, once the first part is written.
    pub multipart: Option<MultipartHandle>,
    /// Parts written, in order.
    pub parts: Vec<WrittenPart>,
    /// Bytes held in `parts`.
    pub parts_bytes: u64,
    /// Fragments waiting to fill the next part.
    pub staged: Vec<StagedFragment>,
    /// Bumped by every request that writes to a store whose parts share one file (local disk),
    /// so a request that lost the session can never overwrite a newer one's bytes. Object
    /// stores name every part and fragment uniquely, and the conditional commit of the state
    /// decides which request's parts count: there no claim is written.
    pub claim: u64,
    /// Set once the multipart write is completed and the bytes sit at the upload's data key.
    #[serde(default)]
    pub assembled: bool,
    /// Set by a cancel: the session is over, whatever URL names it (one whose state was never
    /// written included), until the purge removes what is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
}

impl UploadState {
    /// A session nothing was written to yet, started `started_at` (unix seconds).
    pub fn new(started_at: u64, hash_state: String) -> Self {
        UploadState {
            started_at,
            offset: 0,
            hash_state,
            multipart: None,
            parts: Vec::new(),
            parts_bytes: 0,
            staged: Vec::new(),
            claim: 0,
            assembled: false,
            ended: false,
        }
    }

    /// Bytes held in staged fragments.
    pub fn staged_len(&self) -> u64 {
        self.staged.iter().map(|f| f.len).sum()
    }

    /// True while nothing at all has been written.
    pub fn is_pristine(&self) -> bool {
        self.offset == 0 && self.multipart.is_none() && self.staged.is_empty() && !self.assembled
    }
}
