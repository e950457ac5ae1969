//! `sporectl zone launch`: create a zone from an image, optionally attached to its console.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use spore_api::{ControlClient, v1};
use tonic::Code;

use crate::console::{self, Target};
use crate::context::Ctx;
use crate::parse;
use crate::term;

const EXAMPLES: &str = "\
Examples:
  sporectl zone launch --attach busybox echo hello
  sporectl zone launch -a -t --rm busybox sh
  sporectl zone launch --name web -p 8080:80 -e MODE=prod --memory 512M 127.0.0.1:5000/web:1.0
  sporectl zone launch --entrypoint /bin/sh busybox -c 'exit 7'; echo $?

Options go before IMAGE; everything after IMAGE is the command, hyphens included.
With --attach, sporectl exits with the workload's exit code (128+N when killed by signal N)
and with 125 when spore itself fails (the zone failed, the daemon refused, the connection broke).";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct LaunchArgs {
    /// Attach to the console and wait: stream output, forward input, exit with the workload's code.
    #[arg(short, long)]
    pub attach: bool,

    #[command(flatten)]
    pub zone: ZoneArgs,
}

/// The zone's spec, as `zone launch` and `run` take it.
#[derive(Debug, Args)]
pub struct ZoneArgs {
    /// Give the workload a terminal; attached on a terminal, keystrokes go to the zone raw.
    #[arg(short, long)]
    pub tty: bool,

    /// Remove the zone as soon as it has exited.
    #[arg(long = "rm")]
    pub remove: bool,

    /// Set an environment variable (KEY=VALUE, or KEY to pass this environment's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Read environment variables from a file (KEY=VALUE lines, # comments); -e wins.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Name of the zone, also its host name: 1-63 of [a-z0-9.-], labels starting and ending
    /// with a letter or digit; default: spored picks one.
    #[arg(long)]
    pub name: Option<String>,

    /// Virtual CPUs (default: spored's).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,

    /// Memory: MiB, or with suffix M or G (e.g. 512, 512M, 2G; default: spored's).
    #[arg(long, value_name = "SIZE", value_parser = parse::memory_mib)]
    pub memory: Option<u64>,

    /// Replace the image's ENTRYPOINT with this program ("" clears it); the image's CMD is dropped
    /// unless a command follows IMAGE.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,

    /// Working directory inside the zone (default: the image's, else /).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as: name, uid, name:group or uid:gid (default: the image's, else root).
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,

    /// Publish a zone port on the host: [ADDR:]HOST:ZONE[/tcp|udp], e.g. 8080:80.
    #[arg(short, long, value_name = "SPEC", value_parser = parse::publish)]
    pub publish: Vec<v1::PortMapping>,

    /// Run the zone without a network interface.
    #[arg(long)]
    pub no_network: bool,

    /// Boot this kernel instead of spored's guest bundle (a path on the daemon's host).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Use this initrd instead of spored's guest bundle (a path on the daemon's host).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Append an argument to the guest kernel's command line.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,

    /// The image to run: "busybox", "127.0.0.1:5000/app:1.0", "repo@sha256:...", or a cached
    /// image's id (its manifest digest, or a unique prefix of at least 4 hex digits).
    pub image: String,

    /// The command and its arguments (replaces the image's CMD).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

impl ZoneArgs {
    /// The spec sent to spored, built and checked before anything is contacted.
    pub fn spec(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<v1::ZoneSpec> {
        if self.cpus == Some(0) {
            bail!("invalid --cpus 0: a zone needs at least one virtual CPU");
        }
        let mut env = Vec::new();
        for file in &self.env_file {
            env.extend(parse::env_file(file, &lookup)?);
        }
        for entry in &self.env {
            env.push(parse::env_entry(entry, &lookup)?);
        }
        let entrypoint = self.entrypoint.as_ref().map(|program| v1::StringList {
            values: if program.is_empty() {
                Vec::new()
            } else {
                vec![program.clone()]
            },
        });
        // As with docker: a new entrypoint does not inherit the image's CMD.
        let cmd = if !self.command.is_empty() || entrypoint.is_some() {
            Some(v1::StringList {
                values: self.command.clone(),
            })
        } else {
            None
        };
        let path = |p: &Option<PathBuf>| -> Result<String> {
            Ok(match p {
                Some(p) => parse::absolute(p)?.display().to_string(),
                None => String::new(),
            })
        };
        Ok(v1::ZoneSpec {
            image: self.image.clone(),
            name: self.name.clone().unwrap_or_default(),
            entrypoint,
            cmd,
            env: parse::merge_env(env),
            working_dir: self.workdir.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            tty: self.tty,
            vcpus: self.cpus,
            memory_mib: self.memory,
            kernel_path: path(&self.kernel)?,
            initrd_path: path(&self.initrd)?,
            kernel_args: self.kernel_args.clone(),
            network_disabled: self.no_network,
            ports: self.publish.clone(),
            auto_remove: self.remove,
        })
    }
}

/// How a launch follows its zone.
#[derive(Debug, Clone, Copy)]
pub enum Follow {
    /// Print the new zone's id and return.
    Detached,
    /// Stream the console until the workload ends; `stdin`: forward input.
    Attached { stdin: bool },
}

impl LaunchArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let follow = if self.attach {
            Follow::Attached { stdin: true }
        } else {
            Follow::Detached
        };
        launch(ctx, &self.zone, follow, "zone launch --attach").await
    }
}

/// Creates the zone and, attached, follows it to its end: the exit code is the workload's.
pub async fn launch(ctx: &Ctx, args: &ZoneArgs, follow: Follow, command: &str) -> Result<i32> {
    let Follow::Attached { stdin } = follow else {
        let spec = args.spec(|key| std::env::var(key).ok())?;
        let mut client = ctx.client().await?;
        let created = ctx
            .call(client.create_zone(v1::CreateZoneRequest { spec: Some(spec) }))
            .await?;
        ctx.out.print(&created, |c| c.zone_id.clone())?;
        return Ok(0);
    };
    ctx.out.require_raw(command)?;
    let spec = args.spec(|key| std::env::var(key).ok())?;
    let mut client = ctx.client().await?;
    // Taken before the zone exists, so the session sees every state change it makes.
    let from_sequence = ctx
        .call(client.get_host_status(v1::GetHostStatusRequest {}))
        .await?
        .last_event_sequence
        + 1;
    let created = ctx
        .call(client.create_zone(v1::CreateZoneRequest { spec: Some(spec) }))
        .await?;
    let name = if created.name.is_empty() {
        created.zone_id.clone()
    } else {
        created.name.clone()
    };
    let target = Target {
        id: created.zone_id,
        name: name.clone(),
        from_sequence,
        replay: true,
        raw: args.tty && stdin && term::stdin_is_tty(),
        stdin,
    };
    let outcome = console::run(ctx, &mut client, &target).await?;
    if args.remove && matches!(outcome, console::Outcome::Exited(_)) {
        wait_removed(ctx, &mut client, &target.id, &name).await;
    }
    Ok(console::finish(outcome, &name))
}

/// How long `--rm` waits for spored to remove an ended zone (a Xen domain's devices get up to
/// a few seconds to close).
const REMOVE_WAIT: Duration = Duration::from_secs(60);

/// With `--rm`, as with docker, the command returns once the zone is gone, so a script can reuse
/// its name at once. Not being able to tell is only a warning: the workload's code stands.
async fn wait_removed(ctx: &Ctx, client: &mut ControlClient, id: &str, name: &str) {
    let deadline = Instant::now() + REMOVE_WAIT;
    loop {
        let request = v1::GetZoneRequest {
            zone: id.to_string(),
        };
        match client.get_zone(request).await {
            Err(status) if status.code() == Code::NotFound => return,
            Err(status) => {
                eprintln!(
                    "sporectl: could not check that zone {name} was removed: {}",
                    ctx.status_error(status)
                );
                return;
            }
            Ok(_) if Instant::now() >= deadline => {
                eprintln!(
                    "sporectl: zone {name} was not removed within {} s; see sporectl zone get {name}",
                    REMOVE_WAIT.as_secs()
                );
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, ZoneCommand, parse_zone};

    fn args(argv: &[&str]) -> LaunchArgs {
        let mut full = vec!["launch"];
        full.extend_from_slice(argv);
        match parse_zone(&full) {
            ZoneCommand::Launch(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn env(key: &str) -> Option<String> {
        (key == "FROM_HERE").then(|| "yes".to_string())
    }

    #[test]
    fn full_spec() {
        let spec = args(&[
            "-t",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "FROM_HERE",
            "-e",
            "A=2",
            "--name",
            "web",
            "--cpus",
            "2",
            "--memory",
            "1G",
            "-w",
            "/srv",
            "-u",
            "1000:1000",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:53:53/udp",
            "--no-network",
            "--kernel",
            "/k",
            "--initrd",
            "rel/initrd",
            "--kernel-arg",
            "quiet",
            "busybox",
            "httpd",
            "-f",
        ])
        .zone
        .spec(env)
        .unwrap();
        assert_eq!(spec.image, "busybox");
        assert_eq!(spec.name, "web");
        assert_eq!(spec.env, ["A=2", "FROM_HERE=yes"]);
        assert_eq!(spec.cmd.unwrap().values, ["httpd", "-f"]);
        assert_eq!(spec.entrypoint, None);
        assert_eq!((spec.vcpus, spec.memory_mib), (Some(2), Some(1024)));
        assert_eq!(
            (spec.working_dir.as_str(), spec.user.as_str()),
            ("/srv", "1000:1000")
        );
        assert!(spec.tty && spec.auto_remove && spec.network_disabled);
        assert_eq!(spec.ports.len(), 2);
        assert_eq!(spec.ports[1].protocol, v1::Protocol::Udp as i32);
        assert_eq!(spec.kernel_path, "/k");
        assert!(spec.initrd_path.starts_with('/') && spec.initrd_path.ends_with("rel/initrd"));
        assert_eq!(spec.kernel_args, ["quiet"]);
    }

    #[test]
    fn defaults_leave_choices_to_the_daemon() {
        let spec = args(&["busybox"]).zone.spec(env).unwrap();
        assert_eq!(spec.cmd, None);
        assert_eq!(spec.entrypoint, None);
        assert_eq!((spec.vcpus, spec.memory_mib), (None, None));
        assert!(spec.name.is_empty() && spec.kernel_path.is_empty());
    }

    #[test]
    fn entrypoint_drops_the_image_cmd() {
        let spec = args(&["--entrypoint", "/bin/sh", "busybox"])
            .zone
            .spec(env)
            .unwrap();
        assert_eq!(spec.entrypoint.unwrap().values, ["/bin/sh"]);
        assert_eq!(spec.cmd.unwrap().values, Vec::<String>::new());
        let spec = args(&["--entrypoint", "", "busybox", "echo"])
            .zone
            .spec(env)
            .unwrap();
        assert_eq!(spec.entrypoint.unwrap().values, Vec::<String>::new());
        assert_eq!(spec.cmd.unwrap().values, ["echo"]);
    }

    #[test]
    fn bad_values_are_refused_before_any_call() {
        let err = args(&["--cpus", "0", "busybox"])
            .zone
            .spec(env)
            .unwrap_err();
        assert!(err.to_string().contains("--cpus 0"), "{err}");
        let err = args(&["-e", "UNSET_HERE", "busybox"])
            .zone
            .spec(env)
            .unwrap_err();
        assert!(
            err.to_string().contains("\"UNSET_HERE\" is not set"),
            "{err}"
        );
        let parse = |argv: &[&str]| {
            let mut full = vec!["sporectl", "zone", "launch"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full).unwrap_err().to_string()
        };
        assert!(parse(&["--memory", "1.5G", "busybox"]).contains("invalid memory size"));
        assert!(parse(&["-p", "80", "busybox"]).contains("invalid port mapping"));
        assert!(parse(&[]).contains("<IMAGE>"));
    }
}
