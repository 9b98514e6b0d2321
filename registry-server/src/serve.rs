//! Binds the listener and serves until SIGTERM or Ctrl-C, letting in-flight requests finish.

use std::sync::Arc;

use registry_core::{Registry, RegistrySettings};

use crate::api::{App, router};
use crate::backend;
use crate::config::{ConfigError, Settings};

/// Builds the application for `settings`.
pub fn app(settings: Settings) -> Result<Arc<App>, ConfigError> {
    let store = backend::build(&settings.storage)?;
    let registry = Registry::new(
        store,
        RegistrySettings {
            delete_enabled: settings.delete_enabled,
            max_manifest_bytes: settings.max_manifest_bytes,
        },
    );
    Ok(Arc::new(App { registry, settings }))
}

/// Serves on the configured address. Prints `listening on http://ADDR` once bound.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let addr = settings.addr;
    let app = app(settings)?;
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
