//! In-memory driver (object_store's `InMemory` behind the shared adapter), for tests and demos.

use std::sync::Arc;

use object_store::memory::InMemory;
use registry_core::storage::PartPolicy;

use crate::ObjectStoreDriver;

/// A fresh, empty in-memory store; `part_size` lets tests exercise the fixed-part upload path.
pub fn memory_driver(part_size: u64) -> ObjectStoreDriver {
    let store = Arc::new(InMemory::new());
    ObjectStoreDriver::new(
        "inmemory",
        store.clone(),
        store,
        None,
        "",
        PartPolicy {
            part_size,
            fixed_size: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_shared_driver_suite() {
        registry_core::storage::suite::run_all(Arc::new(memory_driver(1 << 20))).await;
    }
}
