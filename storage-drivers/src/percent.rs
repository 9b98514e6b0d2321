//! Percent-encoding of object names and ids for URLs built by hand (S3 UploadPartCopy, GCS JSON).

/// Encodes every byte but RFC 3986's unreserved characters, `/` included.
pub fn encode_unreserved(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_all_but_unreserved() {
        assert_eq!(super::encode_unreserved("a b/c:d~e"), "a%20b%2Fc%3Ad~e");
    }
}
