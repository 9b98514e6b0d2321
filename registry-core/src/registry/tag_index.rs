//! An ordered, sharded index of a repository's tags ([`super::sorted_index`]), kept once the
//! repository has more than [`TAG_INDEX_AFTER`] tags, so that a page of its tag list reads a
//! bounded number of objects instead of listing every tag folder.
//!
//! Small repositories have none: their tag folders are one listing. The first tag list that
//! finds more creates the index and fills it from the layout. Writers keep it right from any
//! replica: a tag put writes its link and then adds the tag if the index exists, a tag delete
//! removes the link and then the tag. The filler creates the index before it lists the layout
//! (a writer that found no index wrote its link before, so the listing sees it), then lists
//! again after adding and removes what is gone (a delete that found no index removed its link
//! before that second listing).

use std::collections::BTreeSet;

use super::Registry;
use super::sorted_index::SortedIndex;
use super::tags::Page;
use crate::error::Result;
use crate::layout;
use crate::names::{RepositoryName, Tag};

/// Tags a repository holds before its tag list is served from an index.
pub const TAG_INDEX_AFTER: usize = 1000;

impl Registry {
    fn tag_index(&self, name: &RepositoryName) -> SortedIndex<'_> {
        SortedIndex::new(&self.store, layout::tag_index_prefix(name))
    }

    /// Adds a tag whose link was just written to the repository's index, if it has one.
    pub(super) async fn index_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<()> {
        self.tag_index(name).insert([tag.to_string()]).await?;
        Ok(())
    }

    /// Removes a tag whose link was just removed from the repository's index, if it has one.
    pub(super) async fn unindex_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<()> {
        self.tag_index(name).remove([tag.to_string()]).await?;
        Ok(())
    }

    /// A page of the repository's tags from its index; `None` when it has no complete index.
    pub(super) async fn indexed_tags(
        &self,
        name: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Option<Page>> {
        self.tag_index(name).page(n, last).await
    }

    /// Creates the repository's tag index and fills it from the layout (see the module's
    /// comment for why no concurrent tag put or delete is missed). Returns the tags indexed.
    pub async fn fill_tag_index(&self, name: &RepositoryName) -> Result<usize> {
        let index = self.tag_index(name);
        index.create(Vec::new()).await?;
        index.insert(self.all_tags(name).await?).await?;
        let listed: BTreeSet<String> = self.all_tags(name).await?.into_iter().collect();
        let held: BTreeSet<String> = index.all().await?.unwrap_or_default().into_iter().collect();
        let gone: Vec<String> = held.difference(&listed).cloned().collect();
        index.remove(gone.iter().cloned()).await?;
        // A put between the second listing and the removal added its tag before the removal
        // and wrote its link before that: asking for the link again finds it.
        let mut back = Vec::new();
        for tag in gone {
            if let Ok(t) = tag.parse::<Tag>()
                && self.exists(&layout::tag_current_link(name, &t)).await?
            {
                back.push(tag);
            }
        }
        index.insert(back).await?;
        index.mark_complete().await?;
        Ok(listed.len())
    }

    /// Whether the repository's tags are served from an index.
    pub async fn has_tag_index(&self, name: &RepositoryName) -> Result<bool> {
        Ok(self.tag_index(name).state().await?.is_some())
    }
}
