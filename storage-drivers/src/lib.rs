//! Storage backends behind registry-core's [`StorageDriver`](registry_core::StorageDriver) trait.
//!
//! Local disk has its own append-and-rename implementation; every object store (memory, S3,
//! Azure, GCS) goes through object_store and one shared adapter, [`ObjectStoreDriver`].

#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcs")]
pub mod gcs;
pub mod local;
pub mod memory;
pub mod object_store_driver;
#[cfg(any(feature = "s3", feature = "gcs"))]
mod percent;
pub mod resilient;
#[cfg(feature = "s3")]
pub mod s3;
pub mod single_writer;

pub use local::LocalDriver;
pub use memory::memory_driver;
pub use object_store_driver::ObjectStoreDriver;
