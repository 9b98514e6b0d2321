//! The OCI distribution HTTP API: one dispatcher over [`route::Route`] and a module per resource.

pub mod access_log;
mod admin;
mod blobs;
pub mod error;
mod listing;
pub(crate) mod manifests;
mod referrers;
pub mod route;
mod upload_ref;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use registry_core::storage::{ByteStream, StorageError};
use registry_core::{Registry, RepositoryName};

use crate::auth::logins::Origin;
use crate::config::Settings;
use error::{ApiError, ApiResult};
use route::Route;

/// Everything a request handler needs.
pub struct App {
    /// The registry operations.
    pub registry: Arc<Registry>,
    /// Where each repository's content comes from (the store, or an upstream it caches).
    pub content: crate::content::Content,
    /// Validated configuration.
    pub settings: Settings,
    /// Request metrics of this process.
    pub metrics: Arc<crate::observe::Metrics>,
    /// Webhook notifications.
    pub notifier: crate::notify::Notifier,
    /// Push mirroring to downstream registries, when configured.
    pub replication: Option<Arc<crate::replication::Replication>>,
    /// How this process writes the store, and what the store was found to honour.
    pub store: Arc<crate::store_mode::StoreStatus>,
}

/// Builds the router serving the whole API, and `pages` (the web UI) beside it under the
/// same access log.
pub fn router(app: Arc<App>, pages: Router<Arc<App>>) -> Router {
    let mut r = Router::new().merge(pages);
    if app.settings.auth.issuer.is_some() {
        // docker tries an OAuth2 POST first and falls back to GET on 404.
        r = r.route(
            crate::auth::TOKEN_PATH,
            axum::routing::get(token).post(|| async { ApiError::no_route().into_response() }),
        );
    }
    r.route(
        admin::TOKENS_PATH,
        axum::routing::get(admin::list_tokens).post(admin::create_token),
    )
    .route(
        &format!("{}/{{name}}", admin::TOKENS_PATH),
        axum::routing::delete(admin::revoke_token),
    )
    .route(admin::USAGE_PATH, axum::routing::get(admin::usage))
    .merge(probes(app.settings.debug.is_none().then_some("/metrics")))
    .fallback(dispatch)
    .layer(axum::middleware::map_response(api_version_header))
    .layer(axum::middleware::from_fn_with_state(
        app.clone(),
        access_log::observe,
    ))
    .with_state(app)
}

/// Liveness, readiness and, at `metrics`, the Prometheus metrics.
fn probes(metrics_path: Option<&str>) -> Router<Arc<App>> {
    let r = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz));
    match metrics_path {
        Some(p) => r.route(p, axum::routing::get(metrics)),
        None => r,
    }
}

/// The debug server of `http.debug.addr`: the probes and the metrics, nothing of the API.
pub fn debug_router(app: Arc<App>) -> Router {
    let path = app
        .settings
        .debug
        .as_ref()
        .and_then(|d| d.metrics_path.clone());
    probes(path.as_deref()).with_state(app)
}

async fn api_version_header(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// Query parameters in order; repeated keys are kept (`?tag=a&tag=b`).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// The query as it came, to pass on to an upstream.
    pub(crate) fn encoded(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.0.iter())
            .finish()
    }

    /// No parameters.
    pub(crate) fn empty() -> Query {
        Query(Vec::new())
    }

    fn of(parts: &Parts) -> Query {
        let q = parts.uri.query().unwrap_or("");
        Query(
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// First value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What an audited event was done to.
#[derive(Default)]
pub(crate) struct Audited<'a> {
    /// The tag or digest as the request named it.
    pub reference: &'a str,
    /// The content's digest.
    pub digest: Option<&'a registry_core::Digest>,
    /// What a moved tag named before.
    pub previous: Option<&'a registry_core::Digest>,
}

/// Per-request context passed to handlers.
pub(crate) struct Ctx {
    pub app: Arc<App>,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    /// Who made the request.
    pub identity: crate::auth::Identity,
    /// Where it came from.
    pub origin: Origin,
}

impl Ctx {
    /// A Location value for an API path: absolute when `http.host` is set, else a path.
    pub(crate) fn location(&self, path: &str) -> String {
        match &self.app.settings.host {
            Some(h) => format!("{h}{path}"),
            None => path.to_owned(),
        }
    }

    /// Queues a notification event (no-op when no endpoint is configured).
    pub(crate) fn notify(
        &self,
        action: &str,
        repository: &RepositoryName,
        media_type: &str,
        digest: &registry_core::Digest,
        size: u64,
        tag: Option<&str>,
    ) {
        if !self.app.notifier.enabled() {
            return;
        }
        let kind = if media_type == "application/octet-stream" {
            "blobs"
        } else {
            "manifests"
        };
        let target = crate::notify::Target {
            media_type: media_type.to_owned(),
            size,
            length: size,
            digest: digest.to_string(),
            repository: repository.to_string(),
            url: self.location(&format!("/v2/{repository}/{kind}/{digest}")),
            tag: tag.map(str::to_owned),
        };
        let h = |n: &str| self.header(n).unwrap_or("").to_owned();
        let request = crate::notify::RequestInfo {
            id: h("x-request-id"),
            addr: h("x-forwarded-for"),
            host: h("host"),
            method: self.method.to_string(),
            useragent: h("user-agent"),
        };
        self.app.notifier.emit(action, target, request, None);
    }

    /// Writes one line to the audit log (`berth::audit`): who did `event` to what, from where.
    pub(crate) fn audit(&self, event: &str, repository: &RepositoryName, what: Audited<'_>) {
        let text =
            |d: Option<&registry_core::Digest>| d.map(ToString::to_string).unwrap_or_default();
        tracing::info!(
            target: "berth::audit",
            event,
            account = self.identity.to_string().as_str(),
            client = %self.origin.client,
            repository = %repository,
            reference = what.reference,
            digest = %text(what.digest),
            previous = %text(what.previous),
        );
    }

    /// A header's value as text, if present and readable.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn parse_name(raw: &str) -> Result<RepositoryName, ApiError> {
    raw.parse::<RepositoryName>()
        .map_err(|e| ApiError::from(registry_core::RegistryError::from(e)))
}

/// A request body as a storage stream.
pub(crate) fn body_stream(body: Body) -> ByteStream {
    Box::pin(
        body.into_data_stream()
            .map_err(|e| StorageError::Backend(format!("request body: {e}"))),
    )
}

/// A response with a status, headers and no body.
pub(crate) fn empty(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut resp = (status, Body::empty()).into_response();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.metrics.render();
    app.notifier.render_metrics(&mut text);
    if let Some(r) = &app.replication {
        r.render_metrics(&mut text);
    }
    app.store.render_metrics(&mut text);
    // Asked at each scrape, as readyz asks: an alert on it sees what the probes see.
    let ready = tokio::time::timeout(std::time::Duration::from_secs(2), store_ready(&app))
        .await
        .unwrap_or(false);
    crate::observe::metrics::write_family(
        &mut text,
        "berth_store_ready",
        "gauge",
        "Whether the store answered this scrape (as /readyz asks it).",
        [(String::new(), u8::from(ready))],
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// Whether the store answers: a stat of a key that need not exist.
async fn store_ready(app: &App) -> bool {
    match app
        .registry
        .store()
        .stat("docker/registry/v2/berth/readyz")
        .await
    {
        Ok(_) | Err(StorageError::NotFound(_)) => true,
        Err(e) => {
            tracing::warn!(error = %e, "storage not reachable");
            false
        }
    }
}

/// Ready when the store answers and no other process writes a store only one may write; the
/// body names the store mode.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.store.other_writer() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "another Berth writes this store (single-writer mode): stop all but one",
        )
            .into_response()
    } else if store_ready(&app).await {
        (
            StatusCode::OK,
            format!("ready (store: {})", app.store.mode.name()),
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage unreachable").into_response()
    }
}

/// Where a request came from: its connection's peer, or what a trusted balancer says.
pub(crate) fn origin_of(app: &App, parts: &Parts) -> Origin {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    Origin::of(peer, &parts.headers, &app.settings.auth.logins.settings)
}

async fn token(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let query = Query::of(&parts);
    let scopes: Vec<&str> = query.all("scope").collect();
    let origin = origin_of(&app, &parts);
    match app
        .settings
        .auth
        .token_endpoint(
            &parts.headers,
            query.get("service"),
            &scopes,
            origin,
            &app.metrics,
        )
        .await
    {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Admits a request needing `need` (credentials, client certificate, policy) and says who
/// made it.
pub(crate) async fn authorize(
    app: &App,
    parts: &Parts,
    need: &[crate::auth::Access],
) -> Result<crate::auth::Identity, ApiError> {
    app.settings
        .auth
        .check(
            &parts.headers,
            need,
            app.settings.host.as_deref(),
            origin_of(app, parts),
            parts
                .extensions
                .get::<crate::connections::tls::ClientCertificate>()
                .map(|c| c.0.as_str()),
            &app.metrics,
        )
        .await
        .map_err(ApiError::from)
}

async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let Some(route) = Route::parse(req.uri().path()) else {
        return ApiError::no_route().into_response();
    };
    let (parts, body) = req.into_parts();
    let query = Query::of(&parts);
    let mount_from = query.get("mount").and(query.get("from"));
    let need = route.required_access(&parts.method, mount_from);
    let origin = origin_of(&app, &parts);
    let identity = match authorize(&app, &parts, &need).await {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let writes = matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if app.settings.read_only && writes {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the registry is in read-only mode",
        )
        .into_response();
    }
    if writes
        && let Some(name) = route.repository()
        && let Err(e) = app.content.check_writable(name)
    {
        return ApiError::from(e).into_response();
    }
    let ctx = Ctx {
        app,
        method: parts.method.clone(),
        query,
        headers: parts.headers,
        identity,
        origin,
    };
    let m = &ctx.method;
    let result: ApiResult = match route {
        Route::Base if m == Method::GET || m == Method::HEAD => {
            Ok(([("content-type", "application/json")], "{}").into_response())
        }
        Route::Catalog if m == Method::GET => listing::catalog(&ctx).await,
        Route::Tags { name } if m == Method::GET => listing::tags(&ctx, &name).await,
        Route::Manifest { name, reference } => match *m {
            Method::GET | Method::HEAD => manifests::get(&ctx, &name, &reference).await,
            Method::PUT => manifests::put(&ctx, &name, &reference, body).await,
            Method::DELETE => manifests::delete(&ctx, &name, &reference).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::Blob { name, digest } => match *m {
            Method::GET | Method::HEAD => blobs::get(&ctx, &name, &digest).await,
            Method::DELETE => blobs::delete(&ctx, &name, &digest).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::UploadStart { name } if m == Method::POST => uploads::start(&ctx, &name, body).await,
        Route::Upload { name, id } => match *m {
            Method::GET => uploads::status(&ctx, &name, &id).await,
            Method::PATCH => uploads::patch(&ctx, &name, &id, body).await,
            Method::PUT => uploads::finish(&ctx, &name, &id, body).await,
            Method::DELETE => uploads::cancel(&ctx, &name, &id).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::Referrers { name, digest } if m == Method::GET => {
            referrers::list(&ctx, &name, &digest).await
        }
        _ => Err(ApiError::method_not_allowed()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
