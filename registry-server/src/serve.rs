//! Binds the listener and serves until SIGTERM or Ctrl-C, letting in-flight requests finish.

use std::sync::Arc;

use registry_core::{Registry, RegistrySettings};

use crate::api::{App, router};
use crate::backend;
use crate::config::{ConfigError, Settings, TlsFiles};

/// Builds the application for `settings`.
pub fn app(settings: Settings) -> Result<Arc<App>, ConfigError> {
    let metrics = Arc::new(crate::observe::Metrics::default());
    let store: Arc<dyn registry_core::StorageDriver> = Arc::new(
        crate::observe::instrumented_driver::InstrumentedDriver::new(
            backend::build(&settings.storage)?,
            metrics.clone(),
        ),
    );
    let registry = Arc::new(Registry::new(
        store,
        RegistrySettings {
            delete_enabled: settings.delete_enabled,
            max_manifest_bytes: settings.max_manifest_bytes,
        },
    ));
    // Delivery tasks start here: call inside the runtime.
    let notifier = crate::notify::Notifier::start(settings.notifications.clone());
    let content = crate::content::Content::new(registry.clone(), &settings.proxies)
        .map_err(|e| crate::config::key_err("proxy", e.to_string()))?;
    Ok(Arc::new(App {
        registry,
        content,
        settings,
        metrics,
        notifier,
    }))
}

/// Serves on the configured address. Prints `listening on http(s)://ADDR` once bound.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let addr = settings.addr;
    let tls = settings.tls.clone();
    let app = app(settings)?;
    if let Some(g) = app.settings.gc.clone() {
        tokio::spawn(crate::gc::schedule(app.clone(), g));
    }
    if let Some(p) = app.settings.purge.clone() {
        tokio::spawn(purge_uploads(app.clone(), p));
    }
    tokio::spawn(crate::malloc_settings::release_when_idle(
        app.metrics.clone(),
    ));
    if let Some(files) = tls {
        return run_tls(addr, files, app).await;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError::Io(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartupError::Io(e.to_string()))?;
    tracing::info!(%bound, backend = app.registry.store().name(), "berth serving");
    println!("listening on http://{bound}");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| StartupError::Io(e.to_string()))
}

/// HTTPS with rustls; the certificate and key are reloaded when their files change.
async fn run_tls(
    addr: std::net::SocketAddr,
    files: TlsFiles,
    app: Arc<App>,
) -> Result<(), StartupError> {
    use axum_server::tls_rustls::RustlsConfig;
    let config = RustlsConfig::from_pem_file(&files.certificate, &files.key)
        .await
        .map_err(|e| StartupError::Io(format!("http.tls: cannot load certificate and key: {e}")))?;
    let handle = axum_server::Handle::new();
    let backend = app.registry.store().name();
    let server = axum_server::bind_rustls(addr, config.clone())
        .handle(handle.clone())
        .serve(router(app).into_make_service());
    let server = tokio::spawn(server);
    let bound = handle
        .listening()
        .await
        .ok_or_else(|| StartupError::Io(format!("cannot listen on {addr}")))?;
    tracing::info!(%bound, backend, "berth serving TLS");
    println!("listening on https://{bound}");
    tokio::spawn(reload_on_change(config, files));
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
    });
    match server.await {
        Ok(r) => r.map_err(|e| StartupError::Io(e.to_string())),
        Err(e) => Err(StartupError::Io(e.to_string())),
    }
}

/// Polls the certificate and key files and swaps them in when either changes.
async fn reload_on_change(config: axum_server::tls_rustls::RustlsConfig, files: TlsFiles) {
    let stamp = |f: &TlsFiles| {
        let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (m(&f.certificate), m(&f.key))
    };
    let mut last = stamp(&files);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let now = stamp(&files);
        if now != last {
            match config
                .reload_from_pem_file(&files.certificate, &files.key)
                .await
            {
                Ok(()) => tracing::info!("reloaded TLS certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but could not be loaded; keeping the old one")
                }
            }
            last = now;
        }
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
    tracing::info!("shutting down: finishing in-flight requests");
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
