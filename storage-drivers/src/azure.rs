//! Azure Blob Storage through object_store (also Azurite, the emulator).

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;
use registry_core::storage::{PartPolicy, StorageError};

use crate::object_store_driver::{ObjectStoreDriver, client_options, no_retries};

/// Settings of an Azure backend (distribution's `storage.azure` keys plus an endpoint).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureOptions {
    /// Storage account name.
    pub account: String,
    /// Shared key; workload identity / managed identity from the environment when absent.
    pub account_key: Option<String>,
    /// Container name.
    pub container: String,
    /// Blob endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1` for Azurite.
    pub endpoint: Option<String>,
    /// Key prefix inside the container.
    pub root: String,
    /// Block size for uploads.
    pub part_size: u64,
    /// How long an answer may stall before the request is cut and sent again (default 30 s).
    pub stall_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for AzureOptions {
    // Keys and secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureOptions")
            .field("account", &self.account)
            .field(
                "account_key",
                &self.account_key.as_ref().map(|_| "<redacted>"),
            )
            .field("container", &self.container)
            .field("endpoint", &self.endpoint)
            .field("stall_timeout", &self.stall_timeout)
            .field("root", &self.root)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl AzureOptions {
    /// The public blob endpoint of an account in a cloud (`realm`, e.g. `core.windows.net`).
    pub fn endpoint_for_realm(account: &str, realm: &str) -> String {
        format!("https://{account}.blob.{realm}")
    }
}

/// Builds the Azure driver.
pub fn azure_driver(o: &AzureOptions) -> Result<ObjectStoreDriver, StorageError> {
    // from_env gives AZURE_* variables: client secret, federated token (workload identity),
    // managed identity.
    // Client options first: with_client_options replaces the whole set, allow_http included.
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_client_options(client_options(o.stall_timeout))
        .with_retry(no_retries())
        .with_account(&o.account)
        .with_container_name(&o.container);
    if let Some(k) = &o.account_key {
        b = b.with_access_key(k);
    }
    if let Some(e) = &o.endpoint {
        b = b
            .with_endpoint(e.clone())
            .with_allow_http(e.starts_with("http://"));
    }
    let store = Arc::new(b.build().map_err(StorageError::backend)?);
    // Azure blocks need not be equal in size, but fixed parts keep memory per upload bounded and
    // behaviour identical across object stores.
    Ok(ObjectStoreDriver::new(
        "azure",
        store.clone(),
        store.clone(),
        Some(store),
        &o.root,
        PartPolicy {
            part_size: o.part_size,
            fixed_size: true,
        },
    ))
}
