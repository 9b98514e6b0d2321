//! Berth's HTTP server: configuration, the storage backend it selects, and the OCI API.

pub mod api;
pub mod auth;
pub mod backend;
pub mod civil_time;
pub mod config;
pub mod connections;
pub mod content;
pub mod gc;
pub mod malloc_settings;
pub mod notify;
pub mod observe;
pub mod replication;
pub mod serve;
pub mod store_mode;
pub mod ui;
pub mod upstream;
