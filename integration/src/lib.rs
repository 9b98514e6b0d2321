//! Helpers for end-to-end tests: start the real `berth` binary and reference servers on loopback,
//! make OCI image layouts, and require the external clients the tests drive.

pub mod balancer;
pub mod certs;
pub mod credentials;
pub mod distribution;
pub mod docker;
pub mod emulators;
pub mod fault_proxy;
pub mod garage;
pub mod helm;
pub mod http;
pub mod image;
pub mod layout;
pub mod listener;
pub mod load;
pub mod oidc_issuer;
pub mod otlp_receiver;
pub mod ruled_registry;
pub mod scripted;
pub mod server;
pub mod soak;
pub mod store_cost;
pub mod store_generator;
pub mod tools;
pub mod webdriver;

pub use server::Berth;
