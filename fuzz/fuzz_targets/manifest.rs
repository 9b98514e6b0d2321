//! Manifest parsing never panics on any bytes or Content-Type; what it accepts is consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use registry_core::manifest::{Manifest, ManifestKind, sniff_media_type};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize % 4);
    let content_type = [
        "",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ][split];
    let body = data.get(1..).unwrap_or_default();
    let _ = sniff_media_type(body);
    if let Ok(m) = Manifest::parse(body, Some(content_type).filter(|c| !c.is_empty())) {
        match m.kind {
            ManifestKind::Image => assert!(m.config.is_some() && m.manifests.is_empty()),
            ManifestKind::Index => assert!(m.config.is_none() && m.layers.is_empty()),
        }
        let _ = m.requirements();
        let _ = m.effective_artifact_type();
    }
});
