//! Tag listing with the spec's `n` / `last` pagination.

use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt, stream};

use super::Registry;
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::names::{RepositoryName, Tag};
use crate::storage::StorageError;

/// One page of a lexically ordered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries of this page.
    pub items: Vec<String>,
    /// Whether entries remain after this page (a `Link` header is due).
    pub more: bool,
}

/// Cuts a sorted list into the page after `last` holding at most `n` entries.
pub fn paginate(mut all: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    all.sort_unstable();
    all.dedup();
    let start = last.map_or(0, |l| all.partition_point(|x| x.as_str() <= l));
    let rest = all.len() - start;
    let take = n.unwrap_or(rest).min(rest);
    Page {
        more: take < rest,
        items: all.drain(start..start + take).collect(),
    }
}

impl Registry {
    pub(super) async fn all_tags(&self, name: &RepositoryName) -> Result<Vec<String>> {
        Ok(self.store.list(&layout::tags_prefix(name)).await?.prefixes)
    }

    /// When each of `tags` of a repository was last pushed (its link's time; `None` for a
    /// tag that is gone): a stat per tag, 32 at a time.
    pub async fn tag_push_times(
        &self,
        name: &RepositoryName,
        tags: &[String],
    ) -> Result<Vec<Option<SystemTime>>> {
        let store = self.store.clone();
        let times = stream::iter(tags.iter().cloned())
            .map(|tag| {
                let store = store.clone();
                let key = tag
                    .parse::<Tag>()
                    .map(|t| layout::tag_current_link(name, &t));
                async move {
                    let Ok(key) = key else { return Ok(None) };
                    match store.stat(&key).await {
                        Ok(info) => Ok(info.last_modified),
                        Err(StorageError::NotFound(_)) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(32)
            .try_collect()
            .await?;
        Ok(times)
    }

    /// Every tag of a repository with when it was last pushed: from one listing of its tag
    /// links where the store's listing carries their times, else a stat per tag (a walk of
    /// every tag's folders would cost more).
    pub async fn all_tag_push_times(
        &self,
        name: &RepositoryName,
    ) -> Result<Vec<(String, Option<SystemTime>)>> {
        if !self.store.lists_with_info() {
            let tags = self.all_tags(name).await?;
            let times = self.tag_push_times(name, &tags).await?;
            return Ok(tags.into_iter().zip(times).collect());
        }
        let prefix = layout::tags_prefix(name);
        let listed = self.store.list_with_info(&prefix).await?;
        Ok(listed
            .into_iter()
            .filter_map(|(key, info)| {
                let tag = key.strip_prefix(&prefix)?.strip_suffix("/current/link")?;
                (!tag.contains('/')).then(|| (tag.to_owned(), info.last_modified))
            })
            .collect())
    }

    /// Whether the repository exists: the catalog lists it (it keeps a repository whose
    /// manifests were all deleted, as distribution's catalog does), or it has revisions (a
    /// store written by distribution, before its catalog index was built).
    pub async fn repository_exists(&self, name: &RepositoryName) -> Result<bool> {
        if self.catalog_lists(name).await? == Some(true) {
            return Ok(true);
        }
        let revisions = self
            .store
            .list(&layout::manifest_revisions_prefix(name))
            .await?;
        Ok(!revisions.prefixes.is_empty() || !revisions.objects.is_empty())
    }

    /// Tags of a repository in lexical order, paginated: from its tag index when it has one,
    /// else from one listing of its tag folders (which creates the index when it finds many).
    pub async fn list_tags(
        &self,
        name: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        if let Some(page) = self.indexed_tags(name, n, last).await? {
            return Ok(page);
        }
        let tags = self.all_tags(name).await?;
        if tags.is_empty() && !self.repository_exists(name).await? {
            return Err(RegistryError::NameUnknown(name.to_string()));
        }
        if tags.len() > super::tag_index::TAG_INDEX_AFTER
            && let Err(e) = self.fill_tag_index(name).await
        {
            tracing::warn!(repository = %name, error = %e, "the tag index could not be built; tags are listed from the layout");
        }
        Ok(paginate(tags, n, last))
    }
}

#[cfg(test)]
mod tests {
    use super::paginate;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = v(&["c", "a", "b", "d"]);
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            super::Page {
                items: v(&["a", "b"]),
                more: true
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            super::Page {
                items: v(&["c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), None, Some("bb")).items,
            v(&["c", "d"])
        );
        assert_eq!(
            paginate(all.clone(), Some(0), None),
            super::Page {
                items: vec![],
                more: true
            }
        );
        assert_eq!(
            paginate(all, Some(10), Some("z")).items,
            Vec::<String>::new()
        );
    }
}
