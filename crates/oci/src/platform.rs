//! Platforms (`os/arch[/variant]`) and the choice of one manifest from an image index.
//!
//! oci-client's stock resolvers ignore the variant; ours does not: `linux/arm/v7` never picks
//! a `linux/arm/v6` image. Architecture aliases (`x86_64`, `aarch64`) are normalised, and arm64
//! without a variant means `v8`, as in containerd.

use std::fmt;
use std::str::FromStr;

/// A target platform, e.g. `linux/amd64` or `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// A platform string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformError(pub String);

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError(s.chars().take(100).collect());
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(bad());
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }

    /// Builds a platform, normalising case and architecture aliases.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let architecture = match architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".to_owned(),
            "aarch64" => "arm64".to_owned(),
            "i386" | "i686" => "386".to_owned(),
            a => a.to_owned(),
        };
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(|v| v.to_ascii_lowercase());
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// The variant used for comparison: arm64 without a variant is v8.
    fn effective_variant(&self) -> Option<&str> {
        match (&self.variant, self.architecture.as_str()) {
            (Some(v), _) => Some(v),
            (None, "arm64") => Some("v8"),
            (None, _) => None,
        }
    }

    /// How well an index entry's platform fits this one: `None` if it does not, higher is better.
    pub(crate) fn score(&self, candidate: &Platform) -> Option<u8> {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return None;
        }
        match (self.effective_variant(), candidate.effective_variant()) {
            (Some(want), Some(have)) if want == have => Some(3),
            (Some(_), _) => None,
            // No variant asked for: prefer an entry without one, accept any.
            (None, None) => Some(2),
            (None, Some(_)) => Some(1),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Platform::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!(Platform::parse("linux/amd64").unwrap(), Platform::default());
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("Linux/ARM64/V8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert_eq!(
                Platform::parse(bad),
                Err(PlatformError(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn variant_aware_matching() {
        let p = |s| Platform::parse(s).unwrap();
        assert_eq!(p("linux/arm/v7").score(&p("linux/arm/v6")), None);
        assert_eq!(p("linux/arm/v7").score(&p("linux/arm/v7")), Some(3));
        assert_eq!(p("linux/arm64").score(&p("linux/arm64/v8")), Some(3));
        assert_eq!(p("linux/arm64/v8").score(&p("linux/arm64")), Some(3));
        assert_eq!(p("linux/amd64").score(&p("linux/amd64")), Some(2));
        assert_eq!(p("linux/amd64").score(&p("linux/amd64/v3")), Some(1));
        assert_eq!(p("linux/amd64/v3").score(&p("linux/amd64")), None);
        assert_eq!(p("linux/amd64").score(&p("windows/amd64")), None);
    }
}
