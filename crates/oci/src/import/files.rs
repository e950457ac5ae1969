//! The files of an image being imported: an OCI layout directory as it is, or an archive's
//! regular files extracted into the store's `tmp/` and hashed on the way. Blobs are copied into
//! the store only once they have hashed to the digest that names them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::bad;
use crate::digest::{Digest, Mismatch, Verifier};
use crate::error::{OciError, Result};
use crate::layer::{Compression, sniff};
use crate::manifest::Descriptor;
use crate::store::Inner;

/// The largest JSON file (index.json, manifest.json, a config) read from an archive.
const MAX_JSON: u64 = 16 << 20;

/// More entries than any image archive has; beyond it the archive is refused.
const MAX_ARCHIVE_ENTRIES: usize = 1_000_000;

/// An archive's regular file extracted into `tmp/`, with its sha256 and size.
#[derive(Debug, Clone)]
pub(super) struct Extracted {
    pub tmp: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// Where the files of the image being imported are.
pub(super) enum Files {
    /// An OCI layout directory.
    Dir(PathBuf),
    /// Regular files extracted from an archive, by archive path.
    Extracted(HashMap<String, Extracted>),
}

impl Files {
    /// Opens `path`: a directory as it is, an archive by extracting it.
    pub fn open(inner: &Inner, path: &Path) -> Result<Files> {
        let meta = std::fs::metadata(path).map_err(OciError::io("open", path))?;
        if meta.is_dir() {
            Ok(Files::Dir(path.to_owned()))
        } else {
            extract(inner, path).map(Files::Extracted)
        }
    }

    /// Deletes the extracted copies (those committed as blobs are gone already).
    pub fn remove(self) {
        if let Files::Extracted(map) = self {
            for file in map.values() {
                let _ = std::fs::remove_file(&file.tmp);
            }
        }
    }

    /// A small file (JSON) of the image by its path in the layout or archive; None if missing.
    pub fn read_small(&self, path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
        let file = match self {
            Files::Dir(dir) => dir.join(name),
            Files::Extracted(map) => match map.get(name) {
                Some(f) => f.tmp.clone(),
                None => return Ok(None),
            },
        };
        let f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OciError::io("open", &file)(e)),
        };
        let mut buf = Vec::new();
        f.take(MAX_JSON + 1)
            .read_to_end(&mut buf)
            .map_err(OciError::io("read", &file))?;
        if buf.len() as u64 > MAX_JSON {
            return Err(bad(path, format!("{name} is larger than {MAX_JSON} bytes")));
        }
        Ok(Some(buf))
    }

    /// Makes sure blob `desc` is in the store, taking it from these files.
    pub fn ingest(&self, inner: &Inner, path: &Path, desc: &Descriptor) -> Result<()> {
        if inner.blob_path(&desc.digest).is_file() {
            return Ok(());
        }
        let name = format!(
            "blobs/{}/{}",
            desc.digest.algorithm().name(),
            desc.digest.hex()
        );
        match self {
            Files::Dir(dir) => {
                let src = dir.join(&name);
                let f = File::open(&src).map_err(|_| {
                    bad(
                        path,
                        format!("blob {} is missing from the layout", desc.digest),
                    )
                })?;
                ingest_reader(inner, BufReader::new(f), &desc.digest, desc.size, &src)
            }
            Files::Extracted(map) => {
                let file = map.get(&name).ok_or_else(|| {
                    bad(
                        path,
                        format!("blob {} is missing from the archive", desc.digest),
                    )
                })?;
                if file.digest != desc.digest || file.size != desc.size {
                    return Err(OciError::DigestMismatch {
                        digest: desc.digest.clone(),
                        expected_size: desc.size,
                        actual_size: file.size,
                        actual_digest: file.digest.clone(),
                    });
                }
                inner.commit(&file.tmp, &inner.blob_path(&desc.digest))
            }
        }
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
        let mut out = File::create(&tmp).map_err(OciError::io("create", &tmp))?;
        let mut verifier = Verifier::new(want, size);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).map_err(OciError::io("read", origin))?;
            if n == 0 {
                break;
            }
            if verifier.update(&buf[..n]).is_err() {
                return Err(OciError::BlobTooLarge {
                    digest: want.clone(),
                    expected_size: size,
                });
            }
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(OciError::io("write", &tmp))?;
        }
        if let Err(Mismatch::Content {
            actual_size,
            actual_digest,
        }) = verifier.finish()
        {
            return Err(OciError::DigestMismatch {
                digest: want.clone(),
                expected_size: size,
                actual_size,
                actual_digest,
            });
        }
        out.sync_all().map_err(OciError::io("sync", &tmp))?;
        inner.commit(&tmp, &inner.blob_path(want))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The archive's tar stream, decompressed if it is gzip or zstd.
fn decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).map_err(OciError::io("open", path))?;
    let mut input = BufReader::with_capacity(1 << 20, f);
    let head = std::io::BufRead::fill_buf(&mut input).map_err(OciError::io("read", path))?;
    Ok(match sniff(head) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input).map_err(OciError::io("read", path))?,
        ),
    })
}

/// Extracts every regular file of the archive into `tmp/`, hashing each; symlinks and hard
/// links (docker save deduplicates layers with them) become aliases.
fn extract(inner: &Inner, path: &Path) -> Result<HashMap<String, Extracted>> {
    let not_tar = |source: std::io::Error| OciError::ImportUnreadable {
        path: path.to_owned(),
        what: "not a readable tar archive",
        source: Box::new(source),
    };
    let mut archive = tar::Archive::new(decompressed(path)?);
    let mut files = HashMap::new();
    let mut aliases: Vec<(String, String)> = Vec::new();
    for (count, entry) in archive.entries().map_err(not_tar)?.enumerate() {
        if count > MAX_ARCHIVE_ENTRIES {
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
                let file = extract_file(inner, &mut entry).map_err(|e| match e {
                    ExtractError::Archive(e) => not_tar(e),
                    ExtractError::Store(e) => e,
                })?;
                if let Some(old) = files.insert(name, file) {
                    let _ = std::fs::remove_file(old.tmp);
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
        if let Some(file) = files.get(&target).cloned() {
            // Share the extracted copy: a hard link keeps one file on disk.
            let copy = inner.temp_path("extract");
            std::fs::hard_link(&file.tmp, &copy).map_err(OciError::io("link", &copy))?;
            files.insert(alias, Extracted { tmp: copy, ..file });
        }
    }
    Ok(files)
}

enum ExtractError {
    /// Reading the archive failed: it is not a (whole) tar.
    Archive(std::io::Error),
    /// Writing the copy failed.
    Store(OciError),
}

/// Copies one archive entry into `tmp/`, hashing it.
fn extract_file(inner: &Inner, entry: &mut impl Read) -> Result<Extracted, ExtractError> {
    let tmp = inner.temp_path("extract");
    let mut out =
        File::create(&tmp).map_err(|e| ExtractError::Store(OciError::io("create", &tmp)(e)))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(ExtractError::Archive)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        std::io::Write::write_all(&mut out, &buf[..n])
            .map_err(|e| ExtractError::Store(OciError::io("write", &tmp)(e)))?;
    }
    Ok(Extracted {
        tmp,
        digest: Digest::sha256_from(hasher.finalize().into()),
        size,
    })
}

/// Lexically normalises an archive-internal path (no file system access).
pub(super) fn normalise(p: &str) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn archive_paths_normalise_lexically() {
        assert_eq!(super::normalise("a/./b/../c"), "a/c");
        assert_eq!(super::normalise("../../x"), "x");
        assert_eq!(super::normalise("/abc/layer.tar"), "abc/layer.tar");
    }
}
