//! PullImage and ImportImage: progress streamed as it happens, the Image last.

use std::path::PathBuf;
use std::sync::Arc;

use spore_api::v1;
use spore_oci::{ImageName, ImportOptions, PullOptions, Reference};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{Stream_, convert, status};
use crate::daemon::Daemon;
use crate::images::{format_from_api, platform};
use crate::store::ImageRecord;

pub fn pull(
    daemon: &Arc<Daemon>,
    request: v1::PullImageRequest,
) -> Result<Stream_<v1::PullImageResponse>, Status> {
    if let Ok(
        ImageName::Id(_)
        | ImageName::IdPrefix {
            reference: None, ..
        },
    ) = ImageName::parse(&request.reference)
    {
        return Err(Status::invalid_argument(format!(
            "reference: {:?} is an image id, which no registry serves: pull by name (repository[:tag] or repository@sha256:...)",
            request.reference
        )));
    }
    let reference = Reference::parse(&request.reference)
        .map_err(|e| Status::invalid_argument(format!("reference: {e}")))?;
    let opts = PullOptions {
        platform: platform(&request.platform)
            .map_err(|e| Status::invalid_argument(format!("platform: {e}")))?,
        format: Some(format_from_api(
            request.format(),
            daemon.images.default_format(),
        )),
        insecure: request.insecure,
    };
    // Without `refresh`, an image recorded for this reference (default platform) is the answer.
    let use_cache = !request.refresh && request.platform.is_empty();
    let daemon = daemon.clone();
    Ok(run(daemon.clone(), move |sink| async move {
        if use_cache
            && let Some(format) = opts.format
            && let Some(record) = daemon.images.cached(&reference, format).await?
        {
            return Ok(record);
        }
        daemon.images.pull(&reference, &opts, sink).await
    }))
}

pub fn import(
    daemon: &Arc<Daemon>,
    request: v1::ImportImageRequest,
) -> Result<Stream_<v1::PullImageResponse>, Status> {
    let path = PathBuf::from(&request.path);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "path: {:?} is not an absolute path on the daemon's host",
            request.path
        )));
    }
    let reference = if request.reference.is_empty() {
        None
    } else {
        Some(
            Reference::parse(&request.reference)
                .map_err(|e| Status::invalid_argument(format!("reference: {e}")))?,
        )
    };
    let opts = ImportOptions {
        tag: reference,
        select: (!request.select.is_empty()).then(|| request.select.clone()),
        platform: platform(&request.platform)
            .map_err(|e| Status::invalid_argument(format!("platform: {e}")))?,
        format: Some(format_from_api(
            request.format(),
            daemon.images.default_format(),
        )),
    };
    let daemon = daemon.clone();
    Ok(run(daemon.clone(), move |sink| async move {
        daemon.images.import(&path, &opts, sink).await
    }))
}

fn run<F, Fut>(daemon: Arc<Daemon>, work: F) -> Stream_<v1::PullImageResponse>
where
    F: FnOnce(mpsc::UnboundedSender<spore_oci::Progress>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<ImageRecord, crate::images::ImageError>> + Send,
{
    let (tx, rx) = mpsc::channel(64);
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let forward_tx = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(p) = progress_rx.recv().await {
            let message = v1::PullImageResponse {
                kind: Some(v1::pull_image_response::Kind::Progress(convert::progress(
                    &p,
                ))),
            };
            if forward_tx.send(Ok(message)).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let result = work(progress_tx).await;
        // All progress is sent before the final message.
        let _ = forward.await;
        let last = match result {
            Ok(record) => Ok(v1::PullImageResponse {
                kind: Some(v1::pull_image_response::Kind::Image(convert::image(
                    &daemon.images,
                    &record,
                ))),
            }),
            Err(e) => Err(status::from_image(e)),
        };
        let _ = tx.send(last).await;
    });
    Box::pin(ReceiverStream::new(rx))
}
