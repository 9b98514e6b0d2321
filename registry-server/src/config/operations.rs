//! Operations settings: notifications, scheduled GC, upload purging.

use std::time::Duration;

use super::{
    ConfigError, GcConfig, GcSettings, NotificationsConfig, PurgeSettings, UploadPurgingConfig,
    key_err, parse_duration, required,
};

pub(super) fn endpoints(
    c: Option<&NotificationsConfig>,
) -> Result<Vec<crate::notify::EndpointSettings>, ConfigError> {
    let Some(c) = c else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, e) in c.endpoints.iter().enumerate().filter(|(_, e)| !e.disabled) {
        let key = |k: &str| format!("notifications.endpoints[{i}].{k}");
        let url = required(&e.url, &key("url"))?;
        url::Url::parse(&url).map_err(|err| key_err(&key("url"), format!("{url:?}: {err}")))?;
        let mut ignored_media_types = e.ignoredmediatypes.clone();
        let mut ignored_actions = Vec::new();
        if let Some(ig) = &e.ignore {
            ignored_media_types.extend(ig.mediatypes.iter().cloned());
            ignored_actions.extend(ig.actions.iter().cloned());
        }
        out.push(crate::notify::EndpointSettings {
            name: e.name.clone().unwrap_or_else(|| format!("endpoint{i}")),
            headers: e
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            timeout: duration_key(&e.timeout, "1s", &key("timeout"))?,
            threshold: e.threshold.unwrap_or(10).max(1),
            backoff: duration_key(&e.backoff, "1s", &key("backoff"))?,
            ignored_actions,
            ignored_media_types,
            url,
            signing_secret: e.signingsecret.clone().filter(|k| !k.is_empty()),
            format: match e.format.as_deref() {
                None | Some("distribution") => crate::notify::EventFormat::Distribution,
                Some("cloudevents") => crate::notify::EventFormat::CloudEvents,
                Some(other) => {
                    return Err(key_err(
                        &key("format"),
                        format!("{other:?} is not distribution or cloudevents"),
                    ));
                }
            },
        });
    }
    Ok(out)
}

/// A duration setting (`30m`, `24h`, `500ms`), its default when absent, an error naming the key.
pub(super) fn duration_key(
    v: &Option<String>,
    default: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    let text = v.as_deref().unwrap_or(default);
    parse_duration(text).ok_or_else(|| {
        key_err(
            key,
            format!("{text:?} is not a duration like 24h, 30m or 500ms"),
        )
    })
}

/// `berth.gc`; a cache whose content expires needs collections to expire it, so one with a TTL
/// turns the schedule on when the section is absent (an explicit `enabled: false` stays off).
pub(super) fn gc_settings(
    c: Option<&GcConfig>,
    caches_expire: bool,
) -> Result<Option<GcSettings>, ConfigError> {
    let implied = GcConfig {
        enabled: true,
        ..GcConfig::default()
    };
    let c = match c {
        None if caches_expire => &implied,
        None => return Ok(None),
        Some(c) => c,
    };
    if !c.enabled {
        return Ok(None);
    }
    Ok(Some(GcSettings {
        interval: duration_key(&c.interval, "24h", "berth.gc.interval")?,
        grace: duration_key(&c.grace, "2h", "berth.gc.grace")?,
        dry_run: c.dryrun,
        delete_untagged: c.deleteuntagged,
        lease_ttl: duration_key(&c.leasettl, "2m", "berth.gc.leasettl")?,
        full_interval: match &c.fullinterval {
            Some(_) => Some(duration_key(
                &c.fullinterval,
                "168h",
                "berth.gc.fullinterval",
            )?),
            None => None,
        },
    }))
}

pub(super) fn purge_settings(
    c: Option<&UploadPurgingConfig>,
) -> Result<Option<PurgeSettings>, ConfigError> {
    let default = UploadPurgingConfig::default();
    let c = c.unwrap_or(&default);
    if c.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(PurgeSettings {
        age: duration_key(&c.age, "168h", "storage.maintenance.uploadpurging.age")?,
        interval: duration_key(
            &c.interval,
            "24h",
            "storage.maintenance.uploadpurging.interval",
        )?,
        dry_run: c.dryrun.unwrap_or(false),
    }))
}
