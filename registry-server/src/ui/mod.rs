//! The web UI at `/ui/`: find repositories, see their tags, inspect images, copy pull
//! commands, delete where the policy allows it. Server-rendered pages from askama templates,
//! a few lines of JavaScript for filtering as one types and copying, every asset in the
//! binary. Who may see or delete what is decided as for the API (`auth::viewer`).

mod assets;
mod delete;
mod facts;
mod inspect;
mod login;
mod oidc_login;
mod repositories;
mod session;
mod tags;
mod templates;
mod visit;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::App;
pub use session::SessionKey;

/// The UI's share of the process: the application, the session key once read, and what
/// image configs said (content-addressed, so never stale).
pub struct Ui {
    app: Arc<App>,
    key: tokio::sync::OnceCell<SessionKey>,
    configs: facts::ConfigCache,
}

/// What the UI's pages allow: scripts and styles from this origin only, no frames, no
/// plugins, forms posting back here only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes, and `/` sending a browser to them.
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let ui = Arc::new(Ui {
        app,
        key: Default::default(),
        configs: Default::default(),
    });
    Router::new()
        .route("/", get(to_ui))
        .route("/ui", get(to_ui))
        .route("/ui/", get(repositories::page))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/login/oidc", get(oidc_login::start))
        .route("/ui/login/oidc/callback", get(oidc_login::callback))
        .route("/ui/logout", post(login::logout))
        .route(
            "/ui/repo/{*path}",
            get(repository_get).post(repository_post),
        )
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui)
}

async fn to_ui() -> Redirect {
    Redirect::to("/ui/")
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key("cache-control") {
        h.insert("cache-control", HeaderValue::from_static("no-store"));
    }
    resp
}

/// What a `/ui/repo/...` path names: a repository's tags, one of its manifests, or the
/// deletion of one of its tags or manifests. Repository path components never start with
/// `_`, so the `_manifest` and `_delete` segments cannot be part of a name.
#[derive(Debug, PartialEq, Eq)]
enum RepoPath<'a> {
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Delete(&'a str),
}

impl<'a> RepoPath<'a> {
    fn parse(path: &'a str) -> Option<RepoPath<'a>> {
        if let Some((name, digest)) = path.split_once("/_manifest/") {
            return Some(RepoPath::Manifest(name, digest));
        }
        if let Some(name) = path.strip_suffix("/_delete") {
            return Some(RepoPath::Delete(name));
        }
        (!path.contains("/_")).then_some(RepoPath::Tags(path))
    }
}

async fn repository_get(
    axum::extract::State(ui): axum::extract::State<Arc<Ui>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    match RepoPath::parse(&path) {
        Some(RepoPath::Tags(name)) => tags::page(&ui, &parts, name).await,
        Some(RepoPath::Manifest(name, digest)) => inspect::page(&ui, &parts, name, digest).await,
        Some(RepoPath::Delete(name)) => delete::confirm(&ui, &parts, name).await,
        None => not_found().await,
    }
}

async fn repository_post(
    axum::extract::State(ui): axum::extract::State<Arc<Ui>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    match RepoPath::parse(&path) {
        Some(RepoPath::Delete(name)) => delete::submit(&ui, &parts, name, body).await,
        _ => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::RepoPath;

    #[test]
    fn repository_paths() {
        assert_eq!(RepoPath::parse("a/b"), Some(RepoPath::Tags("a/b")));
        assert_eq!(
            RepoPath::parse("a/b/_manifest/sha256:00"),
            Some(RepoPath::Manifest("a/b", "sha256:00"))
        );
        assert_eq!(RepoPath::parse("a/_delete"), Some(RepoPath::Delete("a")));
        assert_eq!(RepoPath::parse("a/_other/b"), None);
    }
}
