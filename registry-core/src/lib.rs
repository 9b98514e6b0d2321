//! Berth's domain: digests, names, manifests, the storage layout, the storage trait, upload
//! sessions and the registry operations built on them. Nothing here knows HTTP or a cloud SDK.

pub mod digest;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod names;
pub mod registry;
pub mod storage;
pub mod upload;

pub use digest::{Algorithm, Digest};
pub use error::{RegistryError, Result};
pub use names::{Reference, RepositoryName, Tag};
pub use registry::{Quota, Registry, RegistrySettings, RepositoryRules, Retention};
pub use storage::StorageDriver;
