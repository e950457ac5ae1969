//! `sporectl zone exec [-i] [-t] ZONE CMD...` (and `sporectl exec`): run a further process
//! inside a running zone, as `docker exec` does. Exits with its exit code.
//!
//! - `-i` forwards standard input (its end is passed on); without it the process's stdin is
//!   closed at once.
//! - `-t` gives the process a terminal; with `-i` on a terminal, keystrokes go raw (Ctrl+C
//!   reaches the process through its terminal) and size changes follow the local terminal.
//! - Otherwise Ctrl+C (SIGINT), SIGTERM, SIGHUP and SIGQUIT received by sporectl are passed on
//!   to the process's group; a third Ctrl+C gives up waiting (the process is then killed, as
//!   for any client that goes away).

use std::io::Write;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use spore_api::v1;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::context::Ctx;
use crate::term::{self, Input};
use crate::{human, parse};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep standard input open and forward it to the process.
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the process a terminal (raw keystrokes with -i on a terminal).
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

/// Signals passed on to the process when the terminal is not raw.
const FORWARDED: [(SignalKind, i32); 4] = [
    (SignalKind::interrupt(), libc_signal::SIGINT),
    (SignalKind::terminate(), libc_signal::SIGTERM),
    (SignalKind::hangup(), libc_signal::SIGHUP),
    (SignalKind::quit(), libc_signal::SIGQUIT),
];

/// Linux signal numbers (the API carries numbers; these are the same on every Linux guest).
mod libc_signal {
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGQUIT: i32 = 3;
    pub const SIGTERM: i32 = 15;
}

/// Ctrl+C presses after which sporectl stops waiting for a process that ignores them.
const GIVE_UP_AFTER: u32 = 3;

impl ExecArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        ctx.out.require_raw("exec")?;
        let env = self
            .env
            .iter()
            .map(|e| parse::env_entry(e, |k| std::env::var(k).ok()))
            .collect::<Result<Vec<_>>>()?;
        let raw = self.tty && self.interactive && term::stdin_is_tty();
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
        if !self.interactive {
            // As docker exec without -i: the process reads end-of-file at once.
            send(&tx, v1::exec_in_zone_request::Kind::StdinClosed(true)).await;
        }
        let mut responses = ctx
            .call(client.exec_in_zone(ReceiverStream::new(rx)))
            .await?;

        let _raw = if raw {
            Some(term::RawMode::enable()?)
        } else {
            None
        };
        let mut stdin = self.interactive.then(|| term::spawn_stdin(false));
        let mut winch = if self.tty {
            Some(signal(SignalKind::window_change()).context("cannot watch terminal resizes")?)
        } else {
            None
        };
        // Raw, the terminal turns Ctrl+C into a byte for the process's terminal instead.
        let mut signals = if raw {
            Vec::new()
        } else {
            FORWARDED
                .iter()
                .map(|(kind, number)| Ok((signal(*kind)?, *number)))
                .collect::<std::io::Result<Vec<(Signal, i32)>>>()
                .context("cannot watch signals to forward")?
        };
        let mut interrupts = 0;
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
                            let read = write_all(&mut std::io::stdout().lock(), &bytes)?;
                            if !read {
                                // Nobody reads our output any more (`exec ... | head`): leaving
                                // ends the call, and spored has the process killed.
                                crate::exit(0);
                            }
                        }
                        Some(v1::exec_in_zone_response::Kind::Stderr(bytes)) => {
                            write_all(&mut std::io::stderr().lock(), &bytes)?;
                        }
                        Some(v1::exec_in_zone_response::Kind::Error(text)) => {
                            let line = format!("sporectl: {text}{}", if raw { "\r\n" } else { "\n" });
                            write_all(&mut std::io::stderr().lock(), line.as_bytes())?;
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
                number = next_signal(&mut signals) => {
                    if number == libc_signal::SIGINT {
                        interrupts += 1;
                        if interrupts >= GIVE_UP_AFTER {
                            bail!(
                                "gave up waiting for the process in zone {} after {GIVE_UP_AFTER} interrupts; it is killed",
                                self.zone
                            );
                        }
                    }
                    send(&tx, v1::exec_in_zone_request::Kind::Signal(number)).await;
                }
            }
        }
    }
}

/// Queues one request; if the request stream is gone the response side says why.
async fn send(tx: &mpsc::Sender<v1::ExecInZoneRequest>, kind: v1::exec_in_zone_request::Kind) {
    let _ = tx.send(v1::ExecInZoneRequest { kind: Some(kind) }).await;
}

/// Writes and flushes; false when the reader has gone (a closed pipe).
fn write_all(out: &mut impl Write, bytes: &[u8]) -> Result<bool> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        other => other
            .map(|()| true)
            .context("cannot write the process's output"),
    }
}

async fn next_input(stdin: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_winch(winch: &mut Option<Signal>) -> Option<()> {
    match winch {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The next forwarded signal's number (never, when none are watched).
async fn next_signal(signals: &mut [(Signal, i32)]) -> i32 {
    if signals.is_empty() {
        return std::future::pending().await;
    }
    let waits = signals.iter_mut().map(|(signal, number)| {
        let number = *number;
        Box::pin(async move {
            signal.recv().await;
            number
        })
    });
    futures::future::select_all(waits).await.0
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, ZoneCommand, parse_zone};

    #[test]
    fn command_keeps_its_flags() {
        let ZoneCommand::Exec(args) = parse_zone(&[
            "exec", "-it", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "web", "ls", "-l", "-t",
        ]) else {
            panic!("wrong command")
        };
        assert!(args.tty && args.interactive);
        assert_eq!(args.zone, "web");
        assert_eq!(args.command, ["ls", "-l", "-t"]);
        assert_eq!(args.env, ["A=1"]);
        assert!(Cli::try_parse_from(["sporectl", "zone", "exec", "web"]).is_err());
        let ZoneCommand::Exec(args) = parse_zone(&["exec", "web", "true"]) else {
            panic!("wrong command")
        };
        assert!(!args.tty && !args.interactive);
    }
}
