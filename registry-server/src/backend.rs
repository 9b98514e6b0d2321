//! Builds the storage driver that configuration selects; the rest of the server sees only the trait.

use std::sync::Arc;

use registry_core::StorageDriver;
use storage_drivers::resilient::{Resilient, RetryPolicy};
use storage_drivers::{LocalDriver, memory_driver};

use crate::config::{ConfigError, StorageChoice};

/// The driver for `choice`; an object store's requests are retried within `retry`'s budget.
pub fn build(
    choice: &StorageChoice,
    retry: RetryPolicy,
) -> Result<Arc<dyn StorageDriver>, ConfigError> {
    let object_store = |d: Arc<dyn StorageDriver>| -> Arc<dyn StorageDriver> {
        Arc::new(Resilient::new(d, retry))
    };
    Ok(match choice {
        StorageChoice::Filesystem { root, write_mode } => Arc::new(
            LocalDriver::with_write_mode(root, *write_mode).map_err(|e| ConfigError::Key {
                key: "storage.filesystem.rootdirectory".into(),
                message: format!("cannot create {}: {e}", root.display()),
            })?,
        ),
        StorageChoice::InMemory => Arc::new(memory_driver(crate::config::DEFAULT_PART_SIZE)),
        StorageChoice::S3(o) => object_store(Arc::new(storage_drivers::s3::s3_driver(o).map_err(
            |e| ConfigError::Key {
                key: "storage.s3".into(),
                message: e.to_string(),
            },
        )?)),
        StorageChoice::Gcs(o) => object_store(Arc::new(
            storage_drivers::gcs::gcs_driver(o).map_err(|e| ConfigError::Key {
                key: "storage.gcs".into(),
                message: e.to_string(),
            })?,
        )),
        StorageChoice::Azure(o) => object_store(Arc::new(
            storage_drivers::azure::azure_driver(o).map_err(|e| ConfigError::Key {
                key: "storage.azure".into(),
                message: e.to_string(),
            })?,
        )),
    })
}
