//! Parsers for command-line values: environment entries, env files, memory sizes and published
//! ports. Each error quotes the input and says what a valid value looks like.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use spore_api::v1;

/// Largest env file read, bytes: an env file is a handful of lines, not data.
const MAX_ENV_FILE_BYTES: u64 = 1024 * 1024;

/// One `-e` value: `KEY=VALUE`, or `KEY` alone to pass the variable from this environment.
pub fn env_entry(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let (key, value) = match raw.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (raw, None),
    };
    check_env_key(raw, key)?;
    if raw.contains('\0') {
        bail!("invalid environment entry {raw:?}: it contains a NUL byte");
    }
    match value {
        Some(value) => Ok(format!("{key}={value}")),
        None => match lookup(key) {
            Some(value) => Ok(format!("{key}={value}")),
            None => bail!(
                "environment variable {key:?} is not set here (write {key}=VALUE to give it a value)"
            ),
        },
    }
}

fn check_env_key(raw: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        bail!("invalid environment entry {raw:?}: expected KEY=VALUE with a non-empty KEY");
    }
    if key.chars().any(char::is_whitespace) {
        bail!("invalid environment entry {raw:?}: the name {key:?} contains whitespace");
    }
    Ok(())
}

/// The entries of an env file: `KEY=VALUE` or `KEY` lines; blank lines and `#` comments skipped.
pub fn env_file(path: &Path, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open env file {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_ENV_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read env file {} as UTF-8 text", path.display()))?;
    if text.len() as u64 > MAX_ENV_FILE_BYTES {
        bail!(
            "env file {} is larger than {} MiB; is it the right file?",
            path.display(),
            MAX_ENV_FILE_BYTES / (1024 * 1024)
        );
    }
    env_file_text(&text, lookup).with_context(|| format!("in env file {}", path.display()))
}

fn env_file_text(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = env_entry(line, &lookup).with_context(|| format!("line {}", index + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Merges environment entries: a later entry replaces an earlier one with the same key, in
/// the earlier one's position.
pub fn merge_env(entries: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut merged: Vec<String> = Vec::new();
    for entry in entries {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        match merged
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
        {
            Some(slot) => *slot = entry,
            None => merged.push(entry),
        }
    }
    merged
}

/// A memory size in MiB: a plain number of MiB, or a number with suffix M/MB/MiB or G/GB/GiB
/// (case-insensitive; all binary units).
pub fn memory_mib(raw: &str) -> Result<u64> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let hint = "expected a whole number of MiB, optionally with suffix M or G (e.g. 512, 512M, 2G)";
    if digits.is_empty() {
        bail!("invalid memory size {raw:?}: {hint}");
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid memory size {raw:?}: the number is too large"))?;
    let factor = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        other => bail!("invalid memory size {raw:?}: unknown unit {other:?}; {hint}"),
    };
    let mib = number
        .checked_mul(factor)
        .ok_or_else(|| anyhow::anyhow!("invalid memory size {raw:?}: the number is too large"))?;
    if mib == 0 {
        bail!("invalid memory size {raw:?}: a zone needs more than 0 MiB");
    }
    Ok(mib)
}

/// A published port: `[ADDR:]HOST:ZONE[/tcp|udp]`, with an IPv6 ADDR in brackets
/// (`[::1]:8080:80`).
pub fn publish(raw: &str) -> Result<v1::PortMapping> {
    let hint =
        "expected [ADDR:]HOST_PORT:ZONE_PORT[/tcp|udp], e.g. 8080:80 or 127.0.0.1:5353:53/udp";
    let (ports, protocol) = match raw.rsplit_once('/') {
        Some((ports, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => v1::Protocol::Tcp,
                "udp" => v1::Protocol::Udp,
                _ => bail!("invalid port mapping {raw:?}: unknown protocol {proto:?} (tcp or udp)"),
            };
            (ports, protocol)
        }
        None => (raw, v1::Protocol::Tcp),
    };
    let (address, rest) = if let Some(stripped) = ports.strip_prefix('[') {
        let Some((addr, rest)) = stripped.split_once("]:") else {
            bail!("invalid port mapping {raw:?}: an IPv6 address needs [ADDR]:HOST:ZONE; {hint}");
        };
        (Some(addr), rest)
    } else {
        match ports.matches(':').count() {
            1 => (None, ports),
            2 => {
                let (addr, rest) = ports.split_once(':').unwrap_or_default();
                (Some(addr), rest)
            }
            _ => bail!("invalid port mapping {raw:?}: {hint}"),
        }
    };
    let Some((host, zone)) = rest.split_once(':') else {
        bail!("invalid port mapping {raw:?}: {hint}");
    };
    let host_address = match address {
        Some(addr) => addr
            .parse::<IpAddr>()
            .map_err(|_| {
                anyhow::anyhow!("invalid port mapping {raw:?}: {addr:?} is not an IP address")
            })?
            .to_string(),
        None => String::new(),
    };
    Ok(v1::PortMapping {
        host_port: port(raw, "host", host)?,
        zone_port: port(raw, "zone", zone)?,
        protocol: protocol as i32,
        host_address,
    })
}

fn port(raw: &str, which: &str, text: &str) -> Result<u32> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(u32::from(port)),
        _ => bail!("invalid port mapping {raw:?}: {which} port {text:?} is not in 1-65535"),
    }
}

/// A path the daemon will open, made absolute against this process's working directory.
pub fn absolute(path: &Path) -> Result<std::path::PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_entries() {
        assert_eq!(env_entry("A=1", no_env).unwrap(), "A=1");
        assert_eq!(env_entry("A=", no_env).unwrap(), "A=");
        assert_eq!(env_entry("A=b=c", no_env).unwrap(), "A=b=c");
        let from_here = |k: &str| (k == "HOME").then(|| "/root".to_string());
        assert_eq!(env_entry("HOME", from_here).unwrap(), "HOME=/root");
        let err = env_entry("NOPE", no_env).unwrap_err().to_string();
        assert_eq!(
            err,
            "environment variable \"NOPE\" is not set here (write NOPE=VALUE to give it a value)"
        );
        let err = env_entry("=x", no_env).unwrap_err().to_string();
        assert!(err.contains("non-empty KEY"), "{err}");
        let err = env_entry("A B=x", no_env).unwrap_err().to_string();
        assert!(err.contains("whitespace"), "{err}");
        assert!(env_entry("A=\0", no_env).is_err());
    }

    #[test]
    fn env_files() {
        let text = "# comment\n\nA=1\n  B=two words\nA=3\n";
        let entries = env_file_text(text, no_env).unwrap();
        assert_eq!(entries, ["A=1", "B=two words", "A=3"]);
        assert_eq!(merge_env(entries), ["A=3", "B=two words"]);
        let err = env_file_text("A=1\nMISSING\n", no_env).unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2: environment variable \"MISSING\""));
    }

    #[test]
    fn env_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "X=1\n").unwrap();
        assert_eq!(env_file(&path, no_env).unwrap(), ["X=1"]);
        let err = env_file(&dir.path().join("absent"), no_env).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot open env file"),
            "{err:#}"
        );
        std::fs::write(&path, vec![b'#'; MAX_ENV_FILE_BYTES as usize + 10]).unwrap();
        let err = env_file(&path, no_env).unwrap_err().to_string();
        assert!(err.contains("larger than 1 MiB"), "{err}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(env_file(&path, no_env).is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(memory_mib("512").unwrap(), 512);
        assert_eq!(memory_mib("512M").unwrap(), 512);
        assert_eq!(memory_mib("512mib").unwrap(), 512);
        assert_eq!(memory_mib("2G").unwrap(), 2048);
        assert_eq!(memory_mib("2 GiB").unwrap(), 2048);
        assert_eq!(memory_mib("1gb").unwrap(), 1024);
        for bad in ["", "M", "-1", "1.5G", "12T", "abc"] {
            let err = memory_mib(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid memory size {bad:?}")),
                "{err}"
            );
        }
        assert!(
            memory_mib("0")
                .unwrap_err()
                .to_string()
                .contains("more than 0")
        );
        let huge = memory_mib("99999999999999999999").unwrap_err().to_string();
        assert!(huge.contains("too large"), "{huge}");
        let overflow = memory_mib("18014398509481984G").unwrap_err().to_string();
        assert!(overflow.contains("too large"), "{overflow}");
    }

    #[test]
    fn publish_specs() {
        let p = publish("8080:80").unwrap();
        assert_eq!((p.host_port, p.zone_port), (8080, 80));
        assert_eq!(p.protocol, v1::Protocol::Tcp as i32);
        assert_eq!(p.host_address, "");

        let p = publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (p.host_address.as_str(), p.host_port, p.zone_port),
            ("127.0.0.1", 5353, 53)
        );
        assert_eq!(p.protocol, v1::Protocol::Udp as i32);

        let p = publish("[::1]:8443:443/TCP").unwrap();
        assert_eq!(
            (p.host_address.as_str(), p.host_port, p.zone_port),
            ("::1", 8443, 443)
        );

        for (bad, why) in [
            ("80", "expected [ADDR:]HOST_PORT"),
            ("1:2:3:4", "expected [ADDR:]HOST_PORT"),
            ("0:80", "host port \"0\" is not in 1-65535"),
            ("80:65536", "zone port \"65536\" is not in 1-65535"),
            ("80:x", "zone port \"x\""),
            ("80:80/sctp", "unknown protocol \"sctp\""),
            ("nothost:80:80", "\"nothost\" is not an IP address"),
            ("[::1:80:80", "an IPv6 address needs"),
            ("[zz]:80:80", "\"zz\" is not an IP address"),
        ] {
            let err = publish(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid port mapping {bad:?}")),
                "{err}"
            );
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn absolute_paths() {
        let abs = absolute(Path::new("some/file")).unwrap();
        assert!(abs.is_absolute());
        assert!(abs.ends_with("some/file"));
        assert_eq!(absolute(Path::new("/x")).unwrap(), Path::new("/x"));
    }
}
