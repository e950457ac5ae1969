//! Registry credentials from a Docker config file (`~/.docker/config.json`, `auths` only).
//!
//! Credential helpers (`credsStore`, `credHelpers`) are not run; registries without an entry
//! are accessed anonymously (bearer-token challenges included).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

use crate::error::{OciError, Result};

const MAX_CONFIG: u64 = 1 << 20;

#[derive(serde::Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The default Docker config path: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_docker_config() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker/config.json")
}

/// `https://index.docker.io/v1/` and friends -> `docker.io`; `https://host:5000/v2/` -> `host:5000`.
fn normalise_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// Credentials for `registry` (as in a [`crate::Reference`]), or anonymous.
pub(crate) fn credentials(config_path: &Path, registry: &str) -> Result<RegistryAuth> {
    let bad = |reason: String| OciError::DockerConfig {
        path: config_path.to_owned(),
        reason,
    };
    let bytes = match std::fs::File::open(config_path) {
        Ok(f) => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_CONFIG + 1), &mut buf)
                .map_err(OciError::io("read docker config", config_path))?;
            if buf.len() as u64 > MAX_CONFIG {
                return Err(bad("larger than 1 MiB".into()));
            }
            buf
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(OciError::io("open docker config", config_path)(e)),
    };
    let config: DockerConfig =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let Some((_, entry)) = config
        .auths
        .iter()
        .find(|(k, _)| normalise_key(k) == registry)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(token) = entry.identity_token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(RegistryAuth::Bearer(token.to_owned()));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad(format!("auths.{registry}.auth is not base64")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| bad(format!("auths.{registry}.auth is not UTF-8")))?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| bad(format!("auths.{registry}.auth is not user:password")))?;
    Ok(RegistryAuth::Basic(u.to_owned(), p.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_auths_entries() {
        let (_d, p) = cfg(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "127.0.0.1:5000":{"username":"a","password":"b:c"},
                "https://ghcr.io":{"identitytoken":"tok"}},"credsStore":"desktop"}"#,
        );
        let basic = |u: &str, p: &str| RegistryAuth::Basic(u.into(), p.into());
        assert_eq!(credentials(&p, "docker.io").unwrap(), basic("user", "pass"));
        assert_eq!(
            credentials(&p, "127.0.0.1:5000").unwrap(),
            basic("a", "b:c")
        );
        assert_eq!(
            credentials(&p, "ghcr.io").unwrap(),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(credentials(&p, "quay.io").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(
            credentials(Path::new("/nonexistent/c.json"), "x").unwrap(),
            RegistryAuth::Anonymous
        );
    }

    #[test]
    fn bad_configs_are_named() {
        let (_d, p) = cfg("{");
        assert!(
            credentials(&p, "x")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        let (_d, p) = cfg(r#"{"auths":{"x.io":{"auth":"!!!"}}}"#);
        assert!(
            credentials(&p, "x.io")
                .unwrap_err()
                .to_string()
                .ends_with("auths.x.io.auth is not base64")
        );
        let (_d, p) = cfg(r#"{"auths":{"x.io":{"auth":"bm9jb2xvbg=="}}}"#);
        assert!(
            credentials(&p, "x.io")
                .unwrap_err()
                .to_string()
                .ends_with("is not user:password")
        );
    }
}
