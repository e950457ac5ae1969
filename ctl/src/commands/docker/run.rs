//! `sporectl run [-d] [-i] [-t] [--rm] ... IMAGE [CMD...]`: `zone launch` with docker's
//! defaults: attached unless `-d`, standard input forwarded only with `-i`.

use anyhow::Result;
use clap::Args;

use crate::commands::zone::launch::{Follow, ZoneArgs, launch};
use crate::context::Ctx;

const EXAMPLES: &str = "\
Examples:
  sporectl run busybox echo hello
  sporectl run --rm -it busybox sh
  sporectl run -d --name web -p 8080:80 127.0.0.1:5000/web:1.0
  sporectl run -i busybox sh -c 'tr a-z A-Z' < notes.txt

Attached (the default), sporectl exits with the workload's exit code (128+N when killed by
signal N) and with 125 when spore itself fails. With -it on a terminal keystrokes go to the
zone raw; Ctrl+] detaches and leaves the zone running.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    /// Run in the background: print the new zone's id and return.
    #[arg(short, long)]
    pub detach: bool,

    /// Keep standard input open and forward it to the zone's console.
    #[arg(short, long)]
    pub interactive: bool,

    #[command(flatten)]
    pub zone: ZoneArgs,
}

impl RunArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let follow = if self.detach {
            Follow::Detached
        } else {
            Follow::Attached {
                stdin: self.interactive,
            }
        };
        launch(ctx, &self.zone, follow, "run").await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn run(argv: &[&str]) -> super::RunArgs {
        let mut full = vec!["sporectl", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(args) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn docker_flags() {
        let args = run(&[
            "--rm", "-it", "-e", "A=1", "--name", "x", "busybox", "sh", "-c", "ls -d",
        ]);
        assert!(args.interactive && args.zone.tty && args.zone.remove && !args.detach);
        let spec = args.zone.spec(|_| None).unwrap();
        assert_eq!(spec.name, "x");
        assert_eq!(spec.env, ["A=1"]);
        assert_eq!(spec.cmd.unwrap().values, ["sh", "-c", "ls -d"]);
        let args = run(&["-d", "-p", "8080:80", "busybox"]);
        assert!(args.detach && !args.interactive);
        assert_eq!(args.zone.spec(|_| None).unwrap().ports.len(), 1);
    }
}
