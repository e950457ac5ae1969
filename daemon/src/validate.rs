//! Checks a CreateZone spec before anything is stored, naming the field at fault.

use std::path::Path;

use spore_api::v1;
use spore_oci::ImageName;

/// Bounds on request fields (they keep one zone's record and launch config small).
pub const MAX_ARGV_ENTRIES: usize = 1024;
pub const MAX_ARGV_BYTES: usize = 128 * 1024;
pub const MAX_ENV_ENTRIES: usize = 1024;
pub const MAX_ENV_BYTES: usize = 256 * 1024;
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_KERNEL_ARGS_BYTES: usize = 512;

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

pub(crate) fn bad(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        detail: detail.into(),
    }
}

/// What the host offers, for the resource checks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub host_cpus: u32,
    pub host_memory_mib: u64,
    /// The backend's minimum; 0 when no backend is usable (creation fails later anyway).
    pub min_memory_mib: u64,
    /// The backend's maximum; `u32::MAX` when no backend is usable.
    pub max_vcpus: u32,
    pub default_vcpus: u32,
    pub default_memory_mib: u64,
}

/// A spec that passed every check, with defaults resolved.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    /// A reference or an image id, resolved against the cache by the caller.
    pub image: ImageName,
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// The most bytes a zone name has.
pub const MAX_NAME_BYTES: usize = 63;

/// A zone's name is its guest's host name, so it follows the guest's host-name rule
/// ([`spore_idm::launch::is_host_name`]), in lower case: what CreateZone accepts the guest
/// accepts too.
pub fn check_name(name: &str) -> Result<(), String> {
    if !name.bytes().any(|b| b.is_ascii_uppercase())
        && spore_idm::launch::is_host_name(name, MAX_NAME_BYTES)
    {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid name: a zone's name is its host name, so use 1-{MAX_NAME_BYTES} characters [a-z0-9.-] in labels that start and end with a letter or digit (e.g. web-1)",
            truncate(name)
        ))
    }
}

pub fn validate(spec: &v1::ZoneSpec, limits: &Limits) -> Result<ValidSpec, FieldError> {
    if spec.image.is_empty() {
        return Err(bad("spec.image", "an image reference or id is required"));
    }
    if spec.image.len() > 1024 {
        return Err(bad("spec.image", "is longer than 1024 characters"));
    }
    let image = ImageName::parse(&spec.image).map_err(|e| bad("spec.image", e.to_string()))?;
    if !spec.name.is_empty() {
        check_name(&spec.name).map_err(|d| bad("spec.name", d))?;
    }
    if let Some(list) = &spec.entrypoint {
        check_argv("spec.entrypoint", &list.values)?;
    }
    if let Some(list) = &spec.cmd {
        check_argv("spec.cmd", &list.values)?;
    }
    check_env("spec.env", &spec.env)?;
    if !spec.working_dir.is_empty() {
        check_guest_path("spec.working_dir", &spec.working_dir)?;
    }
    check_user("spec.user", &spec.user)?;
    let (vcpus, memory_mib) = resources(spec, limits)?;
    for (field, path) in [
        ("spec.kernel_path", &spec.kernel_path),
        ("spec.initrd_path", &spec.initrd_path),
    ] {
        if !path.is_empty() {
            check_host_file(field, path)?;
        }
    }
    check_kernel_args(&spec.kernel_args)?;
    check_ports(&spec.ports)?;
    Ok(ValidSpec {
        image,
        vcpus,
        memory_mib,
    })
}

/// vCPUs and memory, defaulted, within the host's and the backend's limits.
fn resources(spec: &v1::ZoneSpec, limits: &Limits) -> Result<(u32, u64), FieldError> {
    let vcpus = match spec.vcpus {
        None => limits.default_vcpus.min(limits.host_cpus).max(1),
        Some(0) => return Err(bad("spec.vcpus", "must be at least 1")),
        Some(n) if n > limits.host_cpus => {
            return Err(bad(
                "spec.vcpus",
                format!("{n} is more than this host's {} CPUs", limits.host_cpus),
            ));
        }
        Some(n) if n > limits.max_vcpus => {
            return Err(bad(
                "spec.vcpus",
                format!(
                    "{n} is more than the {} a zone can have on this backend",
                    limits.max_vcpus
                ),
            ));
        }
        Some(n) => n,
    };
    let memory_mib = spec.memory_mib.unwrap_or(limits.default_memory_mib);
    if memory_mib > limits.host_memory_mib {
        return Err(bad(
            "spec.memory_mib",
            format!(
                "{memory_mib} MiB is more than this host's {} MiB of memory",
                limits.host_memory_mib
            ),
        ));
    }
    if memory_mib < limits.min_memory_mib || memory_mib == 0 {
        return Err(bad(
            "spec.memory_mib",
            format!(
                "{memory_mib} MiB is too little: zones need at least {} MiB on this backend",
                limits.min_memory_mib.max(1)
            ),
        ));
    }
    Ok((vcpus, memory_mib))
}

/// Extra kernel arguments: bounded, one argument each.
fn check_kernel_args(args: &[String]) -> Result<(), FieldError> {
    let args_len: usize = args.iter().map(|a| a.len() + 1).sum();
    if args_len > MAX_KERNEL_ARGS_BYTES {
        return Err(bad(
            "spec.kernel_args",
            format!("{args_len} bytes is over the {MAX_KERNEL_ARGS_BYTES}-byte limit"),
        ));
    }
    if let Some(arg) = args
        .iter()
        .find(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(bad(
            "spec.kernel_args",
            format!(
                "{:?} is not one argument (no spaces or control characters)",
                truncate(arg)
            ),
        ));
    }
    Ok(())
}

/// Published ports: valid numbers, addresses and protocols.
fn check_ports(ports: &[v1::PortMapping]) -> Result<(), FieldError> {
    for (i, port) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        for (what, p) in [("host_port", port.host_port), ("zone_port", port.zone_port)] {
            if !(1..=65535).contains(&p) {
                return Err(bad(&field, format!("{what} {p} is outside 1-65535")));
            }
        }
        if !port.host_address.is_empty() && port.host_address.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(
                &field,
                format!(
                    "host_address {:?} is not an IP address",
                    truncate(&port.host_address)
                ),
            ));
        }
        if v1::Protocol::try_from(port.protocol).is_err() {
            return Err(bad(
                &field,
                format!("protocol {} is unknown", port.protocol),
            ));
        }
    }
    Ok(())
}

/// Checks an ExecInZone start message (the guest resolves the user and the program).
pub fn validate_exec(start: &v1::ExecStart) -> Result<(), FieldError> {
    if start.command.first().is_none_or(|c| c.is_empty()) {
        return Err(bad("start.command", "a command to run is required"));
    }
    check_argv("start.command", &start.command)?;
    check_env("start.env", &start.env)?;
    if !start.working_dir.is_empty() {
        check_guest_path("start.working_dir", &start.working_dir)?;
    }
    check_user("start.user", &start.user)
}

fn check_argv(field: &str, argv: &[String]) -> Result<(), FieldError> {
    if argv.len() > MAX_ARGV_ENTRIES {
        return Err(bad(field, format!("more than {MAX_ARGV_ENTRIES} entries")));
    }
    let bytes: usize = argv.iter().map(|a| a.len()).sum();
    if bytes > MAX_ARGV_BYTES {
        return Err(bad(
            field,
            format!("{bytes} bytes is over the {MAX_ARGV_BYTES}-byte limit"),
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(bad(field, "an argument contains a NUL byte"));
    }
    Ok(())
}

fn check_env(field: &str, env: &[String]) -> Result<(), FieldError> {
    if env.len() > MAX_ENV_ENTRIES {
        return Err(bad(field, format!("more than {MAX_ENV_ENTRIES} entries")));
    }
    let bytes: usize = env.iter().map(|e| e.len()).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(bad(
            field,
            format!("{bytes} bytes is over the {MAX_ENV_BYTES}-byte limit"),
        ));
    }
    for entry in env {
        match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => {}
            _ => {
                return Err(bad(
                    field,
                    format!("{:?} is not KEY=VALUE", truncate(entry)),
                ));
            }
        }
    }
    Ok(())
}

fn check_guest_path(field: &str, path: &str) -> Result<(), FieldError> {
    if !path.starts_with('/') || path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(bad(
            field,
            format!("{:?} is not an absolute path", truncate(path)),
        ));
    }
    Ok(())
}

fn check_user(field: &str, user: &str) -> Result<(), FieldError> {
    if user.is_empty() {
        return Ok(());
    }
    let ok = user.len() <= 256
        && user.split(':').count() <= 2
        && user.split(':').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!(
                "{:?} is not USER, UID, USER:GROUP or UID:GID",
                truncate(user)
            ),
        ))
    }
}

fn check_host_file(field: &str, path: &str) -> Result<(), FieldError> {
    let p = Path::new(path);
    if !p.is_absolute() || path.len() > MAX_PATH_BYTES {
        return Err(bad(
            field,
            format!(
                "{:?} is not an absolute path on the daemon's host",
                truncate(path)
            ),
        ));
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(bad(field, format!("{path} is not a regular file"))),
        Err(e) => Err(bad(field, format!("{path}: {e}"))),
    }
}

/// At most 64 characters of user input in messages.
fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(64).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            host_cpus: 2,
            host_memory_mib: 4096,
            min_memory_mib: 96,
            max_vcpus: 64,
            default_vcpus: 1,
            default_memory_mib: 256,
        }
    }

    fn spec() -> v1::ZoneSpec {
        v1::ZoneSpec {
            image: "busybox".into(),
            ..Default::default()
        }
    }

    fn field_of(spec: v1::ZoneSpec) -> String {
        validate(&spec, &limits()).unwrap_err().field
    }

    #[test]
    fn defaults_are_resolved() {
        let v = validate(&spec(), &limits()).unwrap();
        assert_eq!(v.image.to_string(), "docker.io/library/busybox:latest");
        assert_eq!((v.vcpus, v.memory_mib), (1, 256));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(v1::ZoneSpec, &str)> = vec![
            (v1::ZoneSpec::default(), "spec.image"),
            (
                v1::ZoneSpec {
                    image: "UPPER/Case".into(),
                    ..spec()
                },
                "spec.image",
            ),
            (
                v1::ZoneSpec {
                    image: "sha256:abc".into(),
                    ..spec()
                },
                "spec.image",
            ),
            (
                v1::ZoneSpec {
                    image: "a::b".into(),
                    ..spec()
                },
                "spec.image",
            ),
            (
                v1::ZoneSpec {
                    name: "-bad".into(),
                    ..spec()
                },
                "spec.name",
            ),
            (
                v1::ZoneSpec {
                    name: "Bad".into(),
                    ..spec()
                },
                "spec.name",
            ),
            (
                v1::ZoneSpec {
                    name: "a".repeat(64),
                    ..spec()
                },
                "spec.name",
            ),
            (
                v1::ZoneSpec {
                    vcpus: Some(0),
                    ..spec()
                },
                "spec.vcpus",
            ),
            (
                v1::ZoneSpec {
                    vcpus: Some(3),
                    ..spec()
                },
                "spec.vcpus",
            ),
            (
                v1::ZoneSpec {
                    memory_mib: Some(1 << 40),
                    ..spec()
                },
                "spec.memory_mib",
            ),
            (
                v1::ZoneSpec {
                    memory_mib: Some(16),
                    ..spec()
                },
                "spec.memory_mib",
            ),
            (
                v1::ZoneSpec {
                    env: vec!["NOEQUALS".into()],
                    ..spec()
                },
                "spec.env",
            ),
            (
                v1::ZoneSpec {
                    env: vec!["=v".into()],
                    ..spec()
                },
                "spec.env",
            ),
            (
                v1::ZoneSpec {
                    env: vec!["K=".to_string() + &"v".repeat(MAX_ENV_BYTES)],
                    ..spec()
                },
                "spec.env",
            ),
            (
                v1::ZoneSpec {
                    working_dir: "relative".into(),
                    ..spec()
                },
                "spec.working_dir",
            ),
            (
                v1::ZoneSpec {
                    user: "a:b:c".into(),
                    ..spec()
                },
                "spec.user",
            ),
            (
                v1::ZoneSpec {
                    kernel_path: "/nonexistent/k".into(),
                    ..spec()
                },
                "spec.kernel_path",
            ),
            (
                v1::ZoneSpec {
                    initrd_path: "rel".into(),
                    ..spec()
                },
                "spec.initrd_path",
            ),
            (
                v1::ZoneSpec {
                    kernel_args: vec!["a b".into()],
                    ..spec()
                },
                "spec.kernel_args",
            ),
            (
                v1::ZoneSpec {
                    entrypoint: Some(v1::StringList {
                        values: vec!["x\0".into()],
                    }),
                    ..spec()
                },
                "spec.entrypoint",
            ),
            (
                v1::ZoneSpec {
                    ports: vec![v1::PortMapping {
                        host_port: 0,
                        zone_port: 80,
                        ..Default::default()
                    }],
                    ..spec()
                },
                "spec.ports[0]",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(spec.clone()), field, "{spec:?}");
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let err = validate(
            &v1::ZoneSpec {
                vcpus: Some(0),
                ..spec()
            },
            &limits(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "spec.vcpus: must be at least 1");
        let err = validate(
            &v1::ZoneSpec {
                memory_mib: Some(16),
                ..spec()
            },
            &limits(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 96 MiB"), "{err}");
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "0", "web-1", "a.b-c", "0x", "a-b.c1", &"x".repeat(63)] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            ".a",
            "A",
            "a b",
            "ä",
            "web_1",
            "db.",
            "a..b",
            "a-",
            "a.-b",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
