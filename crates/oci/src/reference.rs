//! Docker-style image references and their normalisation.
//!
//! `alpine` means `docker.io/library/alpine:latest`; a first component containing `.` or `:`,
//! or `localhost`, is a registry host; a tag defaults to `latest` unless a digest is given. The
//! grammar follows the distribution project's reference rules (lowercase path components joined
//! by `.`, `_`, `__` or dashes; tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; names up to 255
//! characters), except that only sha256 and sha512 digests are accepted since those are the
//! ones the store verifies.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry that short names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_INPUT_LEN: usize = 4096;

/// A normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// A reference that does not parse; `Display` quotes the input and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {problem}")]
pub struct ReferenceError {
    pub input: String,
    pub problem: ReferenceProblem,
}

/// What is wrong with a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceProblem {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    #[error("the repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("repository names must be lowercase (try {0:?})")]
    Uppercase(String),
    #[error(
        "path component {0:?} is not valid: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    Component(String),
    #[error("registry host {0:?} is not valid: expected host[:port], e.g. 127.0.0.1:5000")]
    Host(String),
    #[error("tag {0:?} is not valid: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag(String),
    #[error("{0}")]
    Digest(String),
    #[error("an image id prefix needs at least {0} hex digits")]
    ShortId(usize),
}

impl Reference {
    /// Parses and normalises a docker-style reference.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        parse(input).map_err(|problem| ReferenceError {
            input: quote(input),
            problem,
        })
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(tag), Some(d)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                d.to_string(),
            ),
            (None, Some(d)) => {
                oci_client::Reference::with_digest(registry, repository, d.to_string())
            }
            (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag.clone()),
            (None, None) => oci_client::Reference::with_tag(registry, repository, "latest".into()),
        }
    }
}

fn quote(input: &str) -> String {
    match input.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &input[..i]),
        None => input.to_owned(),
    }
}

fn parse(input: &str) -> Result<Reference, ReferenceProblem> {
    if input.is_empty() {
        return Err(ReferenceProblem::Empty);
    }
    if input.len() > MAX_INPUT_LEN {
        return Err(ReferenceProblem::TooLong);
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, d)) => {
            let digest = Digest::parse(d).map_err(|e| {
                ReferenceProblem::Digest(format!("digest {:?}: {}", e.input, e.reason))
            })?;
            (rest, Some(digest))
        }
        None => (input, None),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to a host:port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    if name.is_empty() {
        return Err(ReferenceProblem::Empty);
    }

    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (first, rest.to_owned()),
        _ => (DEFAULT_REGISTRY, name.to_owned()),
    };
    let registry = if registry == LEGACY_DEFAULT_REGISTRY {
        DEFAULT_REGISTRY
    } else {
        registry
    };
    validate_host(registry)?;
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        let lower = match tag {
            Some(t) => format!("{}:{t}", name.to_ascii_lowercase()),
            None => name.to_ascii_lowercase(),
        };
        return Err(ReferenceProblem::Uppercase(lower));
    }
    for component in repository.split('/') {
        validate_component(component)?;
    }
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(ReferenceProblem::NameTooLong);
    }
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_owned()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_owned()),
    };
    Ok(Reference {
        registry: registry.to_owned(),
        repository,
        tag,
        digest,
    })
}

fn looks_like_host(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn validate_host(host: &str) -> Result<(), ReferenceProblem> {
    let bad = || ReferenceProblem::Host(host.to_owned());
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        // [IPv6]:port
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u32>().map_or(true, |p| p == 0 || p > 65535))
    {
        return Err(bad());
    }
    if let Some(name) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_component(c: &str) -> Result<(), ReferenceProblem> {
    // [a-z0-9]+ ( ( '.' | '_' | '__' | '-'+ ) [a-z0-9]+ )*
    let bad = || ReferenceProblem::Component(c.to_owned());
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceProblem> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceProblem::Tag(quote(tag)))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    fn problem(s: &str) -> ReferenceProblem {
        Reference::parse(s).unwrap_err().problem
    }

    #[test]
    fn normalises_docker_style_names() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            norm("index.docker.io/library/alpine:1"),
            "docker.io/library/alpine:1"
        );
        assert_eq!(
            norm("127.0.0.1:5000/test/app:1.0"),
            "127.0.0.1:5000/test/app:1.0"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            norm("ghcr.io/a/b/c-d__e.f:v1_2-3.4"),
            "ghcr.io/a/b/c-d__e.f:v1_2-3.4"
        );
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(norm("a---b"), "docker.io/library/a---b:latest");
    }

    #[test]
    fn digests_and_tags() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        let r = Reference::parse(&format!("127.0.0.1:5000/x:1@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x:1@{D}"));
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x");
        let o = r.to_oci();
        assert_eq!(o.digest(), Some(D));
        assert_eq!(o.tag(), Some("1"));
    }

    #[test]
    fn rejects_malformed_references() {
        assert_eq!(problem(""), ReferenceProblem::Empty);
        assert_eq!(problem(":tag"), ReferenceProblem::Empty);
        assert_eq!(
            problem("Alpine"),
            ReferenceProblem::Uppercase("alpine".into())
        );
        assert_eq!(
            problem("docker.io/Library/alpine:1"),
            ReferenceProblem::Uppercase("docker.io/library/alpine:1".into())
        );
        assert_eq!(
            problem("alp ine"),
            ReferenceProblem::Component("alp ine".into())
        );
        assert_eq!(problem("a//b"), ReferenceProblem::Component("".into()));
        assert_eq!(problem("-a"), ReferenceProblem::Component("-a".into()));
        assert_eq!(problem("a..b"), ReferenceProblem::Component("a..b".into()));
        assert_eq!(
            problem("a___b"),
            ReferenceProblem::Component("a___b".into())
        );
        assert_eq!(problem("repo/"), ReferenceProblem::Component("".into()));
        assert_eq!(problem("alpine:"), ReferenceProblem::Tag("".into()));
        assert_eq!(problem("alpine:-x"), ReferenceProblem::Tag("-x".into()));
        assert_eq!(
            problem(&format!("alpine:{}", "a".repeat(129))),
            ReferenceProblem::Tag("a".repeat(129))
        );
        assert_eq!(
            problem("host:0/app"),
            ReferenceProblem::Host("host:0".into())
        );
        assert_eq!(
            problem("host:99999/app"),
            ReferenceProblem::Host("host:99999".into())
        );
        assert_eq!(
            problem("ho_st.io/app"),
            ReferenceProblem::Host("ho_st.io".into())
        );
        assert_eq!(
            problem("[zz]:5000/app"),
            ReferenceProblem::Host("[zz]:5000".into())
        );
        assert_eq!(
            problem("alpine@sha256:abc"),
            ReferenceProblem::Digest(
                "digest \"sha256:abc\": a sha256 digest has exactly 64 hex digits".into()
            )
        );
        assert_eq!(problem(&"a".repeat(5000)), ReferenceProblem::TooLong);
        assert_eq!(
            problem(&format!("x.io/{}", "a".repeat(300))),
            ReferenceProblem::NameTooLong
        );
    }

    #[test]
    fn error_message_quotes_input_and_says_what_is_wrong() {
        let e = Reference::parse("Alpine:3").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid image reference "Alpine:3": repository names must be lowercase (try "alpine:3")"#
        );
    }

    #[test]
    fn serde_round_trip() {
        let r = Reference::parse("alpine").unwrap();
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, "\"docker.io/library/alpine:latest\"");
        assert_eq!(serde_json::from_str::<Reference>(&s).unwrap(), r);
    }
}
