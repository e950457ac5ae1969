//! `ImageStore::import`: images from the local file system, verified like pulls.
//!
//! - An OCI layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
//! - An oci-archive: the same layout in a tar (optionally gzip/zstd compressed).
//! - A `docker save` tar: `manifest.json` naming a config and layer tars (the old layout with
//!   `<id>/layer.tar`, symlinked duplicates included, and the newer one with `blobs/sha256/`).
//!
//! Every blob is hashed while it is copied into the store: a blob stored under a digest name
//! must hash to it; a docker-save config must hash to its `<hex>.json` name, and each layer
//! to the config's `rootfs.diff_ids` entry (or to its `blobs/` name). A docker-save image gets
//! a synthesised OCI manifest (deterministic, so re-importing gives the same digest).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::{Compression, sniff};
use crate::manifest::{self, Descriptor, Manifest, Parsed};
use crate::platform::Platform;
use crate::progress::{Phase, ProgressSink, Reporter};
use crate::reference::Reference;
use crate::store::{ImageStore, ImportOptions, Inner, PackedImage};

const MAX_JSON: u64 = 16 << 20;

/// Where the files of the image being imported are.
enum Files {
    /// An OCI layout directory.
    Dir(PathBuf),
    /// Regular files extracted from an archive into the store's `tmp/`, by archive path, with
    /// their sha256 and size.
    Extracted(HashMap<String, (PathBuf, Digest, u64)>),
}

struct Resolved {
    manifest_digest: Digest,
    manifest: Manifest,
    index_digest: Option<Digest>,
    references: Vec<String>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Import {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl ImageStore {
    /// Imports a `docker save` tar, an oci-archive tar or an OCI layout directory at `path`.
    pub async fn import(
        &self,
        path: &Path,
        opts: &ImportOptions,
        progress: impl ProgressSink,
    ) -> Result<PackedImage> {
        let _shared = self.inner.gc.read().await;
        let reporter = Reporter::new(&progress);
        let platform = opts
            .platform
            .clone()
            .unwrap_or_else(|| self.inner.options.platform.clone());
        let format = opts.format.unwrap_or(self.inner.options.format);
        reporter.message(
            Phase::Resolving,
            vec![],
            format!("reading {}", path.display()),
        );
        let (inner, p, o, pl) = (
            self.inner.clone(),
            path.to_owned(),
            opts.clone(),
            platform.clone(),
        );
        let resolved = tokio::task::spawn_blocking(move || {
            let mut files = None;
            let result = resolve(&inner, &p, &o, &pl, &mut files);
            if let Some(Files::Extracted(map)) = files {
                for (tmp, _, _) in map.values() {
                    let _ = std::fs::remove_file(tmp);
                }
            }
            result
        })
        .await
        .map_err(|_| Error::Worker {
            doing: "reading an image archive",
        })??;
        reporter.message(
            Phase::Resolving,
            vec![],
            format!("resolved to {}", resolved.manifest_digest),
        );
        self.finish(
            None,
            resolved.references,
            resolved.manifest_digest,
            resolved.manifest,
            resolved.index_digest,
            &platform,
            format,
            &reporter,
        )
        .await
    }
}

/// Copies `src` into the store as blob `want` of `size` bytes, hashing as it goes.
fn ingest_reader(
    inner: &Inner,
    mut src: impl Read,
    want: &Digest,
    size: u64,
    origin: &Path,
) -> Result<()> {
    let tmp = inner.temp_path("import");
    let result = (|| {
        let mut out = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let mut verifier = crate::digest::Verifier::new(want, size);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).map_err(Error::io("read", origin))?;
            if n == 0 {
                break;
            }
            if verifier.update(&buf[..n]).is_err() {
                return Err(Error::BlobTooLarge {
                    digest: want.clone(),
                    expected_size: size,
                });
            }
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(Error::io("write", &tmp))?;
        }
        if let Err(crate::digest::Mismatch::Content {
            actual_size,
            actual_digest,
        }) = verifier.finish()
        {
            return Err(Error::DigestMismatch {
                digest: want.clone(),
                expected_size: size,
                actual_size,
                actual_digest,
            });
        }
        out.sync_all().map_err(Error::io("sync", &tmp))?;
        inner.commit(&tmp, &inner.blob_path(want))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes sure blob `desc` is in the store, taking it from `files`.
fn ingest(inner: &Inner, files: &Files, path: &Path, desc: &Descriptor) -> Result<()> {
    if inner.blob_path(&desc.digest).is_file() {
        return Ok(());
    }
    match files {
        Files::Dir(dir) => {
            let src = dir
                .join("blobs")
                .join(desc.digest.algorithm().name())
                .join(desc.digest.hex());
            let f = File::open(&src).map_err(|_| {
                bad(
                    path,
                    format!("blob {} is missing from the layout", desc.digest),
                )
            })?;
            ingest_reader(inner, BufReader::new(f), &desc.digest, desc.size, &src)
        }
        Files::Extracted(map) => {
            let name = format!(
                "blobs/{}/{}",
                desc.digest.algorithm().name(),
                desc.digest.hex()
            );
            let (tmp, digest, size) = map.get(&name).ok_or_else(|| {
                bad(
                    path,
                    format!("blob {} is missing from the archive", desc.digest),
                )
            })?;
            if *digest != desc.digest || *size != desc.size {
                return Err(Error::DigestMismatch {
                    digest: desc.digest.clone(),
                    expected_size: desc.size,
                    actual_size: *size,
                    actual_digest: digest.clone(),
                });
            }
            inner.commit(tmp, &inner.blob_path(&desc.digest))
        }
    }
}

fn read_small(files: &Files, path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let file = match files {
        Files::Dir(dir) => dir.join(name),
        Files::Extracted(map) => match map.get(name) {
            Some((tmp, _, _)) => tmp.clone(),
            None => return Ok(None),
        },
    };
    let f = match File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &file)(e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_JSON + 1)
        .read_to_end(&mut buf)
        .map_err(Error::io("read", &file))?;
    if buf.len() as u64 > MAX_JSON {
        return Err(bad(path, format!("{name} is larger than {MAX_JSON} bytes")));
    }
    Ok(Some(buf))
}

fn resolve(
    inner: &Arc<Inner>,
    path: &Path,
    opts: &ImportOptions,
    platform: &Platform,
    files_out: &mut Option<Files>,
) -> Result<Resolved> {
    let meta = std::fs::metadata(path).map_err(Error::io("open", path))?;
    let files = if meta.is_dir() {
        Files::Dir(path.to_owned())
    } else {
        Files::Extracted(extract(inner, path)?)
    };
    let files = files_out.insert(files);
    if read_small(files, path, "oci-layout")?.is_some() {
        resolve_oci(inner, files, path, opts, platform)
    } else if let Some(manifest) = read_small(files, path, "manifest.json")? {
        resolve_docker(inner, files, path, opts, &manifest)
    } else {
        Err(bad(
            path,
            "neither an OCI layout (no oci-layout file) nor a docker save archive (no manifest.json)",
        ))
    }
}

/// Extracts every regular file of the archive into `tmp/`, hashing each; symlinks and hard
/// links (docker save deduplicates layers with them) become aliases.
fn extract(inner: &Inner, path: &Path) -> Result<HashMap<String, (PathBuf, Digest, u64)>> {
    let f = File::open(path).map_err(Error::io("open", path))?;
    let mut input = BufReader::with_capacity(1 << 20, f);
    let head = std::io::BufRead::fill_buf(&mut input).map_err(Error::io("read", path))?;
    let reader: Box<dyn Read> = match sniff(head) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input).map_err(Error::io("read", path))?,
        ),
    };
    let not_tar = |e: std::io::Error| Error::Import {
        path: path.to_owned(),
        reason: format!("not a readable tar archive ({e})"),
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut aliases: Vec<(String, String)> = Vec::new();
    for (count, entry) in archive.entries().map_err(not_tar)?.enumerate() {
        if count > 1_000_000 {
            return Err(bad(path, "more than a million entries"));
        }
        let mut entry = entry.map_err(not_tar)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_owned();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let tmp = inner.temp_path("extract");
                let mut out = File::create(&tmp).map_err(Error::io("create", &tmp))?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut size = 0u64;
                loop {
                    let n = entry.read(&mut buf).map_err(not_tar)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    std::io::Write::write_all(&mut out, &buf[..n])
                        .map_err(Error::io("write", &tmp))?;
                }
                let digest = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))
                    .expect("valid sha256");
                if let Some((old, _, _)) = files.insert(name, (tmp, digest, size)) {
                    let _ = std::fs::remove_file(old);
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                    // Relative to the link's directory (e.g. "../<id>/layer.tar").
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    normalise(&format!("{dir}/{target}"))
                } else {
                    normalise(&target)
                };
                aliases.push((name, target));
            }
            _ => {}
        }
    }
    for (alias, target) in aliases {
        if let Some((tmp, d, s)) = files.get(&target).cloned() {
            // Share the extracted copy: a hard link keeps one file on disk.
            let copy = inner.temp_path("extract");
            std::fs::hard_link(&tmp, &copy).map_err(Error::io("link", &copy))?;
            files.insert(alias, (copy, d, s));
        }
    }
    Ok(files)
}

/// Lexically normalises an archive-internal path (no file system access).
fn normalise(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn parsed_manifest(inner: &Inner, path: &Path, digest: &Digest) -> Result<Parsed> {
    let bytes = inner
        .read_blob(digest, manifest::MAX_MANIFEST_BYTES)?
        .ok_or_else(|| bad(path, format!("blob {digest} is missing")))?;
    manifest::parse(&bytes, digest)
}

fn resolve_oci(
    inner: &Inner,
    files: &Files,
    path: &Path,
    opts: &ImportOptions,
    platform: &Platform,
) -> Result<Resolved> {
    let index_bytes =
        read_small(files, path, "index.json")?.ok_or_else(|| bad(path, "index.json is missing"))?;
    let index_digest = Digest::sha256_of(&index_bytes);
    let Parsed::Index(entries) = manifest::parse(&index_bytes, &index_digest)? else {
        return Err(bad(path, "index.json is not an image index"));
    };
    let wanted = opts.reference.as_ref();
    let matches = |name: &str| {
        wanted.is_some_and(|r| {
            r.tag() == Some(name)
                || r.to_string() == name
                || Reference::parse(name).as_ref() == Ok(r)
        })
    };
    let chosen = match wanted {
        Some(r) => entries
            .iter()
            .find(|e| e.ref_name.as_deref().is_some_and(matches))
            .ok_or_else(|| {
                let names: Vec<&str> = entries
                    .iter()
                    .filter_map(|e| e.ref_name.as_deref())
                    .collect();
                bad(
                    path,
                    format!(
                        "no image named {r} (names: {})",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            })?,
        None if entries.len() == 1 => &entries[0],
        None => match manifest::choose(&entries, platform) {
            Some(e) if entries.iter().all(|e| e.ref_name.is_none()) => e,
            _ => {
                let names: Vec<&str> = entries
                    .iter()
                    .filter_map(|e| e.ref_name.as_deref())
                    .collect();
                return Err(bad(
                    path,
                    format!(
                        "it holds {} images ({}); name one with a reference",
                        entries.len(),
                        names.join(", ")
                    ),
                ));
            }
        },
    };
    let mut references: Vec<String> = match (wanted, chosen.ref_name.as_deref()) {
        (Some(r), _) => vec![r.to_string()],
        (None, Some(name)) if name.contains('/') || name.contains(':') => Reference::parse(name)
            .map(|r| vec![r.to_string()])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    references.dedup();
    ingest(inner, files, path, &chosen.descriptor)?;
    let top = chosen.descriptor.digest.clone();
    let (manifest_digest, manifest, index_digest) = match parsed_manifest(inner, path, &top)? {
        Parsed::Manifest(m) => (top, m, None),
        Parsed::Index(children) => {
            let entry =
                manifest::choose(&children, platform).ok_or_else(|| Error::PlatformNotFound {
                    reference: path.display().to_string(),
                    index: top.clone(),
                    platform: platform.to_string(),
                    available: manifest::available(&children),
                })?;
            ingest(inner, files, path, &entry.descriptor)?;
            let child = entry.descriptor.digest.clone();
            match parsed_manifest(inner, path, &child)? {
                Parsed::Manifest(m) => (child, m, Some(top)),
                Parsed::Index(_) => {
                    return Err(bad(
                        path,
                        format!("{child} is a nested index, which is not supported"),
                    ));
                }
            }
        }
    };
    ingest(inner, files, path, &manifest.config)?;
    for layer in &manifest.layers {
        ingest(inner, files, path, layer)?;
    }
    Ok(Resolved {
        manifest_digest,
        manifest,
        index_digest,
        references,
    })
}

#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn resolve_docker(
    inner: &Inner,
    files: &Files,
    path: &Path,
    opts: &ImportOptions,
    manifest_json: &[u8],
) -> Result<Resolved> {
    let Files::Extracted(map) = files else {
        return Err(bad(path, "a docker save image must be a tar archive"));
    };
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| bad(path, format!("manifest.json is not valid ({e})")))?;
    let tags = |e: &DockerEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match &opts.reference {
        Some(r) => entries
            .iter()
            .find(|e| {
                tags(e)
                    .iter()
                    .any(|t| Reference::parse(t).as_ref() == Ok(r))
            })
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "no image tagged {r} (tags: {})",
                        entries.iter().flat_map(tags).collect::<Vec<_>>().join(", ")
                    ),
                )
            })?,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(bad(
                path,
                format!(
                    "it holds {} images; name one with a reference",
                    entries.len()
                ),
            ));
        }
    };
    let references = match &opts.reference {
        Some(r) => vec![r.to_string()],
        None => tags(entry)
            .first()
            .and_then(|t| Reference::parse(t).ok())
            .map(|r| vec![r.to_string()])
            .unwrap_or_default(),
    };
    let file = |name: &str| {
        map.get(&normalise(name))
            .ok_or_else(|| bad(path, format!("{name} is missing from the archive")))
    };
    let expected_name = |name: &str| -> Option<Digest> {
        let base = name
            .rsplit('/')
            .next()?
            .trim_end_matches(".json")
            .trim_end_matches(".tar");
        let dir = name
            .rsplit_once('/')
            .map(|(d, _)| d.rsplit('/').next().unwrap_or(d));
        let alg = match dir {
            Some("sha256") | None => "sha256",
            Some("sha512") => "sha512",
            Some(_) => "sha256",
        };
        Digest::parse(&format!("{alg}:{base}")).ok()
    };
    let (config_tmp, config_digest, config_size) = file(&entry.config)?.clone();
    if let Some(named) = expected_name(&entry.config)
        && named != config_digest
    {
        return Err(Error::DigestMismatch {
            digest: named,
            expected_size: config_size,
            actual_size: config_size,
            actual_digest: config_digest,
        });
    }
    let config_bytes = std::fs::read(&config_tmp).map_err(Error::io("read", &config_tmp))?;
    let (_, _, diff_ids) = manifest::parse_config(&config_bytes, &config_digest)?;
    if diff_ids.len() != entry.layers.len() {
        return Err(bad(
            path,
            format!(
                "the config lists {} layers, manifest.json {}",
                diff_ids.len(),
                entry.layers.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let (tmp, digest, size) = file(name)?.clone();
        if digest != *diff_id && expected_name(name).as_ref() != Some(&digest) {
            return Err(Error::DigestMismatch {
                digest: diff_id.clone(),
                expected_size: size,
                actual_size: size,
                actual_digest: digest,
            });
        }
        let mut head = [0u8; 4];
        let n = File::open(&tmp)
            .and_then(|mut f| f.read(&mut head))
            .map_err(Error::io("read", &tmp))?;
        let media_type = match sniff(&head[..n]) {
            Compression::None => manifest::OCI_LAYER_TAR.to_owned(),
            Compression::Gzip => format!("{}+gzip", manifest::OCI_LAYER_TAR),
            Compression::Zstd => format!("{}+zstd", manifest::OCI_LAYER_TAR),
        };
        if !inner.blob_path(&digest).is_file() {
            let copy = inner.temp_path("import");
            std::fs::hard_link(&tmp, &copy).map_err(Error::io("link", &copy))?;
            File::open(&copy)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("sync", &copy))?;
            inner.commit(&copy, &inner.blob_path(&digest))?;
        }
        layers.push(serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size}));
    }
    inner.put_blob(&config_digest, &config_bytes)?;
    let synthesized = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_size},
        "layers": layers,
    }))
    .expect("serialisable");
    let manifest_digest = Digest::sha256_of(&synthesized);
    inner.put_blob(&manifest_digest, &synthesized)?;
    let Parsed::Manifest(manifest) = manifest::parse(&synthesized, &manifest_digest)? else {
        unreachable!("a manifest was written");
    };
    Ok(Resolved {
        manifest_digest,
        manifest,
        index_digest: None,
        references,
    })
}
