//! Binds the listener and serves until SIGTERM or Ctrl-C, letting in-flight requests finish.

use std::sync::Arc;

use registry_core::{Registry, RegistrySettings};

use crate::api::{App, router};
use crate::config::{ConfigError, Settings};

/// Connections the debug address (metrics and probes) takes at once.
const DEBUG_CONNECTIONS: usize = 64;

/// Builds the application for `settings`, after probing what its store honours
/// (`store_mode`): a store that cannot arbitrate writers stops it here unless accepted.
pub async fn app(
    mut settings: Settings,
    role: crate::store_mode::Role,
) -> Result<Arc<App>, StartupError> {
    let (store, status) = crate::store_mode::open(&mut settings, role).await?;
    Ok(app_on(settings, store, status)?)
}

/// Builds the application for `settings` on a store already opened.
fn app_on(
    settings: Settings,
    store: Arc<dyn registry_core::StorageDriver>,
    status: Arc<crate::store_mode::StoreStatus>,
) -> Result<Arc<App>, ConfigError> {
    let metrics = Arc::new(crate::observe::Metrics::default());
    let store: Arc<dyn registry_core::StorageDriver> = Arc::new(
        crate::observe::instrumented_driver::InstrumentedDriver::new(store, metrics.clone()),
    );
    // Robot tokens are kept in the store; the authorizer learns of it here.
    let _ = settings
        .auth
        .robots
        .set(Arc::new(crate::auth::robots::RobotTokens::new(
            store.clone(),
        )));
    let registry = Arc::new(Registry::new(
        store,
        RegistrySettings {
            delete_enabled: settings.delete_enabled,
            max_manifest_bytes: settings.max_manifest_bytes,
            tag_cache_ttl: settings.tag_cache_ttl,
        },
    ));
    if let Some(policy) = settings.policy.clone() {
        registry.set_rules(policy);
    }
    // Delivery tasks start here: call inside the runtime.
    let notifier = crate::notify::Notifier::start(settings.notifications.clone());
    let content = crate::content::Content::new(registry.clone(), &settings.proxies)
        .map_err(|e| crate::config::key_err("proxy", e.to_string()))?;
    let replication = match &settings.replication {
        None => None,
        Some(r) => Some(Arc::new(crate::replication::Replication::new(r).map_err(
            |e| crate::config::key_err("berth.replication", e.to_string()),
        )?)),
    };
    Ok(Arc::new(App {
        registry,
        content,
        settings,
        metrics,
        notifier,
        replication,
        store: status,
    }))
}

/// Serves on the configured address. Prints `listening on http(s)://ADDR` once bound.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let addr = settings.addr;
    let tls = match settings.tls.clone() {
        None => None,
        Some(files) => Some(
            crate::connections::tls::ReloadingCertificate::load(files).map_err(|e| {
                StartupError::Io(format!("http.tls: cannot load certificate and key: {e}"))
            })?,
        ),
    };
    let connections = settings.connections.clone();
    let app = app(settings, crate::store_mode::Role::Server).await?;
    if app.store.mode == crate::store_mode::StoreMode::SingleWriter {
        tokio::spawn(crate::store_mode::keep_beating(
            app.registry.store().clone(),
            app.store.clone(),
        ));
    }
    if let Some(g) = app.settings.gc.clone() {
        tokio::spawn(crate::gc::schedule(app.clone(), g));
    }
    if let Some(p) = app.settings.purge.clone() {
        tokio::spawn(purge_uploads(app.clone(), p));
    }
    tokio::spawn(crate::malloc_settings::release_when_idle(
        app.metrics.clone(),
    ));
    if let Some(cert) = &tls {
        tokio::spawn(reload_on_change(cert.clone()));
    }
    tokio::spawn(flush_pull_times(app.clone()));
    if let Some(r) = &app.replication {
        r.start(app.registry.clone());
    }
    if let Some(policy) = &app.settings.policy {
        tokio::spawn(policy.clone().watch());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError::Io(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartupError::Io(e.to_string()))?;
    if let Some(settings) = app.settings.debug.clone() {
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .map_err(|e| StartupError::Io(format!("cannot listen on {}: {e}", settings.addr)))?;
        let router = crate::api::debug_router(app.clone());
        tracing::info!(addr = %settings.addr, "debug endpoints (metrics, probes) serving");
        // The same deadlines and per-client cap as the API's (a scraper needs no more), so a
        // client that opens sockets and sends nothing there holds nothing for long.
        let limits = crate::connections::ConnectionSettings {
            max: Some(DEBUG_CONNECTIONS),
            ..connections.clone()
        };
        let metrics = app.metrics.clone();
        tokio::spawn(async move {
            crate::connections::serve(
                listener,
                None,
                router,
                &limits,
                metrics,
                std::future::pending(),
            )
            .await
        });
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%bound, backend = app.registry.store().name(), scheme, "berth serving");
    println!("listening on {scheme}://{bound}");
    let metrics = app.metrics.clone();
    let pages = if app.settings.ui {
        crate::ui::routes(app.clone())
    } else {
        axum::Router::new()
    };
    let (store, status) = (app.registry.store().clone(), app.store.clone());
    crate::connections::serve(
        listener,
        tls,
        router(app, pages),
        &connections,
        metrics,
        shutdown_signal(),
    )
    .await;
    crate::store_mode::release(store.as_ref(), &status).await;
    Ok(())
}

/// Looks at the certificate and key files every few seconds and swaps in a changed pair.
async fn reload_on_change(cert: Arc<crate::connections::tls::ReloadingCertificate>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        cert.reload_if_changed();
    }
}

/// Removes abandoned uploads on a schedule. Running on several replicas at once is harmless:
/// removing a removed session is a no-op.
async fn purge_uploads(app: Arc<App>, p: crate::config::PurgeSettings) {
    // Not all at start-up: replicas that start together spread out.
    let spread = p.interval.as_millis().clamp(1, 60_000) as u64;
    let jitter =
        std::time::Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_u128() as u32) % spread);
    tokio::time::sleep(jitter).await;
    loop {
        match app.registry.purge_uploads(p.age, p.dry_run).await {
            Ok(n) => {
                app.metrics.add_purged(if p.dry_run { 0 } else { n as u64 });
                tracing::info!(purged = n, dry_run = p.dry_run, "upload purge finished");
            }
            Err(e) => tracing::warn!(error = %e, "upload purge failed"),
        }
        tokio::time::sleep(p.interval).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Configuration was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound or the server failed.
    #[error("{0}")]
    Io(String),
}

/// Writes the pulls this replica saw to the store, every `berth.usage.pullflush`.
async fn flush_pull_times(app: Arc<App>) {
    loop {
        tokio::time::sleep(app.settings.pull_flush).await;
        if let Err(e) = app.registry.flush_pull_times().await {
            tracing::warn!(error = %e, "the pulls of the last minutes could not be written");
        }
    }
}
