//! Digest parsing never panics, and what it accepts prints back to the same string.
#![no_main]
use libfuzzer_sys::fuzz_target;
use registry_core::Digest;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = s.parse::<Digest>()
    {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
    }
});
