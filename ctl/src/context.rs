//! What every command needs: the socket, the output formatter, a connected client, and the
//! translation of gRPC statuses into errors a person can act on.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use anyhow::Result;
use spore_api::ControlClient;
use spore_api::v1;
use tonic::Code;

use crate::output::Output;

/// Shared state of one sporectl invocation.
pub struct Ctx {
    pub socket: PathBuf,
    pub out: Output,
}

impl Ctx {
    pub fn new(socket: PathBuf, out: Output) -> Self {
        Ctx { socket, out }
    }

    /// Connects to spored. The error names the socket and what to do about it.
    pub async fn client(&self) -> Result<ControlClient> {
        Ok(spore_api::connect(&self.socket).await?)
    }

    /// Awaits one RPC and turns a failure status into a readable error.
    pub async fn call<T>(
        &self,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        rpc.await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status_error(status).into())
    }

    /// Wraps a status received from spored (by an RPC or mid-stream).
    pub fn status_error(&self, status: tonic::Status) -> StatusError {
        StatusError::new(status, &self.socket)
    }

    /// Turns a zone name, id or unique id prefix into the zone's id (the server decides).
    pub async fn resolve_zone(&self, client: &mut ControlClient, zone: &str) -> Result<String> {
        let reply = self
            .call(client.resolve_zone(v1::ResolveZoneRequest {
                zone: zone.to_string(),
            }))
            .await?;
        Ok(reply.zone_id)
    }
}

/// A failed call, rendered from the server's message (which names the thing and the fix), or,
/// when the connection itself broke, from what happened to it.
#[derive(Debug)]
pub struct StatusError {
    code: Code,
    text: String,
}

impl StatusError {
    fn new(status: tonic::Status, socket: &std::path::Path) -> Self {
        let message = status.message().trim().to_string();
        let text = match status.code() {
            // tonic reports a broken or refused connection as UNAVAILABLE/UNKNOWN with a
            // transport message; say which daemon went away and what to check.
            Code::Unavailable | Code::Unknown if is_transport(&status) => {
                let mut text = format!("lost the connection to spored at {}", socket.display());
                let detail = source_chain(&status);
                if !detail.is_empty() {
                    text.push_str(": ");
                    text.push_str(&detail);
                }
                text.push_str(" (is spored running? see systemctl status spored)");
                text
            }
            Code::PermissionDenied if message.is_empty() => format!(
                "spored at {} refused the call: permission denied (run as root or join group spore)",
                socket.display()
            ),
            _ if !message.is_empty() => message,
            code => format!("spored answered {} without a message", code_name(code)),
        };
        StatusError {
            code: status.code(),
            text,
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for StatusError {}

/// Whether a status came from the transport (no server message) rather than from spored.
fn is_transport(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status.source().is_some()
        || status.message().contains("transport error")
        || status.message().contains("connection")
}

fn source_chain(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut parts: Vec<String> = Vec::new();
    let message = status.message().trim();
    if !message.is_empty() {
        parts.push(message.to_string());
    }
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

/// The gRPC name of a code, as written in the proto's comments.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC code of an error, when it came from spored.
pub fn status_code(err: &anyhow::Error) -> Option<Code> {
    err.downcast_ref::<StatusError>().map(StatusError::code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(status: tonic::Status) -> String {
        StatusError::new(status, std::path::Path::new("/run/x.sock")).to_string()
    }

    #[test]
    fn server_message_is_printed_as_is() {
        let text = render(tonic::Status::not_found(
            "zone \"web\" not found (list zones with sporectl zone list)",
        ));
        assert_eq!(
            text,
            "zone \"web\" not found (list zones with sporectl zone list)"
        );
    }

    #[test]
    fn unimplemented_prints_the_server_message() {
        let text = render(tonic::Status::unimplemented(
            "exec needs the guest agent (issue 6)",
        ));
        assert_eq!(text, "exec needs the guest agent (issue 6)");
    }

    #[test]
    fn empty_message_names_the_code() {
        assert_eq!(
            render(tonic::Status::new(Code::Internal, "")),
            "spored answered INTERNAL without a message"
        );
        assert!(render(tonic::Status::permission_denied("")).contains("join group spore"));
    }

    #[test]
    fn broken_transport_names_the_socket() {
        let text = render(tonic::Status::unavailable("transport error"));
        assert!(
            text.starts_with("lost the connection to spored at /run/x.sock"),
            "{text}"
        );
        assert!(text.contains("systemctl status spored"), "{text}");
    }

    #[test]
    fn code_survives_anyhow() {
        let err: anyhow::Error =
            StatusError::new(tonic::Status::not_found("x"), std::path::Path::new("/s")).into();
        assert_eq!(status_code(&err), Some(Code::NotFound));
    }
}
