//! In-memory driver (object_store's `InMemory` behind the shared adapter), for tests and demos.

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutPayload, PutResult, Result};
use registry_core::storage::PartPolicy;

use crate::ObjectStoreDriver;

/// A fresh, empty in-memory store; `part_size` lets tests exercise the fixed-part upload path.
pub fn memory_driver(part_size: u64) -> ObjectStoreDriver {
    let store = Arc::new(InMemory::new());
    ObjectStoreDriver::new(
        "inmemory",
        store.clone(),
        Arc::new(PartObjects { store }),
        None,
        "",
        PartPolicy {
            part_size,
            fixed_size: true,
        },
    )
}

/// Multipart writes that name every written part uniquely, as S3 (ETags), Azure (random block
/// ids) and GCS (generations) do, and complete with exactly the parts listed. `InMemory`'s own
/// multipart keeps one slot per part number, so a late writer's part would silently replace the
/// committed one there and the in-memory backend would not behave like the stores it stands for.
#[derive(Debug)]
struct PartObjects {
    store: Arc<InMemory>,
}

/// Where the parts of upload `id` live: outside every key the registry uses.
fn parts_prefix(id: &str) -> Path {
    Path::from(format!(".multipart/{id}"))
}

#[async_trait]
impl MultipartStore for PartObjects {
    async fn create_multipart(&self, _path: &Path) -> Result<MultipartId> {
        Ok(uuid::Uuid::new_v4().simple().to_string())
    }

    async fn put_part(
        &self,
        _path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result<PartId> {
        let content_id = format!("{part_idx}-{}", uuid::Uuid::new_v4().simple());
        self.store
            .put(&parts_prefix(id).join(content_id.as_str()), data)
            .await?;
        Ok(PartId { content_id })
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<PutResult> {
        let mut joined = Vec::new();
        for p in &parts {
            let part = parts_prefix(id).join(p.content_id.as_str());
            joined.extend_from_slice(&self.store.get(&part).await?.bytes().await?);
        }
        let result = self.store.put(path, joined.into()).await?;
        self.abort_multipart(path, id).await?;
        Ok(result)
    }

    async fn abort_multipart(&self, _path: &Path, id: &MultipartId) -> Result<()> {
        let parts: Vec<_> = self
            .store
            .list(Some(&parts_prefix(id)))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for p in parts {
            self.store.delete(&p).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_shared_driver_suite() {
        registry_core::storage::suite::run_all(Arc::new(memory_driver(1 << 20))).await;
    }
}
