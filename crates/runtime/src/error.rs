//! Errors of the runtime crate.

use std::io;
use std::path::PathBuf;

use uuid::Uuid;

use crate::probe::BackendKind;

/// A boxed error of a backend's own library, kept as the `#[source]` of a [`RuntimeError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong while launching or managing a zone's VM. Messages do not repeat their
/// `#[source]`: the chain printer at the top prints it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The backend is not usable on this host (what is missing is in the message).
    #[error("the {kind} backend is not usable: {detail}")]
    Unavailable { kind: BackendKind, detail: String },
    /// The backend cannot do this (yet); the message says what is missing.
    #[error("the {kind} backend cannot {what}: {detail}")]
    Unsupported {
        kind: BackendKind,
        what: &'static str,
        detail: String,
    },
    /// The backend has no VM for this zone.
    #[error("no VM for zone {0} on this backend")]
    NoSuchZone(Uuid),
    /// The launch spec asks for something the backend cannot give.
    #[error("invalid launch spec for zone {zone}: {detail}")]
    InvalidSpec { zone: Uuid, detail: String },
    /// A file the launch needs is missing or unreadable.
    #[error("{what} {path} is not usable")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The VM could not be created, or failed while starting, for the reason in `detail`.
    #[error("starting the VM of zone {zone} failed: {detail}")]
    Launch { zone: Uuid, detail: String },
    /// A step of starting the VM failed in the backend's machinery (its error chain follows).
    #[error("starting the VM of zone {zone} failed while {step}")]
    Start {
        zone: Uuid,
        step: String,
        #[source]
        source: BoxError,
    },
    /// Tearing the VM down failed; what is left is named in the message.
    #[error("destroying the VM of zone {zone} failed: {detail}")]
    Destroy { zone: Uuid, detail: String },
    /// An operation on the backend's own machinery failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The backend's own library failed (its error chain follows).
    #[error("{context}")]
    Backend {
        context: String,
        #[source]
        source: BoxError,
    },
}

/// The runtime's result type.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}
