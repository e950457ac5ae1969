//! From a verified manifest to a root image: make sure every layer blob is in the store
//! (downloading missing ones), read the layers in parallel on blocking threads as soon as each
//! is there, merge them in order, pack, and move the image into place. One build per
//! (manifest, format) at a time; every caller waiting for it sees its progress.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::flight::{Publisher, State};
use crate::layer::{LayerEntries, Limits, read_layer};
use crate::manifest::Manifest;
use crate::pack::{ImageFormat, PackJob, pack};
use crate::progress::{Phase, Progress};
use crate::registry::Session;
use crate::store::{Inner, PackState, Packed};
use crate::tree::Tree;

fn update(tx: &Publisher<PackState, Packed>, f: impl FnOnce(&mut PackState)) {
    tx.send_modify(|s| {
        if let State::Running(p) = s {
            f(p);
            // The overall phase is the least advanced layer's, until the final write.
            if p.phase != Phase::Packing || p.message.is_empty() {
                p.phase = p
                    .layers
                    .iter()
                    .map(|l| l.phase)
                    .min()
                    .unwrap_or(Phase::Packing);
            }
        }
    });
}

/// Builds (or finds) the root image of `manifest`. `on` sees the shared progress.
pub(crate) async fn assemble(
    inner: &Arc<Inner>,
    session: Option<&Session>,
    manifest_digest: &Digest,
    manifest: &Manifest,
    format: ImageFormat,
    mut on: impl FnMut(Progress),
) -> Result<Packed> {
    let dest = inner.image_path(manifest_digest, format);
    if let Ok(meta) = std::fs::metadata(&dest) {
        return Ok(Packed {
            path: dest,
            size: meta.len(),
            dropped_xattrs: 0,
        });
    }
    let (i, s, d, m) = (
        inner.clone(),
        session.cloned(),
        manifest_digest.clone(),
        manifest.clone(),
    );
    let rx = inner.pack_flights.join(
        (manifest_digest.clone(), format),
        PackState::new(manifest),
        move |tx| async move {
            let work = i.temp_path("pack");
            std::fs::create_dir(&work).map_err(OciError::io("create work directory", &work))?;
            let result = build(&i, s.as_ref(), &d, &m, format, &work, &tx).await;
            let _ = tokio::fs::remove_dir_all(&work).await;
            result
        },
    );
    crate::flight::wait(rx, |p| on(p.progress())).await
}

async fn build(
    inner: &Arc<Inner>,
    session: Option<&Session>,
    manifest_digest: &Digest,
    manifest: &Manifest,
    format: ImageFormat,
    work: &std::path::Path,
    tx: &Publisher<PackState, Packed>,
) -> Result<Packed> {
    let opts = &inner.options;
    let budget = Arc::new(AtomicU64::new(0));
    let reads = manifest.layers.iter().enumerate().map(|(i, desc)| {
        let budget = budget.clone();
        async move {
            inner
                .ensure_blob(session, desc, |b| {
                    update(tx, |p| {
                        p.layers[i].phase = b.phase;
                        p.layers[i].current_bytes = b.current;
                    })
                })
                .await?;
            update(tx, |p| {
                p.layers[i].phase = Phase::Packing;
                p.layers[i].current_bytes = 0;
            });
            let _cpu = inner.cpus.acquire().await.map_err(|_| OciError::Worker {
                doing: "waiting for a CPU slot",
            })?;
            let (blob, digest, spool) = (
                inner.blob_path(&desc.digest),
                desc.digest.clone(),
                work.join(format!("layer-{i}.spool")),
            );
            let (limit, max_entries, tx2) = (opts.max_unpacked_bytes, opts.max_entries, tx.clone());
            let report = Box::new(move |n| update(&tx2, |p| p.layers[i].current_bytes = n));
            let entries = tokio::task::spawn_blocking(move || {
                let limits = Limits {
                    budget: &budget,
                    max_bytes: limit,
                    max_entries,
                };
                read_layer(&blob, &digest, (i as u32, &spool), &limits, report).map(|e| (e, spool))
            })
            .await
            .map_err(|_| OciError::Worker {
                doing: "reading a layer",
            })??;
            Ok::<(LayerEntries, PathBuf), OciError>(entries)
        }
    });
    let layers: Vec<(LayerEntries, PathBuf)> = futures::future::try_join_all(reads).await?;
    update(tx, |p| {
        p.phase = Phase::Packing;
        p.message = format!("writing {format} image");
    });

    let (i, m, d) = (inner.clone(), manifest.clone(), manifest_digest.clone());
    let work = work.to_owned();
    let packed = tokio::task::spawn_blocking(move || -> Result<Packed> {
        let mut tree = Tree::new(i.options.max_entries);
        let mut spools = Vec::with_capacity(layers.len());
        for (n, (entries, spool)) in layers.into_iter().enumerate() {
            for op in entries.ops {
                let entry = String::from_utf8_lossy(&op.path).into_owned();
                tree.apply(n + 1, op).map_err(|problem| OciError::Entry { digest: m.layers[n].digest.clone(), entry, problem })?;
            }
            spools.push(spool);
        }
        let tmp = work.join("image");
        let job = PackJob { tree: &tree, spools: &spools, format, zstd_level: i.options.zstd_level, manifest: &d, scratch: &work };
        let stats = pack(&job, &tmp)?;
        let size = std::fs::metadata(&tmp).map_err(OciError::io("inspect", &tmp))?.len();
        let dest = i.image_path(&d, format);
        i.commit(&tmp, &dest)?;
        i.images_packed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(manifest = %d, %format, entries = stats.entries, bytes = size, "packed root image");
        if stats.dropped_xattrs > 0 {
            tracing::warn!(manifest = %d, count = stats.dropped_xattrs, "extended attributes (e.g. file capabilities) are not kept in {format} images");
        }
        Ok(Packed { path: dest, size, dropped_xattrs: stats.dropped_xattrs })
    })
    .await
    .map_err(|_| OciError::Worker { doing: "packing an image" })??;
    Ok(packed)
}
