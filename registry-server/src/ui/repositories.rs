//! The repositories page: the catalog index (never a walk of the store), only what the
//! visitor may pull, filtered as they type, a page at a time; and the last collection.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::Ui;
use super::facts::human_size;
use super::templates::{CollectionLine, Repositories, RepositoryList, render, utc_time};
use super::visit::{Visit, get, query_of};

/// Repositories per page.
const PAGE: usize = 50;
/// The longest filter taken.
const MAX_FILTER: usize = 256;

/// The page of names after `after` that contain `filter` (any case) and pass `visible`.
fn select(
    names: &[String],
    filter: &str,
    after: Option<&str>,
    visible: impl Fn(&str) -> bool,
) -> (Vec<String>, usize, bool) {
    let needle = filter.to_ascii_lowercase();
    let matching: Vec<&String> = names
        .iter()
        .filter(|n| needle.is_empty() || n.contains(&needle))
        .filter(|n| visible(n))
        .collect();
    let start = after.map_or(0, |a| matching.partition_point(|n| n.as_str() <= a));
    let page: Vec<String> = matching
        .iter()
        .skip(start)
        .take(PAGE)
        .map(|n| (*n).clone())
        .collect();
    let more = start + page.len() < matching.len();
    (page, matching.len(), more)
}

pub(super) async fn page(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let visit = match Visit::of(&ui, &parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let q = query_of(&parts);
    let filter: String = get(&q, "q")
        .unwrap_or("")
        .chars()
        .take(MAX_FILTER)
        .collect();
    let after = get(&q, "after");
    let names = match ui.app.registry.list_catalog(None, None).await {
        Ok(page) => page.items,
        Err(e) => return visit.unavailable("the catalog", &e),
    };
    let (shown, matched, more) = select(&names, &filter, after, |n| visit.viewer.may(n, "pull"));
    let next = more.then(|| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !filter.is_empty() {
            s.append_pair("q", &filter);
        }
        s.append_pair("after", shown.last().map_or("", String::as_str));
        format!("/ui/?{}", s.finish())
    });
    let list = RepositoryList {
        names: shown,
        matched,
        next,
        filtered: !filter.is_empty(),
    };
    if get(&q, "partial").is_some() {
        return visit.respond(render(StatusCode::OK, &list));
    }
    let collection = match ui.app.registry.last_collection().await {
        Ok(c) => c.map(|c| CollectionLine {
            finished: utc_time(c.finished),
            freed: human_size(c.bytes),
            blobs: c.blobs,
            manifests: c.manifests,
        }),
        Err(_) => None,
    };
    let list_html = askama::Template::render(&list).unwrap_or_default();
    let page = Repositories {
        chrome: &visit.chrome,
        q: &filter,
        list_html,
        collection,
    };
    visit.respond(render(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn filtered_pages_of_visible_names() {
        let names: Vec<String> = (0..120).map(|i| format!("team/app{i:03}")).collect();
        let (page, matched, more) = select(&names, "APP1", None, |_| true);
        assert_eq!(matched, 20);
        assert_eq!(page.len(), 20);
        assert!(!more);
        let (page, matched, more) = select(&names, "", None, |n| !n.ends_with('7'));
        assert_eq!(matched, 108);
        assert_eq!(page.len(), 50);
        assert!(more);
        let (page2, _, _) = select(&names, "", page.last().map(String::as_str), |n| {
            !n.ends_with('7')
        });
        assert_eq!(page2[0], "team/app055");
    }
}
