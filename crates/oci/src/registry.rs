//! Talking to registries through oci-client: manifests by tag or digest, blobs streamed to disk
//! with our own digest and size check, retries with backoff on transient failures only.
//!
//! Plain HTTP is used only for registries listed as insecure (exact `host:port`). Blobs are
//! fetched by digest from the registry itself: descriptor `urls` (foreign layers) are never
//! followed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt;

use crate::digest::{Digest, Mismatch, Verifier};
use crate::error::{OciError, Result};
use crate::manifest::{Descriptor, MANIFEST_TYPES, MAX_MANIFEST_BYTES};
use crate::reference::Reference;

/// Connection settings shared by every pull.
pub(crate) struct Registries {
    insecure: Vec<String>,
    docker_config: PathBuf,
    attempts: u32,
    clients: Mutex<HashMap<Option<String>, Arc<Client>>>,
}

/// One registry and repository, with credentials, ready to fetch from.
#[derive(Clone)]
pub(crate) struct Session {
    registries: Arc<Registries>,
    /// The reference's registry when this pull may use plain HTTP to it.
    extra_insecure: Option<String>,
    auth: RegistryAuth,
    reference: Reference,
    docker_config: PathBuf,
    attempts: u32,
}

fn first_backoff() -> Duration {
    Duration::from_millis(200)
}

impl Registries {
    /// Also starts building the usual HTTP client on a thread: creating one (TLS setup) costs
    /// a few hundred milliseconds, which the first pull then does not wait for.
    pub fn new(insecure: Vec<String>, docker_config: PathBuf, attempts: u32) -> Arc<Registries> {
        let registries = Arc::new(Registries {
            insecure,
            docker_config,
            attempts: attempts.max(1),
            clients: Mutex::new(HashMap::new()),
        });
        let warm = registries.clone();
        let _ = std::thread::Builder::new()
            .name("oci-client-init".into())
            .spawn(move || {
                warm.client(None);
            });
        registries
    }

    fn client(&self, extra_insecure: Option<String>) -> Arc<Client> {
        let extra_insecure = extra_insecure.filter(|r| !self.insecure.contains(r));
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(extra_insecure.clone())
            .or_insert_with(|| {
                let mut insecure = self.insecure.clone();
                insecure.extend(extra_insecure);
                let config = ClientConfig {
                    protocol: ClientProtocol::HttpsExcept(insecure),
                    // We resolve indexes ourselves (variant-aware).
                    platform_resolver: None,
                    connect_timeout: Some(Duration::from_secs(15)),
                    // Between bytes of a response, not for the whole transfer.
                    read_timeout: Some(Duration::from_secs(60)),
                    user_agent: concat!("spore/", env!("CARGO_PKG_VERSION")),
                    ..ClientConfig::default()
                };
                Arc::new(Client::new(config))
            })
            .clone()
    }

    /// A session for `reference`'s repository; `insecure` allows plain HTTP to its registry.
    /// No connection is made (nor client built) until the session is first used.
    pub fn session(self: &Arc<Self>, reference: &Reference, insecure: bool) -> Result<Session> {
        let auth = crate::auth::credentials(&self.docker_config, reference.registry())?;
        Ok(Session {
            registries: self.clone(),
            extra_insecure: insecure.then(|| reference.registry().to_owned()),
            auth,
            reference: reference.clone(),
            docker_config: self.docker_config.clone(),
            attempts: self.attempts,
        })
    }
}

/// Whether an oci-client error is worth retrying.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(e) => {
            e.is_timeout() || e.is_connect() || e.is_body() || e.is_request()
        }
        OciDistributionError::ServerError { code, .. } => {
            *code >= 500 || *code == 429 || *code == 408
        }
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// oci-client's own end-of-body digest check (it fails the stream's last item).
fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
}

/// Runs `op` until it succeeds, fails for good, or `attempts` tries are used up, sleeping
/// 200 ms, 400 ms, ... (at most 10 s) between tries.
async fn retry<T, F, Fut>(attempts: u32, what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let mut delay = first_backoff();
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(t) => return Ok(t),
            Err(Attempt::Fail(e)) => return Err(e),
            Err(Attempt::Retry(e)) if attempt >= attempts => return Err(e),
            Err(Attempt::Retry(e)) => {
                tracing::warn!(%what, attempt, error = %crate::error::chain(&e), "transient registry error; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
        }
    }
}

enum Attempt {
    Retry(OciError),
    Fail(OciError),
}

impl Session {
    fn client(&self) -> Arc<Client> {
        self.registries.client(self.extra_insecure.clone())
    }

    fn map_err(&self, action: &'static str, e: OciDistributionError) -> Attempt {
        let (registry, reference) = (
            self.reference.registry().to_owned(),
            self.reference.to_string(),
        );
        let not_found = match &e {
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                })
            }
            OciDistributionError::ImageManifestNotFoundError(_) => true,
            OciDistributionError::ServerError { code: 404, .. } => true,
            _ => false,
        };
        let unauthorized = match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => true,
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
            _ => false,
        };
        if not_found && action == "fetch manifest of" {
            return Attempt::Fail(OciError::NotFound {
                registry,
                reference,
            });
        }
        if unauthorized {
            return Attempt::Fail(OciError::Unauthorized {
                registry,
                reference,
                docker_config: self.docker_config.clone(),
            });
        }
        let retry = transient(&e);
        let err = OciError::Registry {
            registry,
            reference,
            action,
            source: e,
        };
        if retry {
            Attempt::Retry(err)
        } else {
            Attempt::Fail(err)
        }
    }

    async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        retry(self.attempts, what, op).await
    }

    /// Fetches the manifest (or index) the reference names, or `digest` in its repository.
    /// Returns its bytes and their sha256 (checked against the reference's digest, if any).
    pub async fn manifest(&self, digest: Option<&Digest>) -> Result<(Vec<u8>, Digest)> {
        let target = match digest {
            Some(d) => self.reference.with_digest(d.clone()),
            None => self.reference.clone(),
        };
        let oci_ref = target.to_oci();
        let bytes = self
            .with_retries("manifest", || async {
                self.client()
                    .pull_manifest_raw(&oci_ref, &self.auth, MANIFEST_TYPES)
                    .await
                    .map(|(bytes, _)| bytes.to_vec())
                    .map_err(|e| self.map_err("fetch manifest of", e))
            })
            .await?;
        let computed = Digest::sha256_of(&bytes);
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(OciError::TooLarge {
                what: "manifest",
                digest: computed.to_string(),
                size: bytes.len() as u64,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        if let Some(expected) = target.digest() {
            let mut v = Verifier::new(expected, bytes.len() as u64);
            let checked = v.update(&bytes).and_then(|()| v.finish());
            if let Err(Mismatch::Content {
                actual_size,
                actual_digest,
            }) = checked
            {
                return Err(OciError::DigestMismatch {
                    digest: expected.clone(),
                    expected_size: actual_size,
                    actual_size,
                    actual_digest,
                });
            }
            return Ok((bytes, expected.clone()));
        }
        Ok((bytes, computed))
    }

    /// Streams blob `desc` into `dest`, verifying size and digest on the way. On any failure the
    /// partial file is removed. `progress` gets the byte count so far.
    pub async fn download(
        &self,
        desc: &Descriptor,
        dest: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let result = self
            .with_retries("blob", || self.download_once(desc, dest, progress))
            .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    async fn download_once(
        &self,
        desc: &Descriptor,
        dest: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), Attempt> {
        let oci_ref = self.reference.to_oci();
        let digest = desc.digest.to_string();
        let mut stream = self
            .client()
            .pull_blob_stream(&oci_ref, digest.as_str())
            .await
            .map_err(|e| self.map_err("download blob from", e))?;
        if let Some(len) = stream.content_length
            && len > desc.size
        {
            return Err(Attempt::Fail(OciError::BlobTooLarge {
                digest: desc.digest.clone(),
                expected_size: desc.size,
            }));
        }
        let io_err = |action| move |e| Attempt::Fail(OciError::io(action, dest)(e));
        let file = tokio::fs::File::create(dest)
            .await
            .map_err(io_err("create"))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut verifier = Verifier::new(&desc.digest, desc.size);
        progress(0);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client checks the digest itself and fails at the end of the body; our own
                // check below gives the precise error. A failure before the end is transient.
                Err(e) if is_digest_error(&e) => break,
                Err(e) => {
                    let err = OciError::Registry {
                        registry: self.reference.registry().to_owned(),
                        reference: self.reference.to_string(),
                        action: "download blob from",
                        source: OciDistributionError::IoError(e),
                    };
                    return Err(Attempt::Retry(err));
                }
            };
            if let Err(Mismatch::TooLarge { expected }) = verifier.update(&chunk) {
                return Err(Attempt::Fail(OciError::BlobTooLarge {
                    digest: desc.digest.clone(),
                    expected_size: expected,
                }));
            }
            out.write_all(&chunk).await.map_err(io_err("write"))?;
            progress(verifier.seen());
        }
        let seen = verifier.seen();
        if seen < desc.size && stream.content_length != Some(seen) {
            // The body stopped short of what the server announced: a broken transfer, retried.
            // (A server that announces the short size gets the precise mismatch below.)
            let err = OciError::Registry {
                registry: self.reference.registry().to_owned(),
                reference: self.reference.to_string(),
                action: "download blob from",
                source: OciDistributionError::GenericError(Some(format!(
                    "body ended after {seen} of {} bytes",
                    desc.size
                ))),
            };
            return Err(Attempt::Retry(err));
        }
        if let Err(Mismatch::Content {
            actual_size,
            actual_digest,
        }) = verifier.finish()
        {
            return Err(Attempt::Fail(OciError::DigestMismatch {
                digest: desc.digest.clone(),
                expected_size: desc.size,
                actual_size,
                actual_digest,
            }));
        }
        out.flush().await.map_err(io_err("write"))?;
        out.get_ref().sync_all().await.map_err(io_err("sync"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError as RegistryError};

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        let error = RegistryError {
            code,
            message: String::new(),
            detail: serde_json::Value::Null,
        };
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![error],
            },
            url: "u".into(),
        }
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: String::new(),
        };
        assert!(transient(&server(503)));
        assert!(transient(&server(500)));
        assert!(transient(&server(429)));
        assert!(!transient(&server(404)));
        assert!(!transient(&server(400)));
        assert!(transient(&envelope(OciErrorCode::Toomanyrequests)));
        assert!(!transient(&envelope(OciErrorCode::ManifestUnknown)));
        assert!(!transient(&OciDistributionError::UnauthorizedError {
            url: "u".into()
        }));
        assert!(transient(&OciDistributionError::IoError(
            std::io::ErrorKind::ConnectionReset.into()
        )));
    }

    fn transient_err() -> Attempt {
        Attempt::Retry(OciError::Worker {
            doing: "a flaky thing",
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_doubling_backoff_then_succeeds_or_gives_up() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r = retry(4, "t", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(transient_err()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(200 + 400));

        let mut calls = 0;
        let r: Result<()> = retry(3, "t", || {
            calls += 1;
            async { Err(transient_err()) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<()> = retry(5, "t", || {
            calls += 1;
            async { Err(Attempt::Fail(OciError::ErofsUnavailable)) }
        })
        .await;
        assert!(matches!(r, Err(OciError::ErofsUnavailable)));
        assert_eq!(calls, 1, "permanent errors are not retried");
    }
}
