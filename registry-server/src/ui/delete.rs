//! Deleting a tag or a manifest from the UI: a confirmation page, then a form post that
//! carries the session's CSRF token and goes through the API's own delete (the same checks,
//! audit line and notification as `DELETE /v2/<name>/manifests/<reference>`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use registry_core::{Reference, RepositoryName};

use super::Ui;
use super::tags::{deletes_allowed, hidden};
use super::templates::{ConfirmDelete, render};
use super::visit::{Visit, get, query_of};
use crate::api::{Ctx, Query};
use crate::auth::Identity;

/// Why the visitor cannot delete here, as a page; `None` when they can.
fn refusal(ui: &Ui, visit: &Visit, name: &RepositoryName) -> Option<Response> {
    if !visit.viewer.may(name.as_str(), "pull") {
        return Some(hidden(visit));
    }
    if deletes_allowed(ui, visit, name) {
        return None;
    }
    let s = &ui.app.settings;
    let text = if !visit.viewer.may(name.as_str(), "delete") {
        "You may not delete in this repository."
    } else if s.read_only {
        "The registry is in read-only mode."
    } else if !s.delete_enabled {
        "Deletes are turned off on this registry (storage.delete.enabled)."
    } else {
        "This repository is a pull-through cache: it holds only what its upstream serves."
    };
    Some(visit.message(StatusCode::FORBIDDEN, "Cannot delete", text))
}

/// What a deletion names, if the visitor may delete it: else the page saying why not.
// The error is the answer itself, made at most once per request.
#[allow(clippy::result_large_err)]
fn target(
    ui: &Ui,
    visit: &Visit,
    raw_name: &str,
    fields: &[(String, String)],
) -> Result<(RepositoryName, Reference), Response> {
    let Ok(name) = raw_name.parse::<RepositoryName>() else {
        return Err(hidden(visit));
    };
    if let Some(refused) = refusal(ui, visit, &name) {
        return Err(refused);
    }
    match get(fields, "reference").and_then(|r| r.parse::<Reference>().ok()) {
        Some(reference) => Ok((name, reference)),
        None => Err(visit.message(
            StatusCode::BAD_REQUEST,
            "Nothing to delete",
            "Name a tag or a manifest digest to delete.",
        )),
    }
}

pub(super) async fn confirm(ui: &Arc<Ui>, parts: &Parts, raw_name: &str) -> Response {
    let visit = match Visit::of(ui, parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (name, reference) = match target(ui, &visit, raw_name, &query_of(parts)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let reference = reference.to_string();
    let page = ConfirmDelete {
        chrome: &visit.chrome,
        name: name.as_str(),
        is_tag: !reference.contains(':'),
        reference: &reference,
        action: format!("/ui/repo/{name}/_delete"),
        back: format!("/ui/repo/{name}"),
    };
    visit.respond(render(StatusCode::OK, &page))
}

pub(super) async fn submit(ui: &Arc<Ui>, parts: &Parts, raw_name: &str, body: Body) -> Response {
    let (visit, form) = match Visit::posted(ui, parts, body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (name, reference) = match target(ui, &visit, raw_name, &form) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let ctx = Ctx {
        app: ui.app.clone(),
        method: Method::DELETE,
        headers: parts.headers.clone(),
        query: Query::empty(),
        identity: visit
            .viewer
            .account()
            .map_or(Identity::Anonymous, |a| Identity::Account(a.to_owned())),
        origin: crate::api::origin_of(&ui.app, parts),
    };
    let reference = reference.to_string();
    match crate::api::manifests::delete(&ctx, name.as_str(), &reference).await {
        Ok(_) => {
            let deleted: String =
                url::form_urlencoded::byte_serialize(reference.as_bytes()).collect();
            visit.respond(
                Redirect::to(&format!("/ui/repo/{name}?deleted={deleted}")).into_response(),
            )
        }
        Err(e) => visit.message(e.status, "Not deleted", &e.message),
    }
}
