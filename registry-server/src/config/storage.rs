//! Storage backend options from `storage.s3`, `storage.azure` and `storage.gcs`.

use storage_drivers::azure::AzureOptions;
use storage_drivers::gcs::GcsOptions;
use storage_drivers::s3::{COPY_OBJECT_LIMIT, S3Options};

use super::{
    AzureConfig, ConfigError, DEFAULT_PART_SIZE, GcsConfig, MIN_PART_SIZE, S3Config, key_err,
    required,
};

/// `rootdirectory` as a key prefix inside a bucket or container: no leading or trailing `/`.
fn root_prefix(v: &Option<String>) -> String {
    v.as_deref()
        .unwrap_or_default()
        .trim_matches('/')
        .to_owned()
}

pub(super) fn part_size(v: Option<u64>, key: &str) -> Result<u64, ConfigError> {
    let size = v.unwrap_or(DEFAULT_PART_SIZE);
    if size < MIN_PART_SIZE {
        return Err(key_err(
            key,
            format!("{size} is below the 5 MiB minimum part size of object stores"),
        ));
    }
    if size > 5 << 30 {
        return Err(key_err(
            key,
            "must be at most 5 GiB (the largest part object stores accept)",
        ));
    }
    Ok(size)
}

pub(super) fn s3_options(
    c: &S3Config,
    public: Option<&url::Url>,
) -> Result<S3Options, ConfigError> {
    let endpoint = match c.regionendpoint.as_deref().filter(|e| !e.is_empty()) {
        None => None,
        Some(e) if e.contains("://") => {
            url::Url::parse(e)
                .map_err(|err| key_err("storage.s3.regionendpoint", format!("{e:?}: {err}")))?;
            Some(e.trim_end_matches('/').to_owned())
        }
        Some(e) => Some(format!(
            "{}://{e}",
            if c.secure.unwrap_or(true) {
                "https"
            } else {
                "http"
            }
        )),
    };
    if c.accesskey.is_some() != c.secretkey.is_some() {
        return Err(key_err(
            "storage.s3.secretkey",
            "accesskey and secretkey go together",
        ));
    }
    if endpoint.is_none() && c.region.is_none() && std::env::var_os("AWS_REGION").is_none() {
        return Err(key_err(
            "storage.s3.region",
            "is required (or set AWS_REGION)",
        ));
    }
    let copy_threshold = c
        .multipartcopythresholdsize
        .unwrap_or(COPY_OBJECT_LIMIT)
        .min(COPY_OBJECT_LIMIT);
    Ok(S3Options {
        bucket: required(&c.bucket, "storage.s3.bucket")?,
        region: c.region.clone(),
        endpoint,
        access_key: c.accesskey.clone().filter(|k| !k.is_empty()),
        secret_key: c.secretkey.clone().filter(|k| !k.is_empty()),
        session_token: c.sessiontoken.clone().filter(|k| !k.is_empty()),
        force_path_style: c.forcepathstyle.unwrap_or(false),
        root: root_prefix(&c.rootdirectory),
        part_size: part_size(c.chunksize, "storage.s3.chunksize")?,
        copy_threshold,
        copy_part_size: part_size(
            Some(c.multipartcopychunksize.unwrap_or(1 << 30)),
            "storage.s3.multipartcopychunksize",
        )?,
        public_endpoint: public.map(|u| u.as_str().trim_end_matches('/').to_owned()),
        stall_timeout: None,
    })
}

pub(super) fn azure_options(c: &AzureConfig) -> Result<AzureOptions, ConfigError> {
    let account = required(&c.accountname, "storage.azure.accountname")?;
    let endpoint = match (&c.endpoint, &c.realm) {
        (Some(e), _) => {
            url::Url::parse(e)
                .map_err(|err| key_err("storage.azure.endpoint", format!("{e:?}: {err}")))?;
            Some(e.trim_end_matches('/').to_owned())
        }
        (None, Some(realm)) if realm != "core.windows.net" => {
            Some(AzureOptions::endpoint_for_realm(&account, realm))
        }
        (None, _) => None,
    };
    Ok(AzureOptions {
        account,
        account_key: c.accountkey.clone().filter(|k| !k.is_empty()),
        container: required(&c.container, "storage.azure.container")?,
        endpoint,
        root: root_prefix(&c.rootdirectory),
        part_size: part_size(c.chunksize, "storage.azure.chunksize")?,
        stall_timeout: None,
    })
}

pub(super) fn gcs_options(c: &GcsConfig) -> Result<GcsOptions, ConfigError> {
    let key = match (&c.keyfile, &c.credentials) {
        (Some(_), Some(_)) => {
            return Err(key_err(
                "storage.gcs.credentials",
                "give keyfile or credentials, not both",
            ));
        }
        (Some(path), None) => Some(std::fs::read_to_string(path).map_err(|e| {
            key_err(
                "storage.gcs.keyfile",
                format!("cannot read {}: {e}", path.display()),
            )
        })?),
        (None, Some(inline)) => Some(
            serde_json::to_string(inline)
                .map_err(|e| key_err("storage.gcs.credentials", e.to_string()))?,
        ),
        (None, None) => None,
    };
    if let Some(k) = &key {
        let v: serde_json::Value = serde_json::from_str(k).map_err(|e| {
            key_err(
                "storage.gcs.keyfile",
                format!("not a service-account key JSON: {e}"),
            )
        })?;
        if v.get("private_key").and_then(|p| p.as_str()).is_none()
            || v.get("client_email").is_none()
        {
            return Err(key_err(
                "storage.gcs.keyfile",
                "a service-account key needs private_key and client_email",
            ));
        }
    }
    if let Some(e) = &c.endpoint {
        url::Url::parse(e)
            .map_err(|err| key_err("storage.gcs.endpoint", format!("{e:?}: {err}")))?;
    }
    Ok(GcsOptions {
        bucket: required(&c.bucket, "storage.gcs.bucket")?,
        root: root_prefix(&c.rootdirectory),
        endpoint: c.endpoint.clone(),
        service_account_key: key,
        anonymous: c.anonymous.unwrap_or(false),
        part_size: part_size(c.chunksize, "storage.gcs.chunksize")?,
        stall_timeout: None,
    })
}
