//! Pulls (or imports) one image into a store and prints the packed image as JSON, with the time
//! the pull itself took. Used by `bench/images.sh`; handy for trying the crate by hand.
//!
//! ```text
//! oci-pull STORE REFERENCE [--insecure] [--format squashfs|erofs] [--zstd-level N] [--platform P]
//! oci-pull STORE --import PATH [--format ...]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use spore_oci::{
    ImageFormat, ImageStore, ImportOptions, Progress, PullOptions, Reference, StoreOptions,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let store_dir = PathBuf::from(
        args.next()
            .context("usage: oci-pull STORE REFERENCE|--import PATH [options]")?,
    );
    let mut target = None;
    let mut import = None;
    let (mut insecure, mut format, mut level, mut platform, mut repeat) =
        (false, None, None, None, 1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--insecure" => insecure = true,
            "--repeat" => repeat = args.next().context("--repeat N")?.parse()?,
            "--import" => import = Some(PathBuf::from(args.next().context("--import PATH")?)),
            "--format" => {
                format = Some(match args.next().as_deref() {
                    Some("squashfs") => ImageFormat::Squashfs,
                    Some("erofs") => ImageFormat::Erofs,
                    other => bail!("unknown format {other:?}"),
                })
            }
            "--zstd-level" => level = Some(args.next().context("--zstd-level N")?.parse()?),
            "--platform" => platform = Some(args.next().context("--platform P")?.parse()?),
            r if target.is_none() => target = Some(Reference::parse(r)?),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let mut options = StoreOptions::default();
    if let Some(level) = level {
        options.zstd_level = level;
    }
    if insecure && let Some(r) = &target {
        options.insecure_registries.push(r.registry().to_owned());
    }
    let store = ImageStore::open(&store_dir, options)?;
    let t0 = Instant::now();
    let progress = |p: &Progress| {
        if std::env::var_os("OCI_PULL_PROGRESS").is_some() {
            eprintln!(
                "{:>8.1}ms {:?} {} {}",
                t0.elapsed().as_secs_f64() * 1000.0,
                p.phase,
                p.message,
                p.layers
                    .iter()
                    .map(|l| format!("{:?}:{}/{}", l.phase, l.current_bytes, l.total_bytes))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    };
    // With --repeat N, the same pull runs N times in this process (the later ones are cache
    // hits, as in a long-running daemon); one JSON line per run.
    for _ in 0..repeat {
        let start = Instant::now();
        let image = match (&import, &target) {
            (Some(path), _) => {
                let opts = ImportOptions {
                    format,
                    platform: platform.clone(),
                    ..Default::default()
                };
                store.import(path, &opts, progress).await
            }
            (None, Some(r)) => {
                let opts = PullOptions {
                    format,
                    platform: platform.clone(),
                    insecure,
                };
                store.pull(r, &opts, progress).await
            }
            (None, None) => bail!("give a reference or --import PATH"),
        }
        .map_err(|e| anyhow::anyhow!(spore_oci::chain(&e)))?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let mut json = serde_json::to_value(&image)?;
        json["elapsed_ms"] = serde_json::json!((ms * 1000.0).round() / 1000.0);
        println!("{}", serde_json::to_string(&json)?);
    }
    Ok(())
}
