//! distribution's environment overrides: `REGISTRY_STORAGE_S3_BUCKET=b` sets `storage.s3.bucket`.

use serde_yaml_ng::{Mapping, Value};

use super::{ConfigError, key_err};

/// Applies every `REGISTRY_*` variable to the parsed YAML tree.
pub fn apply_overrides(
    root: &mut Value,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = environment
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGISTRY_") && k.len() > 9)
        .collect();
    // Shorter paths first, so REGISTRY_STORAGE=s3 is applied before REGISTRY_STORAGE_S3_BUCKET.
    vars.sort_by_key(|(k, _)| k.len());
    for (name, raw) in vars {
        let path: Vec<String> = name["REGISTRY_".len()..]
            .split('_')
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(key_err(&name, "malformed variable name"));
        }
        // A scalar YAML value: "true" is a bool, "5" a number, anything else a string.
        let value: Value = serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw.clone()));
        let value = if value.is_mapping() || value.is_sequence() || value.is_null() {
            Value::String(raw)
        } else {
            value
        };
        if path == ["storage"] {
            // distribution's REGISTRY_STORAGE=<driver> selects the backend, keeping the
            // behaviour sections (delete, redirect, maintenance, cache).
            let driver = value.as_str().unwrap_or_default().to_owned();
            select_driver(root, &driver, &name)?;
            continue;
        }
        set(root, &path, value, &name)?;
    }
    Ok(())
}

const DRIVERS: [&str; 5] = ["filesystem", "inmemory", "s3", "azure", "gcs"];

fn select_driver(root: &mut Value, driver: &str, var: &str) -> Result<(), ConfigError> {
    if !DRIVERS.contains(&driver) {
        return Err(key_err(
            "storage",
            format!("{var}={driver:?} is not one of {}", DRIVERS.join(", ")),
        ));
    }
    set(
        root,
        &["storage".into(), driver.into()],
        Value::Mapping(Mapping::new()),
        var,
    )?;
    if let Some(storage) = root.get_mut("storage").and_then(Value::as_mapping_mut) {
        storage.retain(|k, _| {
            k.as_str()
                .is_none_or(|k| k == driver || !DRIVERS.contains(&k))
        });
    }
    Ok(())
}

fn set(root: &mut Value, path: &[String], value: Value, var: &str) -> Result<(), ConfigError> {
    let mut node = root;
    for (i, seg) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Some(map) = node.as_mapping_mut() else {
            return Err(key_err(
                &path[..i].join("."),
                format!("{var} needs a mapping here"),
            ));
        };
        let key = Value::String(seg.clone());
        if i + 1 == path.len() {
            // Selecting a driver keeps its existing settings.
            if !(value.is_mapping() && map.get(&key).is_some_and(Value::is_mapping)) {
                map.insert(key, value);
            }
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_selects_driver() {
        let mut v: Value = serde_yaml_ng::from_str("storage: {filesystem: {}}").unwrap();
        apply_overrides(
            &mut v,
            vec![
                ("REGISTRY_STORAGE".into(), "inmemory".into()),
                ("REGISTRY_LOG_LEVEL".into(), "debug".into()),
            ],
        )
        .unwrap();
        assert!(v["storage"]["inmemory"].is_mapping());
        assert!(
            v["storage"].get("filesystem").is_none(),
            "REGISTRY_STORAGE replaces the backend"
        );
        assert_eq!(v["log"]["level"].as_str(), Some("debug"));
    }
}
