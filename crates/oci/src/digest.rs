//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and a hasher that checks data against one.
//!
//! Every blob that enters the store goes through [`Verifier`]: the digest and the size of the
//! bytes actually received are compared with the descriptor, never with what a server says.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm the store can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    pub(crate) fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest: a known algorithm and lowercase hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a digest string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: {reason}")]
pub struct DigestError {
    pub input: String,
    pub reason: &'static str,
}

impl Digest {
    /// Parses `algorithm:hex`. Only sha256 and sha512 are accepted, with lowercase hex.
    pub fn parse(input: &str) -> Result<Digest, DigestError> {
        let err = |reason| DigestError {
            input: truncate(input),
            reason,
        };
        let (alg, hex) = input
            .split_once(':')
            .ok_or_else(|| err("expected algorithm:hex, e.g. sha256:<64 hex digits>"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(err(
                    "unsupported algorithm (only sha256 and sha512 are verified)",
                ));
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(err(match algorithm {
                Algorithm::Sha256 => "a sha256 digest has exactly 64 hex digits",
                Algorithm::Sha512 => "a sha512 digest has exactly 128 hex digits",
            }));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("the hex part must be lowercase hexadecimal"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The sha256 digest whose hash is `hash` (computed while streaming).
    pub(crate) fn sha256_from(hash: [u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(hash),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, used as the file name in the store.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A shortened form for messages: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        format!("{}:{}", self.algorithm.name(), &self.hex[..12])
    }
}

fn truncate(input: &str) -> String {
    // Hostile inputs can be long; an error message quotes at most 150 characters of them.
    match input.char_indices().nth(150) {
        Some((i, _)) => format!("{}...", &input[..i]),
        None => input.to_owned(),
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Hashes and counts bytes as they arrive, then says whether they match a descriptor.
pub struct Verifier {
    expected: Digest,
    expected_size: u64,
    hasher: Hasher,
    seen: u64,
}

/// What [`Verifier`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// More bytes arrived than the descriptor announced (checked on every chunk, so a hostile
    /// server cannot make us store more than the descriptor's size).
    TooLarge { expected: u64 },
    /// The stream ended with a different size or digest.
    Content {
        actual_size: u64,
        actual_digest: Digest,
    },
}

impl Verifier {
    pub fn new(expected: &Digest, expected_size: u64) -> Verifier {
        let hasher = match expected.algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        };
        Verifier {
            expected: expected.clone(),
            expected_size,
            hasher,
            seen: 0,
        }
    }

    /// Feeds one chunk; fails as soon as the total exceeds the expected size.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        if self.seen > self.expected_size {
            return Err(Mismatch::TooLarge {
                expected: self.expected_size,
            });
        }
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(chunk),
            Hasher::Sha512(h) => h.update(chunk),
        }
        Ok(())
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Checks the final size and digest.
    pub fn finish(self) -> Result<(), Mismatch> {
        let hex = match self.hasher {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        let actual_digest = Digest {
            algorithm: self.expected.algorithm,
            hex,
        };
        if self.seen != self.expected_size || actual_digest != self.expected {
            return Err(Mismatch::Content {
                actual_size: self.seen,
                actual_digest,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_digests() {
        let reason = |s: &str| Digest::parse(s).unwrap_err().reason;
        assert_eq!(
            reason("e3b0c4"),
            "expected algorithm:hex, e.g. sha256:<64 hex digits>"
        );
        assert_eq!(
            reason("md5:abcd"),
            "unsupported algorithm (only sha256 and sha512 are verified)"
        );
        assert_eq!(
            reason("sha256:abcd"),
            "a sha256 digest has exactly 64 hex digits"
        );
        assert_eq!(
            reason(&EMPTY.to_uppercase().replace("SHA", "sha")),
            "the hex part must be lowercase hexadecimal"
        );
        assert_eq!(
            reason(&format!("sha256:{}", "g".repeat(64))),
            "the hex part must be lowercase hexadecimal"
        );
        assert_eq!(
            reason("sha256:../../../../etc/passwd"),
            "a sha256 digest has exactly 64 hex digits"
        );
        let long = "x".repeat(10_000);
        assert!(Digest::parse(&long).unwrap_err().input.len() < 200);
    }

    #[test]
    fn verifier_accepts_and_rejects() {
        let d = Digest::sha256_of(b"hello world");
        let mut v = Verifier::new(&d, 11);
        v.update(b"hello ").unwrap();
        v.update(b"world").unwrap();
        v.finish().unwrap();

        let mut v = Verifier::new(&d, 11);
        v.update(b"hello worle").unwrap();
        assert!(matches!(
            v.finish(),
            Err(Mismatch::Content {
                actual_size: 11,
                ..
            })
        ));

        let mut v = Verifier::new(&d, 11);
        assert_eq!(
            v.update(b"hello world!"),
            Err(Mismatch::TooLarge { expected: 11 })
        );

        let mut v = Verifier::new(&d, 11);
        v.update(b"hello").unwrap();
        assert!(matches!(
            v.finish(),
            Err(Mismatch::Content { actual_size: 5, .. })
        ));
    }
}
