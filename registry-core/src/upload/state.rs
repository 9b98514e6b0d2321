//! The persisted state of one upload session (`_uploads/<id>/berth-state.json`).

use serde::{Deserialize, Serialize};

use crate::storage::{MultipartHandle, WrittenPart};

/// A fragment smaller than a part, stored as its own small object until more bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFragment {
    /// Generation number; names the object `staged/<generation>`.
    pub generation: u64,
    /// Length in bytes.
    pub len: u64,
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
    /// Next generation number for a staged fragment.
    pub next_generation: u64,
    /// Bumped by every request that changes the session, so two cannot both act on one version.
    pub claim: u64,
    /// Set once the multipart write is completed and the bytes sit at the upload's data key.
    #[serde(default)]
    pub assembled: bool,
}

impl UploadState {
    /// Bytes held in staged fragments.
    pub fn staged_len(&self) -> u64 {
        self.staged.iter().map(|f| f.len).sum()
    }

    /// True while nothing at all has been written.
    pub fn is_pristine(&self) -> bool {
        self.offset == 0 && self.multipart.is_none() && self.staged.is_empty() && !self.assembled
    }
}
