//! What a manifest and its image config say, in the terms the pages show: sizes, platforms,
//! created time, entrypoint and the rest. Configs are read once per replica and kept by
//! digest (their content cannot change).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::TryStreamExt;
use registry_core::manifest::{Descriptor, Manifest, ManifestKind};
use registry_core::registry::ManifestContent;
use registry_core::{Digest, Reference, RepositoryName};
use serde::Deserialize;

use crate::api::App;

/// Configs larger than this are not read (a real image config is a few KiB).
const MAX_CONFIG: u64 = 4 << 20;
/// How many configs a replica keeps.
const KEPT_CONFIGS: usize = 4096;
/// How many children of an index a tag row reads for its size and created time.
const MAX_CHILDREN_READ: usize = 16;

/// The media types of image configs.
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// One step of an image's history.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryStep {
    /// When.
    #[serde(default)]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Whether it made no layer.
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    history: Vec<HistoryStep>,
}

/// What an image config says.
#[derive(Debug, Clone, Default)]
pub struct ConfigFacts {
    /// When the image was built (RFC 3339, as the config has it).
    pub created: Option<String>,
    /// `os/arch[/variant]`.
    pub platform: Option<String>,
    /// Entrypoint, as a shell would show it.
    pub entrypoint: Option<String>,
    /// Cmd, likewise.
    pub cmd: Option<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Exposed ports.
    pub ports: Vec<String>,
    /// History, oldest first.
    pub history: Vec<HistoryStep>,
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `os/arch[/variant]` from those parts.
pub fn platform_text(
    os: Option<&str>,
    arch: Option<&str>,
    variant: Option<&str>,
) -> Option<String> {
    let (os, arch) = (os?, arch?);
    Some(match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

impl ConfigFacts {
    /// Reads a config's JSON; `None` when it is not one.
    pub fn parse(body: &[u8]) -> Option<ConfigFacts> {
        let raw: RawConfig = serde_json::from_slice(body).ok()?;
        let run = raw.config.unwrap_or_default();
        Some(ConfigFacts {
            created: raw.created,
            platform: platform_text(
                raw.os.as_deref(),
                raw.architecture.as_deref(),
                raw.variant.as_deref(),
            ),
            entrypoint: run.entrypoint.as_deref().map(shell_words),
            cmd: run.cmd.as_deref().map(shell_words),
            env: run.env.unwrap_or_default(),
            labels: run.labels.unwrap_or_default().into_iter().collect(),
            working_dir: run.working_dir.filter(|w| !w.is_empty()),
            user: run.user.filter(|u| !u.is_empty()),
            ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
            history: raw.history,
        })
    }
}

/// Configs by digest, for this replica.
#[derive(Default)]
pub struct ConfigCache {
    kept: Mutex<HashMap<Digest, std::sync::Arc<ConfigFacts>>>,
}

impl ConfigCache {
    fn get(&self, d: &Digest) -> Option<std::sync::Arc<ConfigFacts>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(d)
            .cloned()
    }

    fn put(&self, d: Digest, facts: std::sync::Arc<ConfigFacts>) {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= KEPT_CONFIGS {
            kept.clear();
        }
        kept.insert(d, facts);
    }
}

/// What a tag's row or an image's page shows of a manifest.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    /// Config and layers (an image), or the sum over the children read (an index).
    pub size: Option<u64>,
    /// The platforms: the config's, or each of the index's children.
    pub platforms: Vec<String>,
    /// When it was built (the config's; an index: its newest child's).
    pub created: Option<String>,
    /// The artifact type, for manifests that are not images.
    pub artifact_type: Option<String>,
}

/// The platform an index entry names.
pub fn descriptor_platform(d: &Descriptor) -> Option<String> {
    let p = d.platform.as_ref()?;
    let s = |k: &str| p.get(k).and_then(|v| v.as_str());
    platform_text(s("os"), s("architecture"), s("variant"))
}

/// Reads what pages need from manifests and configs of one repository.
pub struct FactReader<'a> {
    /// The application.
    pub app: &'a App,
    /// Configs already read.
    pub configs: &'a ConfigCache,
    /// The repository.
    pub name: &'a RepositoryName,
}

impl FactReader<'_> {
    /// A manifest the repository holds in the store. Never asked of an upstream: a page view
    /// of a cached repository shows what was fetched for it and costs the upstream nothing.
    pub async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<ManifestContent, registry_core::RegistryError> {
        self.app.registry.get_manifest(self.name, reference).await
    }

    /// The image config `d`, if the repository has it and it reads as one.
    pub async fn config(&self, d: &Descriptor) -> Option<std::sync::Arc<ConfigFacts>> {
        if !IMAGE_CONFIGS.contains(&d.media_type.as_str()) || d.size > MAX_CONFIG {
            return None;
        }
        if let Some(f) = self.configs.get(&d.digest) {
            return Some(f);
        }
        // Only a blob the repository links is read.
        let registry = &self.app.registry;
        registry.stat_blob(self.name, &d.digest).await.ok()?;
        let body = registry.read_blob(&d.digest, None).await.ok()?.body;
        let bytes = read_capped(body, MAX_CONFIG).await?;
        // Only what hashes to the digest is believed.
        if Digest::of(d.digest.algorithm(), &bytes) != d.digest {
            return None;
        }
        let facts = std::sync::Arc::new(ConfigFacts::parse(&bytes)?);
        self.configs.put(d.digest.clone(), facts.clone());
        Some(facts)
    }

    /// What a manifest says for a tag's row: for an index, its first children are read for
    /// their size and created time.
    pub async fn summary(&self, m: &ManifestContent) -> ImageFacts {
        let Ok(parsed) = Manifest::parse(&m.body, Some(&m.media_type)) else {
            return ImageFacts::default();
        };
        let mut facts = self.image_facts(&parsed).await;
        if parsed.kind == ManifestKind::Index {
            let mut total = 0u64;
            let mut complete = true;
            for (i, child) in parsed.manifests.iter().enumerate() {
                if i >= MAX_CHILDREN_READ {
                    complete = false;
                    break;
                }
                let Ok(c) = self
                    .manifest(&Reference::Digest(child.digest.clone()))
                    .await
                else {
                    complete = false;
                    continue;
                };
                let Ok(cp) = Manifest::parse(&c.body, Some(&c.media_type)) else {
                    continue;
                };
                if cp.kind == ManifestKind::Image {
                    let cf = self.image_facts(&cp).await;
                    total += cf.size.unwrap_or(0);
                    if cf.created > facts.created {
                        facts.created = cf.created;
                    }
                }
            }
            facts.size = complete.then_some(total);
        }
        facts
    }

    /// What a parsed manifest and (for an image) its config say, without reading children.
    pub async fn image_facts(&self, parsed: &Manifest) -> ImageFacts {
        // An image's config type is not an artifact type worth showing.
        let artifact_type = parsed
            .effective_artifact_type()
            .filter(|t| !IMAGE_CONFIGS.contains(&t.as_str()));
        let mut facts = ImageFacts {
            artifact_type,
            ..Default::default()
        };
        match parsed.kind {
            ManifestKind::Image => {
                let config_size = parsed.config.as_ref().map_or(0, |c| c.size);
                facts.size = Some(config_size + parsed.layers.iter().map(|l| l.size).sum::<u64>());
                if let Some(c) = &parsed.config
                    && let Some(cf) = self.config(c).await
                {
                    facts.created = cf.created.clone();
                    facts.platforms = cf.platform.clone().into_iter().collect();
                }
            }
            ManifestKind::Index => {
                facts.platforms = parsed
                    .manifests
                    .iter()
                    .filter_map(descriptor_platform)
                    .filter(|p| p != "unknown/unknown")
                    .collect();
            }
        }
        facts
    }
}

async fn read_capped(body: registry_core::storage::ByteStream, cap: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = body;
    while let Some(chunk) = body.try_next().await.ok()? {
        if (out.len() + chunk.len()) as u64 > cap {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

/// A size as people read it (binary units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_says_what_a_page_shows() {
        let body = br#"{"created":"2026-01-02T03:04:05Z","architecture":"arm64","os":"linux",
            "variant":"v8","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi there"],
            "Env":["PATH=/bin"],"Labels":{"b":"2","a":"1"},"ExposedPorts":{"80/tcp":{}}},
            "history":[{"created_by":"RUN x","empty_layer":true}]}"#;
        let f = ConfigFacts::parse(body).unwrap();
        assert_eq!(f.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(f.entrypoint.as_deref(), Some("/bin/sh -c"));
        assert_eq!(f.cmd.as_deref(), Some("'echo hi there'"));
        assert_eq!(f.labels[0], ("a".into(), "1".into()));
        assert_eq!(f.ports, vec!["80/tcp".to_string()]);
        assert!(f.history[0].empty_layer);
        assert!(ConfigFacts::parse(b"[1,2]").is_none());
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
