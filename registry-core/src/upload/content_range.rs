//! Parsing the `Content-Range` of chunk uploads: `<start>-<end>`, inclusive.

/// An inclusive byte range as sent with a PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset (inclusive).
    pub end: u64,
}

impl ChunkRange {
    /// Parses `0-1023`; tolerates a `bytes ` or `bytes=` prefix that some clients send.
    pub fn parse(header: &str) -> Option<ChunkRange> {
        let s = header.trim();
        let s = s
            .strip_prefix("bytes=")
            .or_else(|| s.strip_prefix("bytes "))
            .unwrap_or(s);
        // Some clients append the total as `/*` or `/N`.
        let s = s.split('/').next()?;
        let (a, b) = s.split_once('-')?;
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        let (start, end) = (a.parse().ok()?, b.parse().ok()?);
        (start <= end).then_some(ChunkRange { start, end })
    }

    /// Number of bytes the range covers.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: an inclusive range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            ChunkRange::parse("0-99"),
            Some(ChunkRange { start: 0, end: 99 })
        );
        assert_eq!(ChunkRange::parse("bytes=5-5").map(|r| r.len()), Some(1));
        assert_eq!(
            ChunkRange::parse("bytes 10-19/*"),
            Some(ChunkRange { start: 10, end: 19 })
        );
    }

    #[test]
    fn rejects() {
        for h in [
            "",
            "-",
            "5-",
            "-5",
            "9-3",
            "a-b",
            "1-2-3",
            "+1-2",
            "99999999999999999999999-1",
        ] {
            assert_eq!(ChunkRange::parse(h), None, "{h}");
        }
    }
}
