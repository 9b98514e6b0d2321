//! Content-Range parsing never panics and only yields well-ordered ranges.
#![no_main]
use libfuzzer_sys::fuzz_target;
use registry_core::upload::ChunkRange;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(r) = ChunkRange::parse(s)
    {
        assert!(r.start <= r.end);
        assert!(r.len() >= 1);
    }
});
