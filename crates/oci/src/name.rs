//! How a user names an image: a reference, or its id, as docker accepts both wherever an image
//! is taken.
//!
//! spore's image id is the **manifest digest** (what `sporectl image list` shows and the store
//! is keyed by; docker's is the config digest). Accepted forms:
//!
//! | input | meaning |
//! |---|---|
//! | `sha256:<64 hex>`, `sha512:<128 hex>` | the id |
//! | `<64 hex>` | the sha256 id (as in docker, 64 hex digits are never a repository name) |
//! | `sha256:<hex>`, at least [`MIN_ID_PREFIX`] digits | an id prefix |
//! | `<hex>`, at least [`MIN_ID_PREFIX`] digits | an id prefix, or the repository of that name: the caller prefers an image recorded under the name, then a unique id match, then the reference (which a pull fetches) |
//! | anything else | a [`Reference`] |
//!
//! Matching the records is the caller's (the store keeps no index of references).

use std::fmt;

use crate::digest::{Algorithm, Digest};
use crate::reference::{Reference, ReferenceError, ReferenceProblem};

/// The fewest hex digits an id prefix may have (as for zone id prefixes; docker takes one).
pub const MIN_ID_PREFIX: usize = 4;

/// An image as a user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// A whole id (manifest digest).
    Id(Digest),
    /// The first hex digits of an id.
    IdPrefix {
        /// The algorithm, when the input named one (`sha256:3f9e`).
        algorithm: Option<Algorithm>,
        hex: String,
        /// The same input read as a reference (`cafe` is also `docker.io/library/cafe:latest`).
        reference: Option<Reference>,
    },
    Reference(Reference),
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ImageName {
    pub fn parse(input: &str) -> Result<ImageName, ReferenceError> {
        let error = |problem| ReferenceError {
            input: input.to_owned(),
            problem,
        };
        let id = |digest: &str| {
            Digest::parse(digest)
                .map(ImageName::Id)
                .map_err(|e| error(ReferenceProblem::Digest(e.reason.to_owned())))
        };
        let algorithm = match input.split_once(':') {
            Some(("sha256", hex)) if is_hex(hex) => Some((Algorithm::Sha256, hex)),
            Some(("sha512", hex)) if is_hex(hex) => Some((Algorithm::Sha512, hex)),
            _ => None,
        };
        if let Some((algorithm, hex)) = algorithm {
            if hex.len() >= algorithm.hex_len() {
                return id(input);
            }
            if hex.len() < MIN_ID_PREFIX {
                return Err(error(ReferenceProblem::ShortId(MIN_ID_PREFIX)));
            }
            return Ok(ImageName::IdPrefix {
                algorithm: Some(algorithm),
                hex: hex.to_owned(),
                reference: None,
            });
        }
        if is_hex(input) && input.len() == Algorithm::Sha256.hex_len() {
            return id(&format!("sha256:{input}"));
        }
        if is_hex(input) && input.len() >= MIN_ID_PREFIX {
            return Ok(ImageName::IdPrefix {
                algorithm: None,
                hex: input.to_owned(),
                reference: Reference::parse(input).ok(),
            });
        }
        Reference::parse(input).map(ImageName::Reference)
    }

    /// Whether the id `digest` is the one named (a whole id) or starts with the prefix.
    pub fn matches_id(&self, digest: &Digest) -> bool {
        match self {
            ImageName::Id(d) => d == digest,
            ImageName::IdPrefix { algorithm, hex, .. } => {
                algorithm.is_none_or(|a| a == digest.algorithm()) && digest.hex().starts_with(hex)
            }
            ImageName::Reference(_) => false,
        }
    }

    /// The reference this name is, or may be (a bare id prefix may also be a repository).
    pub fn reference(&self) -> Option<&Reference> {
        match self {
            ImageName::Reference(r) => Some(r),
            ImageName::IdPrefix { reference, .. } => reference.as_ref(),
            ImageName::Id(_) => None,
        }
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageName::Id(d) => write!(f, "{d}"),
            ImageName::IdPrefix {
                algorithm: Some(a),
                hex,
                ..
            } => write!(f, "{}:{hex}", a.name()),
            ImageName::IdPrefix { hex, .. } => f.write_str(hex),
            ImageName::Reference(r) => write!(f, "{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{HEX}")).unwrap()
    }

    #[test]
    fn whole_ids_with_or_without_the_algorithm() {
        assert_eq!(
            ImageName::parse(&format!("sha256:{HEX}")).unwrap(),
            ImageName::Id(digest())
        );
        assert_eq!(ImageName::parse(HEX).unwrap(), ImageName::Id(digest()));
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        assert!(matches!(
            ImageName::parse(&sha512).unwrap(),
            ImageName::Id(_)
        ));
    }

    #[test]
    fn prefixes_match_ids_and_bare_ones_may_be_names() {
        let name = ImageName::parse("sha256:e3b0c4").unwrap();
        assert!(name.matches_id(&digest()));
        assert_eq!(name.reference(), None);
        assert_eq!(name.to_string(), "sha256:e3b0c4");
        let bare = ImageName::parse("e3b0").unwrap();
        assert!(bare.matches_id(&digest()));
        assert_eq!(
            bare.reference().unwrap().to_string(),
            "docker.io/library/e3b0:latest"
        );
        assert!(!ImageName::parse("e3b1").unwrap().matches_id(&digest()));
        // sha512 prefixes never match sha256 ids.
        assert!(
            !ImageName::parse("sha512:e3b0")
                .unwrap()
                .matches_id(&digest())
        );
    }

    #[test]
    fn short_or_non_hex_inputs_are_references_or_refused() {
        let e = ImageName::parse("sha256:e3b").unwrap_err();
        assert_eq!(e.problem, ReferenceProblem::ShortId(MIN_ID_PREFIX));
        assert!(e.to_string().contains("at least 4 hex digits"), "{e}");
        // Three hex digits, upper case or other letters: a repository name, as in docker.
        for input in ["abc", "cafex", "busybox", "sha256:latest"] {
            assert!(
                matches!(ImageName::parse(input).unwrap(), ImageName::Reference(_)),
                "{input}"
            );
        }
        assert!(ImageName::parse("E3B0C442").is_err());
        assert_eq!(
            ImageName::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
    }
}
