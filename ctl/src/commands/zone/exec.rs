//! `sporectl zone exec ZONE CMD...`: run a further process inside a running zone, with its
//! standard streams (and terminal, with -t) connected to this one. Exits with its exit code.

use std::io::Write;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use spore_api::v1;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::context::Ctx;
use crate::term::{self, Input};
use crate::{human, parse};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Give the process a terminal (raw keystrokes when stdin is a terminal).
    #[arg(short, long)]
    pub tty: bool,

    /// Set an environment variable (KEY=VALUE, or KEY to pass this environment's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Working directory inside the zone.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as: name, uid, name:group or uid:gid.
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,

    /// Zone name, id or unique id prefix.
    pub zone: String,

    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

impl ExecArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        ctx.out.require_raw("zone exec")?;
        let env = self
            .env
            .iter()
            .map(|e| parse::env_entry(e, |k| std::env::var(k).ok()))
            .collect::<Result<Vec<_>>>()?;
        let raw = self.tty && term::stdin_is_tty();
        let terminal_size = if self.tty {
            term::size().map(|(rows, columns)| v1::TerminalSize {
                rows: rows.into(),
                columns: columns.into(),
            })
        } else {
            None
        };
        let start = v1::ExecStart {
            zone: self.zone.clone(),
            command: self.command.clone(),
            env: parse::merge_env(env),
            working_dir: self.workdir.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            tty: self.tty,
            terminal_size,
        };
        let mut client = ctx.client().await?;
        let (tx, rx) = mpsc::channel(16);
        send(&tx, v1::exec_in_zone_request::Kind::Start(start)).await;
        let mut responses = ctx
            .call(client.exec_in_zone(ReceiverStream::new(rx)))
            .await?;

        let _raw = if raw {
            Some(term::RawMode::enable()?)
        } else {
            None
        };
        let mut stdin = Some(term::spawn_stdin(false));
        let mut winch = if self.tty {
            Some(signal(SignalKind::window_change()).context("cannot watch terminal resizes")?)
        } else {
            None
        };
        loop {
            tokio::select! {
                message = responses.message() => {
                    let message = message.map_err(|s| {
                        anyhow!(ctx.status_error(s)).context(format!("exec in zone {} failed", self.zone))
                    })?;
                    let Some(message) = message else {
                        bail!("spored ended the exec stream before the process in zone {} exited", self.zone);
                    };
                    match message.kind {
                        Some(v1::exec_in_zone_response::Kind::Stdout(bytes)) => {
                            write_all(&mut std::io::stdout().lock(), &bytes)?;
                        }
                        Some(v1::exec_in_zone_response::Kind::Stderr(bytes)) => {
                            write_all(&mut std::io::stderr().lock(), &bytes)?;
                        }
                        Some(v1::exec_in_zone_response::Kind::Exited(exit)) => {
                            return human::exit_code(&exit).ok_or_else(|| {
                                anyhow!("the process in zone {} ended without an exit status", self.zone)
                            });
                        }
                        None => {}
                    }
                }
                input = next_input(&mut stdin) => match input {
                    Some(Input::Data(bytes)) => {
                        send(&tx, v1::exec_in_zone_request::Kind::Stdin(bytes)).await;
                    }
                    Some(Input::Eof | Input::Detach) | None => {
                        stdin = None;
                        send(&tx, v1::exec_in_zone_request::Kind::StdinClosed(true)).await;
                    }
                },
                Some(()) = next_winch(&mut winch) => {
                    if let Some((rows, columns)) = term::size() {
                        let size = v1::TerminalSize { rows: rows.into(), columns: columns.into() };
                        send(&tx, v1::exec_in_zone_request::Kind::Resize(size)).await;
                    }
                }
            }
        }
    }
}

/// Queues one request; if the request stream is gone the response side says why.
async fn send(tx: &mpsc::Sender<v1::ExecInZoneRequest>, kind: v1::exec_in_zone_request::Kind) {
    let _ = tx.send(v1::ExecInZoneRequest { kind: Some(kind) }).await;
}

fn write_all(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the process's output"),
    }
}

async fn next_input(stdin: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_winch(winch: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match winch {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, ZoneCommand, parse_zone};

    #[test]
    fn command_keeps_its_flags() {
        let ZoneCommand::Exec(args) = parse_zone(&[
            "exec", "-t", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "web", "ls", "-l", "-t",
        ]) else {
            panic!("wrong command")
        };
        assert!(args.tty);
        assert_eq!(args.zone, "web");
        assert_eq!(args.command, ["ls", "-l", "-t"]);
        assert_eq!(args.env, ["A=1"]);
        assert!(Cli::try_parse_from(["sporectl", "zone", "exec", "web"]).is_err());
    }
}
