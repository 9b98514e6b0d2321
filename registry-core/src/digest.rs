//! Content digests (`algorithm:hex`) and the streaming hasher that produces them.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string has no `algorithm:` prefix or an empty part.
    #[error("digest must have the form algorithm:encoded")]
    Malformed,
    /// The algorithm is well formed but not one Berth computes.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The encoded part has the wrong length or characters for its algorithm.
    #[error("digest {0:?} is not lowercase hex of the right length")]
    BadEncoding(String),
}

/// A hash algorithm registered by the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default everywhere.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings and storage paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name; distinguishes a malformed name from an unknown one.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ if is_algorithm_grammar(s) => Err(DigestError::UnsupportedAlgorithm(s.to_owned())),
            _ => Err(DigestError::Malformed),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The image spec's grammar: algorithm-component (separator algorithm-component)*,
// component [a-z0-9]+, separator [+._-].
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A validated digest of a supported algorithm, e.g. `sha256:e3b0c4...`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: Box<str>,
}

impl Digest {
    /// Builds a digest from an algorithm and its hex encoding, validating the encoding.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self, DigestError> {
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::BadEncoding(format!("{algorithm}:{hex}")));
        }
        Ok(Digest {
            algorithm,
            hex: hex.into(),
        })
    }

    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a complete in-memory byte string (manifests, small test data).
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = DigestHasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if encoded.is_empty() {
            return Err(DigestError::Malformed);
        }
        let algorithm = Algorithm::parse(algorithm)?;
        Digest::new(algorithm, encoded)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher whose state can be saved in the store and resumed by another process.
#[derive(Clone)]
pub enum DigestHasher {
    /// SHA-256 in progress.
    Sha256(Sha256),
    /// SHA-512 in progress.
    Sha512(Sha512),
}

/// A saved hasher state could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("saved hash state is corrupt")]
pub struct HashStateError;

impl DigestHasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
        }
    }

    /// The algorithm being computed.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha512(h) => h.update(data),
        }
    }

    /// Finishes and returns the digest.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            hex: hex.into(),
        }
    }

    /// The serialized internal state (not the digest): resumable by [`DigestHasher::restore`].
    pub fn save(&self) -> Vec<u8> {
        match self {
            DigestHasher::Sha256(h) => h.serialize().to_vec(),
            DigestHasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Restores a hasher saved with [`DigestHasher::save`].
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Result<Self, HashStateError> {
        Ok(match algorithm {
            Algorithm::Sha256 => {
                let arr = state.try_into().map_err(|_| HashStateError)?;
                DigestHasher::Sha256(Sha256::deserialize(arr).map_err(|_| HashStateError)?)
            }
            Algorithm::Sha512 => {
                let arr = state.try_into().map_err(|_| HashStateError)?;
                DigestHasher::Sha512(Sha512::deserialize(arr).map_err(|_| HashStateError)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays_sha256() {
        let d: Digest = EMPTY256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY256);
        assert_eq!(Digest::of(Algorithm::Sha256, b""), d);
    }

    #[test]
    fn sha512_of_empty() {
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.to_string().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        assert_eq!("sha256".parse::<Digest>(), Err(DigestError::Malformed));
        assert_eq!("sha256:".parse::<Digest>(), Err(DigestError::Malformed));
        assert!(matches!(
            "md5:abcd".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert_eq!("SHA256:ab".parse::<Digest>(), Err(DigestError::Malformed));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::BadEncoding(_))
        ));
        let upper = EMPTY256.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::BadEncoding(_))
        ));
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
    }

    #[test]
    fn saved_state_resumes_to_same_digest() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut a = DigestHasher::new(alg);
            a.update(b"hello ");
            let saved = a.save();
            let mut b = DigestHasher::restore(alg, &saved).unwrap();
            b.update(b"world");
            assert_eq!(b.finish(), Digest::of(alg, b"hello world"));
        }
        assert!(DigestHasher::restore(Algorithm::Sha256, b"short").is_err());
    }
}
