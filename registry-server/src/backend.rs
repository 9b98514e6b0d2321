//! Builds the storage driver that configuration selects; the rest of the server sees only the trait.

use std::sync::Arc;

use registry_core::StorageDriver;
use storage_drivers::{LocalDriver, memory_driver};

use crate::config::{ConfigError, StorageChoice};

/// The driver for `choice`.
pub fn build(choice: &StorageChoice) -> Result<Arc<dyn StorageDriver>, ConfigError> {
    Ok(match choice {
        StorageChoice::Filesystem(root) => {
            Arc::new(LocalDriver::new(root).map_err(|e| ConfigError::Key {
                key: "storage.filesystem.rootdirectory".into(),
                message: format!("cannot create {}: {e}", root.display()),
            })?)
        }
        StorageChoice::InMemory => Arc::new(memory_driver(16 << 20)),
    })
}
