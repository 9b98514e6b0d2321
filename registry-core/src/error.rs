//! The registry's error type: one variant per thing a client can be told.
//!
//! registry-server maps each variant to its OCI error code and HTTP status in one place.

use crate::digest::{Digest, DigestError};
use crate::manifest::ManifestError;
use crate::names::NameError;
use crate::storage::StorageError;

/// Everything a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Repository name breaks the grammar.
    #[error("invalid repository name")]
    NameInvalid(String),
    /// Repository does not exist.
    #[error("repository name not known to registry")]
    NameUnknown(String),
    /// Tag breaks the grammar.
    #[error("invalid tag")]
    TagInvalid(String),
    /// Digest is malformed, unsupported, or does not match the content.
    #[error("provided digest did not match uploaded content")]
    DigestInvalid(String),
    /// Blob is not in the repository.
    #[error("blob unknown to registry")]
    BlobUnknown(Digest),
    /// Upload id is unknown (never existed, finished, cancelled, or another repository's).
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// Upload request is malformed.
    #[error("blob upload invalid")]
    BlobUploadInvalid(String),
    /// A chunk does not start where the upload stands.
    #[error("requested range not satisfiable")]
    UploadRangeInvalid {
        /// Bytes the upload holds so far.
        offset: u64,
    },
    /// A blob read asked for bytes outside the blob.
    #[error("requested range not satisfiable")]
    BlobRangeInvalid {
        /// Size of the blob.
        size: u64,
    },
    /// Manifest is not in the repository.
    #[error("manifest unknown")]
    ManifestUnknown(String),
    /// Manifest body is invalid.
    #[error("manifest invalid")]
    ManifestInvalid(String),
    /// Manifest refers to a blob or manifest the repository lacks.
    #[error("blob unknown to registry")]
    ManifestBlobUnknown(Digest),
    /// Manifest body is larger than the configured limit.
    #[error("manifest too large")]
    ManifestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Content length or size does not match.
    #[error("provided length did not match content length")]
    SizeInvalid(String),
    /// The operation is switched off (for example deletes).
    #[error("the operation is unsupported")]
    Unsupported(String),
    /// Another request changed the same upload at the same time.
    #[error("upload was changed by a concurrent request")]
    Conflict(String),
    /// A push or delete would move or remove a tag an immutability rule protects.
    #[error("tag {tag} is immutable (rule {rule})")]
    TagImmutable {
        /// The tag.
        tag: String,
        /// The rule protecting it.
        rule: String,
    },
    /// A push would take a repository past its quota.
    #[error(
        "quota {rule} of {limit} bytes would be exceeded: the repository holds {usage} bytes and this push adds {adds}"
    )]
    QuotaExceeded {
        /// The quota's name.
        rule: String,
        /// Its limit in bytes.
        limit: u64,
        /// What the repository holds now.
        usage: u64,
        /// What the push would add.
        adds: u64,
    },
    /// The store failed; details are logged, not sent to clients.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::InvalidName(n) => RegistryError::NameInvalid(n),
            NameError::InvalidTag(t) => RegistryError::TagInvalid(t),
            NameError::InvalidDigest(d) => RegistryError::DigestInvalid(d.to_string()),
        }
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::DigestInvalid(e.to_string())
    }
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        RegistryError::ManifestInvalid(e.to_string())
    }
}

/// Shorthand for registry results.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
