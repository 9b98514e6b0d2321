//! The sorted index's behaviour on a real backend, for each driver's tests to run beside the
//! shared driver suite: it leans on conditional writes, which stores honour differently.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::SortedIndex;
use crate::storage::StorageDriver;

const PREFIX: &str = "suite/index/";

fn name(i: usize) -> String {
    format!("n{:05}", (i * 7919) % 100_003)
}

/// Every page of 100, followed as a client follows `Link` headers.
async fn walk(index: &SortedIndex<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = index
            .page(Some(100), out.last().map(String::as_str))
            .await
            .unwrap_or_else(|e| panic!("index page: {e}"))
            .expect("a complete index");
        out.extend(page.items);
        if !page.more {
            return out;
        }
    }
}

/// Fills an index past a split, pages through it, empties most of it (merges); with
/// `concurrent` (a store whose conditional updates have exactly one winner), four writers then
/// race on the same shards and nothing is lost.
pub async fn run(driver: Arc<dyn StorageDriver>, concurrent: bool) {
    let index = SortedIndex::new(&driver, PREFIX.into());
    index.create(Vec::new()).await.expect("create");
    let mut expected: BTreeSet<String> = (0..1500).map(name).collect();
    index.insert(expected.clone()).await.expect("insert");
    index.mark_complete().await.expect("mark complete");
    assert_eq!(
        walk(&index).await,
        expected.iter().cloned().collect::<Vec<_>>(),
        "pages after a split"
    );
    let gone: Vec<String> = (0..1400).map(name).collect();
    index.remove(gone.clone()).await.expect("remove");
    for g in &gone {
        expected.remove(g);
    }
    assert_eq!(
        walk(&index).await,
        expected.iter().cloned().collect::<Vec<_>>(),
        "pages after merges"
    );
    if !concurrent {
        return;
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let driver = driver.clone();
            tokio::spawn(async move {
                let index = SortedIndex::new(&driver, PREFIX.into());
                for i in (2000 + w..2100).step_by(4) {
                    index.insert([name(i)]).await.expect("racing insert");
                    if i % 5 == 0 {
                        index.remove([name(i)]).await.expect("racing remove");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    expected.extend((2000..2100).filter(|i| i % 5 != 0).map(name));
    assert_eq!(
        walk(&index).await,
        expected.into_iter().collect::<Vec<_>>(),
        "racing writers lose nothing"
    );
}
