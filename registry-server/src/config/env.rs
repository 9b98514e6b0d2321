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
        if let [section] = path.as_slice()
            && let Some((_, choices)) = NAMED_SECTIONS.iter().find(|(s, _)| s == section)
        {
            // distribution's REGISTRY_STORAGE=s3 or REGISTRY_AUTH=htpasswd selects the named
            // kind, whose own variables (REGISTRY_AUTH_HTPASSWD_PATH) then fill it in; the
            // section's other keys (storage.delete, storage.redirect, ...) stay.
            let chosen = value.as_str().unwrap_or_default().to_owned();
            select(root, section, &chosen, choices, &name)?;
            continue;
        }
        set(root, &path, value, &name)?;
    }
    Ok(())
}

/// The sections distribution selects by name, with the names each may be given.
const NAMED_SECTIONS: [(&str, &[&str]); 2] = [
    ("storage", &["filesystem", "inmemory", "s3", "azure", "gcs"]),
    ("auth", &["htpasswd", "token", "silly"]),
];

fn select(
    root: &mut Value,
    section: &str,
    chosen: &str,
    choices: &[&str],
    var: &str,
) -> Result<(), ConfigError> {
    if !choices.contains(&chosen) {
        return Err(key_err(
            section,
            format!("{var}={chosen:?} is not one of {}", choices.join(", ")),
        ));
    }
    set(
        root,
        &[section.into(), chosen.into()],
        Value::Mapping(Mapping::new()),
        var,
    )?;
    if let Some(map) = root.get_mut(section).and_then(Value::as_mapping_mut) {
        map.retain(|k, _| {
            k.as_str()
                .is_none_or(|k| k == chosen || !choices.contains(&k))
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

    #[test]
    fn auth_is_selected_by_name_as_the_tutorials_write_it() {
        let mut v: Value = serde_yaml_ng::from_str("auth: {token: {realm: x}}").unwrap();
        apply_overrides(
            &mut v,
            vec![
                ("REGISTRY_AUTH".into(), "htpasswd".into()),
                (
                    "REGISTRY_AUTH_HTPASSWD_REALM".into(),
                    "Registry Realm".into(),
                ),
                (
                    "REGISTRY_AUTH_HTPASSWD_PATH".into(),
                    "/auth/htpasswd".into(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            v["auth"]["htpasswd"]["realm"].as_str(),
            Some("Registry Realm")
        );
        assert_eq!(
            v["auth"]["htpasswd"]["path"].as_str(),
            Some("/auth/htpasswd")
        );
        assert!(v["auth"].get("token").is_none());
        let mut v = Value::Null;
        let e = apply_overrides(&mut v, vec![("REGISTRY_AUTH".into(), "ldap".into())]).unwrap_err();
        assert!(e.to_string().contains("htpasswd, token, silly"), "{e}");
    }
}
