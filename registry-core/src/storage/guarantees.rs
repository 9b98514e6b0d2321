//! What a store honours of the guarantees Berth leans on, found by trying them on a scratch
//! object. Replicas arbitrate upload offsets, leases and index shards with create-only and
//! replace-if-unchanged writes; S3-compatible stores differ there (Garage, older MinIO and Ceph
//! RGW accept `If-None-Match` and `If-Match` and ignore them), and nothing but a try tells.

use std::future::Future;

use bytes::Bytes;

use super::{PutCondition, StorageDriver, StorageError};

/// What became of a presigned URL for the scratch object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presigning {
    /// The store makes no such URLs (local disk, memory): blobs are served by Berth.
    Unsupported,
    /// The URL served the object's bytes.
    Served,
    /// The store refused the URL or served other bytes (a signature it does not accept).
    Refused(String),
    /// The URL could not be fetched from here (a public endpoint this host cannot reach):
    /// neither proven nor disproven.
    Unchecked(String),
}

/// The guarantees one store was found to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarantees {
    /// A create-only put fails when the object exists.
    pub conditional_create: bool,
    /// A put conditioned on a version fails once the object changed, and succeeds while not.
    pub conditional_replace: bool,
    /// How a presigned GET fared.
    pub presigning: Presigning,
}

impl Guarantees {
    /// Whether several processes can write the store at once without losing writes.
    pub fn arbitrates_writers(&self) -> bool {
        self.conditional_create && self.conditional_replace
    }
}

/// Tries each guarantee on the object at `key` (which must be unused; it is removed after).
/// `fetch` GETs a presigned URL and says whether it served `expected`.
pub async fn probe<F, Fut>(
    store: &dyn StorageDriver,
    key: &str,
    fetch: F,
) -> Result<Guarantees, StorageError>
where
    F: FnOnce(String, Bytes) -> Fut,
    Fut: Future<Output = Presigning>,
{
    let body = |n: u8| Bytes::from(format!("berth store probe, write {n}"));
    let first = match store
        .put_bytes(key, body(1), PutCondition::CreateOnly)
        .await
    {
        Ok(info) => info,
        // Left by a probe that died half way: start again.
        Err(StorageError::AlreadyExists(_)) => {
            store.delete(key).await?;
            store
                .put_bytes(key, body(1), PutCondition::CreateOnly)
                .await?
        }
        Err(e) => return Err(e),
    };
    let found = async {
        let conditional_create = match store
            .put_bytes(key, body(2), PutCondition::CreateOnly)
            .await
        {
            Err(StorageError::AlreadyExists(_)) => true,
            Ok(_) => false,
            Err(e) => return Err(e),
        };
        // A change the first version no longer matches, then a replace conditioned on it.
        let current = store
            .put_bytes(key, body(3), PutCondition::Overwrite)
            .await?
            .version;
        // A stale write that went through made its own version the current one.
        let (stale_refused, current) = match store
            .put_bytes(key, body(4), PutCondition::IfVersion(first.version.clone()))
            .await
        {
            Err(StorageError::Precondition(_)) => (true, current),
            Ok(applied) => (false, applied.version),
            Err(e) => return Err(e),
        };
        let fresh_taken = match store
            .put_bytes(key, body(5), PutCondition::IfVersion(current))
            .await
        {
            Ok(_) => true,
            Err(StorageError::Precondition(_)) => false,
            Err(e) => return Err(e),
        };
        let presigning = match store
            .presign_get(key, std::time::Duration::from_secs(60))
            .await?
        {
            None => Presigning::Unsupported,
            Some(url) => fetch(url, body(5)).await,
        };
        Ok(Guarantees {
            conditional_create,
            conditional_replace: stale_refused && fresh_taken,
            presigning,
        })
    }
    .await;
    let removed = store.delete(key).await;
    let found = found?;
    removed?;
    Ok(found)
}
