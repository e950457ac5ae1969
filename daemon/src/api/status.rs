//! Maps core errors onto gRPC status codes. Messages name the thing and the fix; the whole
//! error chain is included once.

use tonic::Status;

use crate::daemon::{DaemonError, chain};
use crate::images::ImageError;
use crate::network::NetworkError;
use crate::store::StoreError;
use crate::zones::ZoneError;

pub fn from_zone(e: ZoneError) -> Status {
    match &e {
        ZoneError::NotFound(_) => Status::not_found(e.to_string()),
        ZoneError::NameTaken(_) => Status::already_exists(e.to_string()),
        ZoneError::Ambiguous(..) | ZoneError::IllegalTransition { .. } => {
            Status::failed_precondition(e.to_string())
        }
        ZoneError::Network(NetworkError::Exhausted { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        ZoneError::Network(NetworkError::Config { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        ZoneError::Store(_) => internal(&e),
    }
}

pub fn from_daemon(e: DaemonError) -> Status {
    match e {
        DaemonError::Invalid(field) => Status::invalid_argument(field.to_string()),
        DaemonError::NoBackend(_)
        | DaemonError::Unsupported(_)
        | DaemonError::WrongState { .. }
        | DaemonError::BackendCannot { .. }
        | DaemonError::NotDestroyed { .. } => Status::failed_precondition(chain(&e)),
        DaemonError::Backend { .. } => internal(&e),
        DaemonError::Guest { ref source, .. } => {
            use crate::idm::LinkError as L;
            let message = chain(&e);
            match source {
                L::TooManyExecs(_) | L::Busy(_) => Status::resource_exhausted(message),
                L::Closed | L::Timeout(_) => Status::unavailable(message),
                L::Guest(_) | L::Unexpected { .. } | L::Violation(_) => {
                    Status::failed_precondition(message)
                }
            }
        }
        DaemonError::Zone(z) => from_zone(z),
        DaemonError::Image(i) => {
            let status = from_image(i);
            Status::new(status.code(), format!("spec.image: {}", status.message()))
        }
    }
}

pub fn from_image(e: ImageError) -> Status {
    use spore_oci::OciError as O;
    let message = chain(&e);
    match &e {
        ImageError::NotFound(_) | ImageError::NoSuchId(_) => Status::not_found(message),
        ImageError::Ambiguous { .. } | ImageError::InUse { .. } => {
            Status::failed_precondition(message)
        }
        ImageError::Zone(ZoneError::Store(_)) => Status::internal(message),
        ImageError::Zone(_) => Status::failed_precondition(message),
        ImageError::Store(_) => Status::internal(message),
        ImageError::Oci(o) => match o.unshared() {
            O::Reference(_)
            | O::Digest(_)
            | O::Platform(_)
            | O::Import { .. }
            | O::ImportUnreadable { .. } => Status::invalid_argument(message),
            O::NotFound { .. } | O::NotCached { .. } => Status::not_found(message),
            O::Unauthorized { .. } => Status::permission_denied(message),
            O::PlatformNotFound { .. } | O::ErofsUnavailable | O::ErofsNeedsRoot { .. } => {
                Status::failed_precondition(message)
            }
            O::DigestMismatch { .. } | O::BlobTooLarge { .. } => Status::data_loss(message),
            O::Registry { .. } => Status::unavailable(message),
            O::TooLarge { .. }
            | O::UnpackedTooLarge { .. }
            | O::InvalidManifest { .. }
            | O::UnsupportedMediaType { .. }
            | O::Entry { .. }
            | O::UnsupportedEntry { .. }
            | O::LayerArchive { .. } => Status::failed_precondition(message),
            _ => Status::internal(message),
        },
    }
}

pub fn from_store(e: StoreError) -> Status {
    internal(&e)
}

fn internal(e: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!("internal error: {}", chain(e));
    Status::internal(chain(e))
}
