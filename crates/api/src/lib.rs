//! spore's public control API.
//!
//! The contract is `proto/spore/v1/control.proto`; this crate holds the code generated from
//! it and a client that connects to spored's Unix socket:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = spore_api::connect(spore_api::DEFAULT_SOCKET).await?;
//! let status = client.get_host_status(spore_api::v1::GetHostStatusRequest {}).await?;
//! println!("spored {}", status.into_inner().version);
//! # Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Generated messages and the `Control` service for package `spore.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("spore.v1");
}

/// The serialized `FileDescriptorSet` of `spore.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("spore_v1_descriptor");

/// Where spored listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/spore/spored.sock";

/// Largest message either side accepts (requests and replies), bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A connected client of the control service.
pub type ControlClient = v1::control_client::ControlClient<Channel>;

/// Why a connection to spored could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot reach spored at {path}: no such file (is spored running? see systemctl status spored)"
    )]
    NoSocket { path: PathBuf },
    #[error("cannot reach spored at {path}: permission denied (run as root or join group spore)")]
    PermissionDenied { path: PathBuf },
    #[error(
        "cannot reach spored at {path}: connection refused (spored is not running; see systemctl status spored)"
    )]
    Refused { path: PathBuf },
    #[error("cannot reach spored at {path}")]
    Other {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up a channel to spored at {path}")]
    Transport {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => ConnectError::NoSocket { path },
            io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied { path },
            io::ErrorKind::ConnectionRefused => ConnectError::Refused { path },
            _ => ConnectError::Other { path, source },
        }
    }
}

/// Connects to spored's Unix socket at `path`.
///
/// The socket is probed once up front so that a missing daemon gives a precise error instead
/// of a transport error on the first call.
pub async fn connect(path: impl AsRef<Path>) -> Result<ControlClient, ConnectError> {
    let path = path.as_ref().to_path_buf();
    drop(
        UnixStream::connect(&path)
            .await
            .map_err(|e| ConnectError::from_io(&path, e))?,
    );
    let connector_path = path.clone();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = connector_path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| ConnectError::Transport { path, source })?;
    Ok(v1::control_client::ControlClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_names_path_and_fix() {
        let dir = std::env::temp_dir().join(format!("spore-api-test-{}", std::process::id()));
        let path = dir.join("nope.sock");
        let err = connect(&path).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConnectError::NoSocket { .. }), "{err:?}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("is spored running"), "{msg}");
    }

    #[tokio::test]
    async fn refused_socket_says_not_running() {
        let dir = tempdir();
        let path = dir.join("stale.sock");
        // A socket file with no listener behind it: what a crashed daemon leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = connect(&path).await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "spore-api-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
