//! A repository's tags page: each tag's digest, size, platforms, created, pushed and pulled
//! times, sorted by name or by push time, a page at a time. Only the page's tags are read
//! beyond their links.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use futures::{StreamExt, stream};
use registry_core::{Reference, RegistryError, RepositoryName, Tag};

use super::Ui;
use super::facts::{FactReader, human_size};
use super::templates::{SortLink, TagRow, Tags, config_time, render, utc_time};
use super::visit::{Visit, get, query_of, registry_host};

/// Tags per page.
const PAGE: usize = 50;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    Name,
    Pushed,
}

impl Sort {
    fn parse(s: Option<&str>) -> Sort {
        match s {
            Some("pushed") => Sort::Pushed,
            _ => Sort::Name,
        }
    }

    fn param(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Pushed => "pushed",
        }
    }
}

/// The answer for a repository that does not exist or that the visitor may not see: the
/// same, so that a page never tells which.
pub(super) fn hidden(visit: &Visit) -> Response {
    let text = if visit.chrome.account.is_none() && visit.chrome.logins {
        "There is no such repository here, or you need to log in to see it."
    } else {
        "There is no such repository here, or you may not see it."
    };
    visit.message(StatusCode::NOT_FOUND, "Not found", text)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether the visitor may delete in `name` and the registry lets anyone delete there.
pub(super) fn deletes_allowed(ui: &Ui, visit: &Visit, name: &RepositoryName) -> bool {
    let s = &ui.app.settings;
    s.delete_enabled
        && !s.read_only
        && ui.app.content.check_writable(name.as_str()).is_ok()
        && visit.viewer.may(name.as_str(), "delete")
}

fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((_, hex)) => hex.chars().take(12).collect(),
        None => digest.to_owned(),
    }
}

pub(super) async fn page(ui: &Arc<Ui>, parts: &Parts, raw_name: &str) -> Response {
    let visit = match Visit::of(ui, parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Ok(name) = raw_name.parse::<RepositoryName>() else {
        return hidden(&visit);
    };
    if !visit.viewer.may(name.as_str(), "pull") {
        return hidden(&visit);
    }
    let registry = &ui.app.registry;
    let q = query_of(parts);
    let sort = Sort::parse(get(&q, "sort"));
    let unavailable = |e: RegistryError| visit.unavailable("a repository's tags", &e);
    // Every tag in the order shown, from one listing: by name, the tag names; by push time,
    // every tag's time as well (one listing with times where the store has them, else a stat
    // per tag). Beyond that, only the page's tags are looked at.
    let ordered: Vec<String> = match sort {
        Sort::Name => match registry.list_tags(&name, None, None).await {
            Ok(page) => page.items,
            Err(RegistryError::NameUnknown(_)) => return hidden(&visit),
            Err(e) => return unavailable(e),
        },
        Sort::Pushed => {
            let mut all = match registry.all_tag_push_times(&name).await {
                Ok(t) => t,
                Err(e) => return unavailable(e),
            };
            if all.is_empty() {
                match registry.repository_exists(&name).await {
                    Ok(true) => {}
                    Ok(false) => return hidden(&visit),
                    Err(e) => return unavailable(e),
                }
            }
            // Newest first; a tag gone since the listing (no time) last.
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            all.into_iter().map(|(t, _)| t).collect()
        }
    };
    let total = ordered.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page: usize = get(&q, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let shown: Vec<String> = ordered
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    let pulls: HashMap<String, u64> = registry
        .reference_pull_times(&name)
        .await
        .unwrap_or_default();
    let host = registry_host(&ui.app, parts);
    let reader = FactReader {
        app: &ui.app,
        configs: &ui.configs,
        name: &name,
    };
    let base = format!("/ui/repo/{name}");
    let rows: Vec<Result<Option<TagRow>, RegistryError>> = stream::iter(shown)
        .map(|tag| {
            let (reader, pulls, host, base, name) = (&reader, &pulls, &host, &base, &name);
            async move {
                // One read of the tag's link says what it names and when it was pushed. A tag
                // deleted since the listing is left out; a store that fails fails the page
                // (never a page that quietly lacks tags).
                let Ok(parsed) = tag.parse::<Tag>() else {
                    return Ok(None);
                };
                let gone = |e| match e {
                    RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_) => Ok(None),
                    e => Err(e),
                };
                let (target, pushed) = match registry.tag_target(name, &parsed).await {
                    Ok(t) => t,
                    Err(e) => return gone(e),
                };
                let m = match reader.manifest(&Reference::Digest(target)).await {
                    Ok(m) => m,
                    Err(e) => return gone(e),
                };
                let facts = reader.summary(&m).await;
                let digest = m.digest.to_string();
                let pulled = [pulls.get(&tag), pulls.get(&format!("@{digest}"))]
                    .into_iter()
                    .flatten()
                    .max()
                    .copied();
                let platforms = if facts.platforms.is_empty() {
                    facts.artifact_type.clone().unwrap_or_default()
                } else {
                    facts.platforms.join(", ")
                };
                Ok(Some(TagRow {
                    short_digest: short(&digest),
                    size: facts.size.map(human_size).unwrap_or_default(),
                    platforms,
                    created: facts
                        .created
                        .as_deref()
                        .map(config_time)
                        .unwrap_or_default(),
                    pushed: pushed.map(|t| utc_time(secs(t))).unwrap_or_default(),
                    pulled: pulled.map(utc_time).unwrap_or_else(|| "never".into()),
                    inspect: format!(
                        "{base}/_manifest/{digest}?tag={}",
                        url::form_urlencoded::byte_serialize(tag.as_bytes()).collect::<String>()
                    ),
                    pull_by_tag: format!("docker pull {host}/{name}:{tag}"),
                    pull_by_digest: format!("docker pull {host}/{name}@{digest}"),
                    digest,
                    tag,
                }))
            }
        })
        .buffered(32)
        .collect()
        .await;
    let rows = match rows.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(rows) => rows.into_iter().flatten().collect(),
        Err(e) => return unavailable(e),
    };
    let link = |sort: Sort, page: usize| format!("{base}?sort={}&page={page}", sort.param());
    let sorts = [(Sort::Name, "name"), (Sort::Pushed, "last push")]
        .into_iter()
        .map(|(s, label)| SortLink {
            label,
            href: link(s, 1),
            current: s == sort,
        })
        .collect();
    let notice = get(&q, "deleted").map(|r| format!("Deleted {r}."));
    let may_delete = deletes_allowed(ui, &visit, &name);
    let page_view = Tags {
        chrome: &visit.chrome,
        name: name.as_str(),
        rows,
        total,
        sorts,
        previous: (page > 1).then(|| link(sort, page - 1)),
        next: (page < pages).then(|| link(sort, page + 1)),
        page,
        pages,
        may_delete,
        delete_href: format!("{base}/_delete"),
        notice,
    };
    visit.respond(render(StatusCode::OK, &page_view))
}
