//! Constructors and small helpers on the generated message types.

use crate::frame::MAGIC;
use crate::proto::{self, IdmPacket, exec_exit, exit, idm_packet::Body};

impl IdmPacket {
    /// An event (no request, no stream): Started, Exit, a fatal Error; and the host's ExitAck.
    pub fn event(body: Body) -> Self {
        Self {
            magic: MAGIC,
            request_id: 0,
            stream_id: 0,
            body: Some(body),
        }
    }

    /// A request, or the answer to one (same `request_id`).
    pub fn request(request_id: u64, body: Body) -> Self {
        Self {
            magic: MAGIC,
            request_id,
            stream_id: 0,
            body: Some(body),
        }
    }

    /// A message of exec stream `stream_id`.
    pub fn stream(stream_id: u64, body: Body) -> Self {
        Self {
            magic: MAGIC,
            request_id: 0,
            stream_id,
            body: Some(body),
        }
    }

    /// The protobuf field name of the body, for logs ("none" without a body).
    pub fn kind(&self) -> &'static str {
        match &self.body {
            None => "none",
            Some(Body::Started(_)) => "started",
            Some(Body::Exit(_)) => "exit",
            Some(Body::Error(_)) => "error",
            Some(Body::ExitAck(_)) => "exit_ack",
            Some(Body::Ping(_)) => "ping",
            Some(Body::Pong(_)) => "pong",
            Some(Body::MetricsRequest(_)) => "metrics_request",
            Some(Body::MetricsResponse(_)) => "metrics_response",
            Some(Body::Shutdown(_)) => "shutdown",
            Some(Body::ShutdownAck(_)) => "shutdown_ack",
            Some(Body::ExecStart(_)) => "exec_start",
            Some(Body::ExecStdin(_)) => "exec_stdin",
            Some(Body::ExecStdinClosed(_)) => "exec_stdin_closed",
            Some(Body::ExecResize(_)) => "exec_resize",
            Some(Body::ExecStarted(_)) => "exec_started",
            Some(Body::ExecOutput(_)) => "exec_output",
            Some(Body::ExecExit(_)) => "exec_exit",
            Some(Body::ExecCredit(_)) => "exec_credit",
            Some(Body::ExecSignal(_)) => "exec_signal",
            Some(Body::ExecCancel(_)) => "exec_cancel",
        }
    }
}

/// How a process ended, decoded from a `waitpid` status or an IDM message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal { signal, .. } => 128 + signal,
        }
    }
}

impl From<ExitStatus> for proto::Exit {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Code(code) => proto::Exit {
                status: Some(exit::Status::Code(code)),
                core_dumped: false,
            },
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => proto::Exit {
                status: Some(exit::Status::Signal(signal)),
                core_dumped,
            },
        }
    }
}

impl From<ExitStatus> for proto::ExecExit {
    fn from(status: ExitStatus) -> Self {
        proto::ExecExit {
            status: Some(match status {
                ExitStatus::Code(code) => exec_exit::Status::Code(code),
                ExitStatus::Signal { signal, .. } => exec_exit::Status::Signal(signal),
            }),
        }
    }
}

impl proto::Exit {
    /// `None` if the guest sent an Exit without a status (a protocol violation).
    pub fn status(&self) -> Option<ExitStatus> {
        Some(match self.status? {
            exit::Status::Code(code) => ExitStatus::Code(code),
            exit::Status::Signal(signal) => ExitStatus::Signal {
                signal,
                core_dumped: self.core_dumped,
            },
        })
    }
}
