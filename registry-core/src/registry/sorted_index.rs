//! A set of names kept sorted in the store and cut into shards, so that a page of it costs a
//! bounded number of reads whatever its size (the catalog, the tags of a large repository).
//!
//! A root object lists the shards in order, each with the first name it may hold; a shard holds
//! the sorted names from its `first` up to the next shard's. Every change is a conditional write
//! of one shard, so any replica can add or remove names and none is lost. A shard that grows
//! past [`SHARD_MAX`] (or a shard other than the first that empties) is first *sealed* (written
//! with the flag, on its version, so no change can land in it after) and then replaced in the
//! root by its pieces (or by nothing) with a conditional write of the root. Whoever meets a
//! sealed shard still in the root finishes that replacement itself, so a writer that died half
//! way holds nobody up; pieces written by a loser of that race are deleted again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};

use super::tags::Page;
use crate::error::Result;
use crate::storage::{ObjectInfo, ObjectVersion, PutCondition, StorageDriver, StorageError};

/// A shard holding more names than this is split.
pub const SHARD_MAX: usize = 1000;
/// Names per piece when a shard is split (room to grow before the next split).
const SHARD_FILL: usize = SHARD_MAX / 2;
/// A shard left with fewer names than this by a removal is merged into its left neighbour, so
/// that a page never spans many nearly empty shards.
const SHARD_MIN: usize = SHARD_MAX / 8;
/// Conditional writes lost in a row before a change gives up (the store is busy or refuses).
const ATTEMPTS: usize = 64;

/// The root: the shards in order and whether the index covers the whole set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Root {
    /// Whether the index was filled from the layout (until then, readers walk the layout).
    complete: bool,
    /// The shards in order; the first one's `first` is empty.
    shards: Vec<ShardRef>,
}

/// One shard as the root names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShardRef {
    /// The smallest name the shard may hold.
    first: String,
    /// Its object's name under `shards/`.
    id: String,
}

/// One shard's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Shard {
    /// Set once the shard is being replaced: nothing may change in it any more.
    #[serde(default)]
    sealed: bool,
    /// Its names, sorted.
    names: Vec<String>,
}

/// Whether a change went in or must start again from a fresh root.
enum Applied {
    Done,
    Retry,
}

/// A sorted index under one prefix of the store.
pub struct SortedIndex<'a> {
    store: &'a Arc<dyn StorageDriver>,
    prefix: String,
}

fn busy() -> crate::error::RegistryError {
    StorageError::Unavailable("an index kept changing under concurrent writers".into()).into()
}

async fn pause(attempt: usize) {
    let ms = 2u64 << attempt.min(6);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % ms.max(1);
    tokio::time::sleep(Duration::from_millis(ms / 2 + jitter)).await;
}

impl<'a> SortedIndex<'a> {
    /// The index whose objects live under `prefix` (ending with `/`).
    pub fn new(store: &'a Arc<dyn StorageDriver>, prefix: String) -> Self {
        SortedIndex { store, prefix }
    }

    fn root_key(&self) -> String {
        format!("{}root", self.prefix)
    }

    fn shard_key(&self, id: &str) -> String {
        format!("{}shards/{id}", self.prefix)
    }

    /// The root and its version; `None` when there is no index.
    async fn root(&self) -> Result<Option<(Root, ObjectVersion)>> {
        match self.store.read_small(&self.root_key()).await {
            Ok((body, info)) => {
                let root: Root = serde_json::from_slice(&body).map_err(|e| {
                    StorageError::Backend(format!("index root {} is corrupt: {e}", self.prefix))
                })?;
                Ok(Some((root, info.version)))
            }
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A shard and its version; `None` when it is gone (the root read was stale).
    async fn shard(&self, id: &str) -> Result<Option<(Shard, ObjectVersion)>> {
        match self.store.read_small(&self.shard_key(id)).await {
            Ok((body, info)) => {
                let shard: Shard = serde_json::from_slice(&body).map_err(|e| {
                    StorageError::Backend(format!(
                        "index shard {}{id} is corrupt: {e}",
                        self.prefix
                    ))
                })?;
                Ok(Some((shard, info.version)))
            }
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_shard(
        &self,
        id: &str,
        shard: &Shard,
        condition: PutCondition,
    ) -> std::result::Result<ObjectVersion, StorageError> {
        let body = serde_json::to_vec(shard).map_err(StorageError::backend)?;
        self.store
            .put_bytes(&self.shard_key(id), Bytes::from(body), condition)
            .await
            .map(|info| info.version)
    }

    async fn write_root(
        &self,
        root: &Root,
        condition: PutCondition,
    ) -> std::result::Result<ObjectInfo, StorageError> {
        let body = serde_json::to_vec(root).map_err(StorageError::backend)?;
        self.store
            .put_bytes(&self.root_key(), Bytes::from(body), condition)
            .await
    }

    /// Whether the index exists, and whether it is complete.
    pub async fn state(&self) -> Result<Option<bool>> {
        Ok(self.root().await?.map(|(r, _)| r.complete))
    }

    /// Creates an incomplete index holding `names` unless one exists (then adds them to it);
    /// returns whether the index is complete. Without names, asks first whether one exists.
    pub async fn create(&self, names: Vec<String>) -> Result<bool> {
        if names.is_empty()
            && let Some((root, _)) = self.root().await?
        {
            return Ok(root.complete);
        }
        let mut names: Vec<String> = names
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // More than a shard holds: created empty, then filled as any change is.
        let first = if names.len() > SHARD_MAX {
            Vec::new()
        } else {
            std::mem::take(&mut names)
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shard = Shard {
            sealed: false,
            names: first.clone(),
        };
        self.write_shard(&id, &shard, PutCondition::CreateOnly)
            .await?;
        let root = Root {
            complete: false,
            shards: vec![ShardRef {
                first: String::new(),
                id: id.clone(),
            }],
        };
        match self.write_root(&root, PutCondition::CreateOnly).await {
            Ok(_) if names.is_empty() => Ok(false),
            Ok(_) => {
                self.insert(names).await?;
                Ok(false)
            }
            Err(StorageError::AlreadyExists(_) | StorageError::Precondition(_)) => {
                let _ = self.store.delete(&self.shard_key(&id)).await;
                names.extend(first);
                self.insert(names).await?;
                Ok(self.state().await?.unwrap_or(false))
            }
            Err(e) => {
                let _ = self.store.delete(&self.shard_key(&id)).await;
                Err(e.into())
            }
        }
    }

    /// Marks the index as covering the whole set.
    pub async fn mark_complete(&self) -> Result<()> {
        for attempt in 0..ATTEMPTS {
            let Some((mut root, version)) = self.root().await? else {
                return Ok(());
            };
            if root.complete {
                return Ok(());
            }
            root.complete = true;
            match self
                .write_root(&root, PutCondition::IfVersion(version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StorageError::Precondition(_) | StorageError::NotFound(_)) => {
                    pause(attempt).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy())
    }

    /// Adds `names`; returns `false` (and does nothing) when there is no index.
    pub async fn insert(&self, names: impl IntoIterator<Item = String>) -> Result<bool> {
        self.change(names.into_iter().collect(), true).await
    }

    /// Removes `names`; returns `false` (and does nothing) when there is no index.
    pub async fn remove(&self, names: impl IntoIterator<Item = String>) -> Result<bool> {
        self.change(names.into_iter().collect(), false).await
    }

    async fn change(&self, mut pending: BTreeSet<String>, add: bool) -> Result<bool> {
        let mut attempt = 0;
        while !pending.is_empty() {
            let Some((root, root_version)) = self.root().await? else {
                return Ok(false);
            };
            let mut retry = false;
            for (i, group) in groups(&root, &pending) {
                match self.apply(&root, &root_version, i, &group, add).await? {
                    Applied::Done => {
                        for n in &group {
                            pending.remove(n);
                        }
                    }
                    Applied::Retry => retry = true,
                }
            }
            if retry {
                attempt += 1;
                if attempt >= ATTEMPTS {
                    return Err(busy());
                }
                pause(attempt).await;
            }
        }
        Ok(true)
    }

    /// Adds or removes `group` (names of shard `i`'s range) with one conditional write.
    async fn apply(
        &self,
        root: &Root,
        root_version: &ObjectVersion,
        i: usize,
        group: &[String],
        add: bool,
    ) -> Result<Applied> {
        let Some((mut shard, version)) = self.shard(&root.shards[i].id).await? else {
            return Ok(Applied::Retry);
        };
        if shard.sealed {
            self.replace(root, root_version, i, &shard).await?;
            return Ok(Applied::Retry);
        }
        let before = shard.names.len();
        if add {
            let mut all: BTreeSet<String> = std::mem::take(&mut shard.names).into_iter().collect();
            all.extend(group.iter().cloned());
            shard.names = all.into_iter().collect();
        } else {
            let gone: BTreeSet<&String> = group.iter().collect();
            shard.names.retain(|n| !gone.contains(n));
        }
        if shard.names.len() == before {
            return Ok(Applied::Done);
        }
        // Too full: split. Nearly empty after a removal: merged into its left neighbour.
        shard.sealed =
            shard.names.len() > SHARD_MAX || (!add && shard.names.len() < SHARD_MIN && i > 0);
        match self
            .write_shard(&root.shards[i].id, &shard, PutCondition::IfVersion(version))
            .await
        {
            Ok(_) => {}
            Err(StorageError::Precondition(_) | StorageError::NotFound(_)) => {
                return Ok(Applied::Retry);
            }
            Err(e) => return Err(e.into()),
        }
        if shard.sealed {
            // The change is in (a sealed shard is read like any other); whoever meets the
            // seal next finishes the replacement if this one fails.
            if let Err(e) = self.replace(root, root_version, i, &shard).await {
                tracing::warn!(index = %self.prefix, error = %e, "a full index shard stays sealed until the next change");
            }
        }
        Ok(Applied::Done)
    }

    /// Replaces sealed shard `i` in the root: by its pieces when it is too full, by nothing
    /// (its names moved into its left neighbour first) when it is nearly empty. Only the names
    /// of its range under this root count: a neighbour's merge may have copied others in.
    fn replace<'b>(
        &'b self,
        root: &'b Root,
        root_version: &'b ObjectVersion,
        i: usize,
        sealed: &'b Shard,
    ) -> futures::future::BoxFuture<'b, Result<()>> {
        Box::pin(async move {
            let names: Vec<String> = sealed
                .names
                .iter()
                .filter(|n| in_range(root, i, n))
                .cloned()
                .collect();
            let pieces = if names.len() <= SHARD_MAX && i > 0 {
                // Its names are in the neighbour before it leaves the root; until then readers
                // take them from it (a copy out of the neighbour's range is not read there).
                match self.apply(root, root_version, i - 1, &names, true).await? {
                    Applied::Done => Vec::new(),
                    Applied::Retry => return Ok(()),
                }
            } else {
                self.write_pieces(root, i, &names).await?
            };
            let mut next = root.clone();
            next.shards.splice(i..=i, pieces.iter().cloned());
            let swapped = self
                .write_root(&next, PutCondition::IfVersion(root_version.clone()))
                .await;
            let orphans: Vec<&str> = match &swapped {
                Ok(_) => vec![root.shards[i].id.as_str()],
                Err(_) => pieces.iter().map(|p| p.id.as_str()).collect(),
            };
            for id in orphans {
                let _ = self.store.delete(&self.shard_key(id)).await;
            }
            match swapped {
                Ok(_) | Err(StorageError::Precondition(_) | StorageError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Writes `names` (shard `i`'s) as new shards of even size, 16 at a time.
    async fn write_pieces(&self, root: &Root, i: usize, names: &[String]) -> Result<Vec<ShardRef>> {
        let count = names.len().div_ceil(SHARD_FILL).max(1);
        let size = names.len().div_ceil(count).max(1);
        let mut writes: Vec<(ShardRef, Shard)> = Vec::new();
        for (k, chunk) in names.chunks(size).enumerate() {
            let first = if k == 0 {
                root.shards[i].first.clone()
            } else {
                chunk[0].clone()
            };
            let id = uuid::Uuid::new_v4().simple().to_string();
            let piece = Shard {
                sealed: false,
                names: chunk.to_vec(),
            };
            writes.push((ShardRef { first, id }, piece));
        }
        if writes.is_empty() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let first = root.shards[i].first.clone();
            writes.push((ShardRef { first, id }, Shard::default()));
        }
        let pieces: Vec<ShardRef> = writes.iter().map(|(p, _)| p.clone()).collect();
        let written: Vec<std::result::Result<ObjectVersion, StorageError>> = stream::iter(writes)
            .map(|(p, piece)| async move {
                self.write_shard(&p.id, &piece, PutCondition::CreateOnly)
                    .await
            })
            .buffer_unordered(16)
            .collect()
            .await;
        if let Some(Err(e)) = written.into_iter().find(|w| w.is_err()) {
            for p in &pieces {
                let _ = self.store.delete(&self.shard_key(&p.id)).await;
            }
            return Err(e.into());
        }
        Ok(pieces)
    }

    /// The names after `last`, at most `n` of them; `None` when there is no complete index.
    /// Reads the root and the shards the page spans.
    pub async fn page(&self, n: Option<usize>, last: Option<&str>) -> Result<Option<Page>> {
        for attempt in 0..ATTEMPTS {
            let Some((root, _)) = self.root().await? else {
                return Ok(None);
            };
            if !root.complete {
                return Ok(None);
            }
            let Some(n) = n else {
                let Some(all) = self.read_all(&root).await? else {
                    pause(attempt).await;
                    continue;
                };
                let items: Vec<String> = all
                    .into_iter()
                    .filter(|x| last.is_none_or(|l| x.as_str() > l))
                    .collect();
                return Ok(Some(Page { items, more: false }));
            };
            let start = last.map_or(0, |l| shard_of(&root, l));
            let mut items = Vec::new();
            let mut stale = false;
            for (i, s) in root.shards.iter().enumerate().skip(start) {
                let Some((shard, _)) = self.shard(&s.id).await? else {
                    stale = true;
                    break;
                };
                items.extend(
                    shard
                        .names
                        .into_iter()
                        .filter(|x| in_range(&root, i, x) && last.is_none_or(|l| x.as_str() > l)),
                );
                if items.len() > n {
                    break;
                }
            }
            if stale {
                pause(attempt).await;
                continue;
            }
            let more = items.len() > n;
            items.truncate(n);
            return Ok(Some(Page { items, more }));
        }
        Err(busy())
    }

    /// Every name, in order; `None` when there is no index.
    pub async fn all(&self) -> Result<Option<Vec<String>>> {
        for attempt in 0..ATTEMPTS {
            let Some((root, _)) = self.root().await? else {
                return Ok(None);
            };
            match self.read_all(&root).await? {
                Some(all) => return Ok(Some(all)),
                None => pause(attempt).await,
            }
        }
        Err(busy())
    }

    /// Every shard of `root`, 16 reads at a time; `None` when one is gone (a stale root).
    async fn read_all(&self, root: &Root) -> Result<Option<Vec<String>>> {
        let ids: Vec<String> = root.shards.iter().map(|s| s.id.clone()).collect();
        let shards: Vec<Option<(Shard, ObjectVersion)>> = stream::iter(ids)
            .map(|id| async move { self.shard(&id).await })
            .buffered(16)
            .try_collect()
            .await?;
        let mut all = Vec::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let Some((shard, _)) = shard else {
                return Ok(None);
            };
            all.extend(shard.names.into_iter().filter(|x| in_range(root, i, x)));
        }
        Ok(Some(all))
    }

    /// Whether `name` is in the index; `None` when there is no index.
    pub async fn contains(&self, name: &str) -> Result<Option<bool>> {
        for attempt in 0..ATTEMPTS {
            let Some((root, _)) = self.root().await? else {
                return Ok(None);
            };
            match self.shard(&root.shards[shard_of(&root, name)].id).await? {
                Some((shard, _)) => {
                    return Ok(Some(
                        shard
                            .names
                            .binary_search_by(|x| x.as_str().cmp(name))
                            .is_ok(),
                    ));
                }
                None => pause(attempt).await,
            }
        }
        Err(busy())
    }
}

/// The shard whose range holds `name`: the last one whose `first` is not after it.
fn shard_of(root: &Root, name: &str) -> usize {
    root.shards
        .partition_point(|s| s.first.as_str() <= name)
        .saturating_sub(1)
}

/// Whether `name` lies in shard `i`'s range under `root`.
fn in_range(root: &Root, i: usize, name: &str) -> bool {
    root.shards[i].first.as_str() <= name
        && root
            .shards
            .get(i + 1)
            .is_none_or(|next| name < next.first.as_str())
}

/// `names` grouped by the shard whose range holds them.
fn groups(root: &Root, names: &BTreeSet<String>) -> Vec<(usize, Vec<String>)> {
    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
    for name in names {
        let i = shard_of(root, name);
        match out.last_mut() {
            Some((j, group)) if *j == i => group.push(name.clone()),
            _ => out.push((i, vec![name.clone()])),
        }
    }
    out
}
