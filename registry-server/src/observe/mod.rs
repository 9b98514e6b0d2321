//! Observability: per-request access logs, Prometheus metrics and OTLP traces.

pub mod instrumented_driver;
pub mod log_format;
pub mod metrics;
pub mod trace_export;

pub use metrics::Metrics;
