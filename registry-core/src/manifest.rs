//! Manifest parsing and validation: OCI image manifest and index, Docker schema2 manifest and list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 image manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type Berth stores.
pub const SUPPORTED_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Every manifest kind Berth stores, as an Accept header asking another registry for them
/// in order of preference.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why a manifest body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or fields of the wrong type.
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    /// Valid JSON that breaks the manifest rules.
    #[error("{0}")]
    Invalid(String),
}

/// A content descriptor as it appears inside manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Where the content can also be fetched from (foreign layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Artifact type of the referenced manifest (referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform of an index entry; kept opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// A plain descriptor with only the required fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What kind of manifest a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema2): config plus layers.
    Image,
    /// An index (OCI index or Docker manifest list): a list of manifests.
    Index,
}

/// Something a manifest refers to that must already be in the repository.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// A blob (config or layer).
    Blob(Digest),
    /// A child manifest of an index.
    Manifest(Digest),
}

/// A parsed and validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The effective media type (body field, else the request's Content-Type, else inferred).
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// Explicit artifactType, if any.
    pub artifact_type: Option<String>,
    /// The config descriptor of an image manifest.
    pub config: Option<Descriptor>,
    /// Layers of an image manifest.
    pub layers: Vec<Descriptor>,
    /// Children of an index.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    pub subject: Option<Descriptor>,
    /// Manifest annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

fn base_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

impl Manifest {
    /// Parses `body`; `content_type` is the request's Content-Type, if any.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header_type = content_type
            .map(base_media_type)
            .filter(|t| SUPPORTED_MEDIA_TYPES.contains(t));
        match (&raw.media_type, header_type) {
            (Some(body_type), Some(header)) if body_type != header => {
                return Err(ManifestError::Invalid(format!(
                    "mediaType {body_type} does not match Content-Type {header}"
                )));
            }
            _ => {}
        }
        if raw.schema_version.as_ref().and_then(|v| v.as_i64()) != Some(2) {
            return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
        }
        let media_type = match (raw.media_type.clone(), header_type) {
            (Some(t), _) => t,
            (None, Some(h)) => h.to_owned(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
            OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
            other => {
                return Err(ManifestError::Invalid(format!(
                    "unsupported manifest media type {other:?}"
                )));
            }
        };
        match kind {
            ManifestKind::Image => {
                if raw.config.is_none() {
                    return Err(ManifestError::Invalid(
                        "image manifest has no config".into(),
                    ));
                }
                if raw.layers.is_none() {
                    return Err(ManifestError::Invalid(
                        "image manifest has no layers array".into(),
                    ));
                }
                if raw.manifests.is_some() {
                    return Err(ManifestError::Invalid(
                        "image manifest must not have manifests".into(),
                    ));
                }
            }
            ManifestKind::Index => {
                if raw.manifests.is_none() {
                    return Err(ManifestError::Invalid(
                        "index has no manifests array".into(),
                    ));
                }
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(ManifestError::Invalid(
                        "index must not have config or layers".into(),
                    ));
                }
            }
        }
        Ok(Manifest {
            media_type,
            kind,
            artifact_type: raw.artifact_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            annotations: raw.annotations,
        })
    }

    /// What must exist in the repository before this manifest is accepted.
    ///
    /// Layers with `urls` (foreign or non-distributable layers) are exempt, as in distribution.
    pub fn requirements(&self) -> Vec<Requirement> {
        let mut out = Vec::new();
        if let Some(c) = &self.config {
            out.push(Requirement::Blob(c.digest.clone()));
        }
        for l in &self.layers {
            if l.urls.as_ref().is_none_or(|u| u.is_empty()) {
                out.push(Requirement::Blob(l.digest.clone()));
            }
        }
        for m in &self.manifests {
            out.push(Requirement::Manifest(m.digest.clone()));
        }
        out
    }

    /// The artifact type the referrers API reports: artifactType, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }

    /// The descriptor of this manifest as listed by the referrers API.
    pub fn referrer_descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            artifact_type: self.effective_artifact_type(),
            annotations: self.annotations.clone(),
            ..Descriptor::new(self.media_type.clone(), digest, size)
        }
    }
}

/// The media type of stored manifest bytes, for the Content-Type of a GET.
pub fn sniff_media_type(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            media_type: Some(t),
            ..
        }) => t,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn d(s: &[u8]) -> String {
        Digest::of(Algorithm::Sha256, s).to_string()
    }

    fn image(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":1}},
                      {{"mediaType":"x","digest":"{}","size":1,"urls":["https://example.invalid/l"]}}]}}"#,
            d(b"{}"),
            d(b"a"),
            d(b"b")
        )
    }

    #[test]
    fn parses_image_and_lists_requirements() {
        let m = Manifest::parse(image(Some(OCI_MANIFEST)).as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.requirements().len(), 2, "foreign layer is exempt");
        assert_eq!(
            m.effective_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_from_header_when_body_lacks_it() {
        let m = Manifest::parse(image(None).as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn mismatched_header_is_invalid() {
        let e = Manifest::parse(image(Some(OCI_MANIFEST)).as_bytes(), Some(DOCKER_MANIFEST))
            .unwrap_err();
        assert!(matches!(e, ManifestError::Invalid(_)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Manifest::parse(b"not json", None),
            Err(ManifestError::Json(_))
        ));
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(Manifest::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None).is_err());
        let bad_digest = image(Some(OCI_MANIFEST)).replace("sha256:", "sha256:zz");
        assert!(Manifest::parse(bad_digest.as_bytes(), None).is_err());
        let idx_with_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"layers":[]}}"#
        );
        assert!(Manifest::parse(idx_with_layers.as_bytes(), None).is_err());
    }

    #[test]
    fn index_requires_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}]}}"#,
            d(b"m")
        );
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(
            m.requirements(),
            vec![Requirement::Manifest(d(b"m").parse().unwrap())]
        );
        assert_eq!(sniff_media_type(body.as_bytes()), OCI_INDEX);
    }
}
