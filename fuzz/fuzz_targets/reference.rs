//! Names, tags and references never panic; accepted names are safe as storage path segments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use registry_core::{Reference, RepositoryName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = s.parse::<RepositoryName>() {
        assert!(
            !n.as_str()
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        );
        assert!(n.as_str().len() <= 255);
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert!(!t.as_str().contains('/') && !t.as_str().starts_with('.'));
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
});
