//! Observability: per-request access logs and Prometheus metrics.

pub mod instrumented_driver;
pub mod log_format;
pub mod metrics;

pub use metrics::Metrics;
