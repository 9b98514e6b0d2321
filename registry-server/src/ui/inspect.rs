//! One manifest's page: what it is, its layers and config (an image), its platforms (an
//! index), what refers to it (signatures, SBOMs, attestations), and its JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use registry_core::manifest::{Manifest, ManifestKind};
use registry_core::{Digest, Reference, RegistryError, RepositoryName, Tag};

use super::Ui;
use super::facts::{FactReader, descriptor_platform, human_size};
use super::tags::{deletes_allowed, hidden};
use super::templates::{
    ChildRow, Image, LayerRow, ReferrerGroup, ReferrerRow, config_time, render,
};
use super::visit::{Visit, get, query_of, registry_host};

pub(super) async fn page(
    ui: &Arc<Ui>,
    parts: &Parts,
    raw_name: &str,
    raw_digest: &str,
) -> Response {
    let visit = match Visit::of(ui, parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (Ok(name), Ok(digest)) = (
        raw_name.parse::<RepositoryName>(),
        raw_digest.parse::<Digest>(),
    ) else {
        return hidden(&visit);
    };
    if !visit.viewer.may(name.as_str(), "pull") {
        return hidden(&visit);
    }
    let q = query_of(parts);
    let tag = get(&q, "tag").and_then(|t| t.parse::<Tag>().ok());
    let reader = FactReader {
        app: &ui.app,
        configs: &ui.configs,
        name: &name,
    };
    let m = match reader.manifest(&Reference::Digest(digest.clone())).await {
        Ok(m) => m,
        Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_)) => {
            return visit.message(
                StatusCode::NOT_FOUND,
                "Not found",
                "This repository has no such manifest (it may have been deleted).",
            );
        }
        Err(e) => return visit.unavailable("a manifest", &e),
    };
    let parsed = Manifest::parse(&m.body, Some(&m.media_type)).ok();
    let base = format!("/ui/repo/{name}");
    let href = |d: &Digest| format!("{base}/_manifest/{d}");
    let mut layers = Vec::new();
    let mut children = Vec::new();
    let mut config = None;
    let mut size = None;
    let mut artifact_type = None;
    let mut subject = None;
    let mut annotations = Vec::new();
    if let Some(p) = &parsed {
        let facts = reader.image_facts(p).await;
        size = facts.size.map(human_size);
        artifact_type = facts.artifact_type.clone();
        if p.kind == ManifestKind::Image {
            layers = p
                .layers
                .iter()
                .map(|l| LayerRow {
                    digest: l.digest.to_string(),
                    size: human_size(l.size),
                    media_type: l.media_type.clone(),
                })
                .collect();
            if let Some(c) = &p.config {
                config = reader.config(c).await;
            }
        } else {
            children = p
                .manifests
                .iter()
                .map(|c| ChildRow {
                    platform: descriptor_platform(c).unwrap_or_else(|| {
                        c.artifact_type
                            .clone()
                            .unwrap_or_else(|| c.media_type.clone())
                    }),
                    digest: c.digest.to_string(),
                    size: human_size(c.size),
                    href: href(&c.digest),
                })
                .collect();
        }
        subject = p
            .subject
            .as_ref()
            .map(|s| (s.digest.to_string(), href(&s.digest)));
        annotations = p
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
    }
    let referrers = match ui.app.registry.list_referrers(&name, &digest, None).await {
        Ok(found) => {
            let mut groups: BTreeMap<String, Vec<ReferrerRow>> = BTreeMap::new();
            for d in found {
                let kind = d
                    .artifact_type
                    .clone()
                    .unwrap_or_else(|| d.media_type.clone());
                let created = d
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.created"))
                    .map(|t| config_time(t))
                    .unwrap_or_default();
                groups.entry(kind).or_default().push(ReferrerRow {
                    digest: d.digest.to_string(),
                    media_type: d.media_type.clone(),
                    size: human_size(d.size),
                    href: href(&d.digest),
                    created,
                });
            }
            groups
                .into_iter()
                .map(|(artifact_type, rows)| ReferrerGroup {
                    artifact_type,
                    rows,
                })
                .collect()
        }
        // "Nothing refers to it" would be a claim: a store that fails fails the page.
        Err(e) => return visit.unavailable("a manifest's referrers", &e),
    };
    let raw = serde_json::from_slice::<serde_json::Value>(&m.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&m.body).into_owned());
    let host = registry_host(&ui.app, parts);
    let delete_href = |reference: &str| {
        format!(
            "{base}/_delete?reference={}",
            url::form_urlencoded::byte_serialize(reference.as_bytes()).collect::<String>()
        )
    };
    let delete_tag_href = tag.as_ref().map(|t| delete_href(t.as_str()));
    let page_view = Image {
        chrome: &visit.chrome,
        name: name.as_str(),
        pull_by_tag: tag
            .as_ref()
            .map(|t| format!("docker pull {host}/{name}:{t}")),
        tag: tag.map(|t| t.to_string()),
        digest: digest.to_string(),
        media_type: m.media_type.clone(),
        artifact_type,
        size,
        created: config
            .as_ref()
            .and_then(|c| c.created.as_deref())
            .map(config_time),
        pull_by_digest: format!("docker pull {host}/{name}@{digest}"),
        layers,
        children,
        config,
        subject,
        referrers,
        annotations,
        raw,
        may_delete: deletes_allowed(ui, &visit, &name),
        delete_tag_href,
        delete_manifest_href: delete_href(&digest.to_string()),
        repository_href: base.clone(),
    };
    visit.respond(render(StatusCode::OK, &page_view))
}
