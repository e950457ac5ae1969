//! The command-line grammar: global options and the noun/verb tree. Each verb's arguments are
//! defined beside its implementation in `commands/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{completions, docker, host, image, network, zone};
use crate::output::Format;

/// sporectl: run OCI images as lightweight VMs ("zones") through spored.
#[derive(Debug, Parser)]
#[command(
    name = "sporectl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// spored's control socket.
    #[arg(
        long,
        global = true,
        env = "SPORE_SOCKET",
        default_value = spore_api::DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    /// Output format: human tables, or the API's messages as JSON or YAML (proto3 JSON mapping).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch, inspect and control zones.
    #[command(subcommand)]
    Zone(Box<ZoneCommand>),
    /// Pull, import, list and remove images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The host spored runs on.
    #[command(subcommand)]
    Host(HostCommand),
    /// Zone networking.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Create a zone and attach to it (docker run; -d: in the background).
    Run(Box<docker::run::RunArgs>),
    /// List zones that have not ended (docker ps; -a: all).
    Ps(docker::ps::PsArgs),
    /// Run a further command in a running zone (zone exec).
    Exec(zone::exec::ExecArgs),
    /// Print a zone's console log (zone logs).
    Logs(zone::logs::LogsArgs),
    /// Remove ended zones (docker rm; -f: running ones too).
    Rm(docker::rm::RmArgs),
    /// Show one zone in detail (zone get).
    Inspect(zone::get::GetArgs),
    /// Pull an image (image pull).
    Pull(image::pull::PullArgs),
    /// List cached images (image list).
    Images(image::list::ListArgs),
    /// Remove cached images (image rm).
    Rmi(image::rm::RmArgs),
    /// Show a zone's resource use and processes (zone top).
    Top(zone::top::TopArgs),
    /// CPU, memory and processes of every running zone (docker stats).
    Stats(zone::stats::StatsArgs),
    /// Print a shell completion script (e.g. `sporectl completions bash > /etc/bash_completion.d/sporectl`).
    Completions(completions::CompletionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Create a zone from an image and start it; optionally attach to its console.
    Launch(zone::launch::LaunchArgs),
    /// List zones: every stored one, exited and failed included.
    #[command(visible_alias = "ls")]
    List(zone::list::ListArgs),
    /// Show one zone in detail, with its state history.
    #[command(visible_alias = "inspect")]
    Get(zone::get::GetArgs),
    /// Stop zones and remove them with everything they hold.
    #[command(visible_alias = "rm")]
    Destroy(zone::destroy::DestroyArgs),
    /// Follow the daemon's events (zone state changes, image changes), one line each.
    Watch(zone::watch::WatchArgs),
    /// Print a zone's console log.
    Logs(zone::logs::LogsArgs),
    /// Attach to a running zone's console (Ctrl+] detaches).
    Attach(zone::attach::AttachArgs),
    /// Run a further command inside a running zone.
    Exec(zone::exec::ExecArgs),
    /// Show a zone's resource use and processes, refreshing.
    Top(zone::top::TopArgs),
    /// CPU, memory and processes of every running zone, refreshing.
    Stats(zone::stats::StatsArgs),
    /// Change a running zone's vCPUs or memory.
    Resources(zone::resources::ResourcesArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry into the daemon's cache.
    Pull(image::pull::PullArgs),
    /// Import an image from a `docker save` tar, an oci-archive tar or an OCI layout directory.
    Import(image::import::ImportArgs),
    /// List cached images.
    #[command(visible_alias = "ls")]
    List(image::list::ListArgs),
    /// Remove cached images.
    Rm(image::rm::RmArgs),
    /// Remove every cached image no zone uses.
    Prune(image::prune::PruneArgs),
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Version, backend (and why), probes, CPUs, memory, zone counts and the guest bundle.
    Status(host::status::StatusArgs),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Addresses reserved for zones.
    Reservations(network::reservations::ReservationsArgs),
}

impl Cli {
    /// The exit code for a failure of spore itself while running this command: commands that
    /// forward a workload's exit status use 125 so it cannot be mistaken for the workload's.
    pub fn failure_code(&self) -> i32 {
        match &self.command {
            Command::Zone(zone) => match zone.as_ref() {
                ZoneCommand::Launch(args) if args.attach => crate::EXIT_SPORE_FAILURE,
                ZoneCommand::Attach(_) | ZoneCommand::Exec(_) => crate::EXIT_SPORE_FAILURE,
                _ => crate::EXIT_FAILURE,
            },
            Command::Run(args) if !args.detach => crate::EXIT_SPORE_FAILURE,
            Command::Exec(_) => crate::EXIT_SPORE_FAILURE,
            _ => crate::EXIT_FAILURE,
        }
    }
}

/// Parses `sporectl zone ARGS...` (for the verbs' unit tests).
#[cfg(test)]
pub fn parse_zone(args: &[&str]) -> ZoneCommand {
    let mut argv = vec!["sporectl", "zone"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Zone(zone),
            ..
        }) => *zone,
        other => panic!("{args:?} parsed as {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            assert!(cmd.get_about().is_some(), "`{path}` has no help text");
            for arg in cmd.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`{path}` argument {} has no help",
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &path);
                }
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                walk(sub, "sporectl");
            }
        }
    }

    #[test]
    fn launch_takes_hyphenated_trailing_args() {
        let cli = Cli::try_parse_from([
            "sporectl", "zone", "launch", "-a", "--rm", "busybox", "ls", "-la", "--name", "x",
        ])
        .unwrap();
        let Command::Zone(zone) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        let ZoneCommand::Launch(args) = *zone else {
            panic!("parsed as {zone:?}")
        };
        assert_eq!(args.zone.image, "busybox");
        assert_eq!(args.zone.command, ["ls", "-la", "--name", "x"]);
        assert!(args.attach && args.zone.remove);
        assert_eq!(args.zone.name, None);
    }

    #[test]
    fn failure_code_is_125_only_for_workload_commands() {
        let code = |args: &[&str]| Cli::try_parse_from(args).unwrap().failure_code();
        assert_eq!(code(&["sporectl", "zone", "launch", "-a", "busybox"]), 125);
        assert_eq!(code(&["sporectl", "zone", "launch", "busybox"]), 1);
        assert_eq!(code(&["sporectl", "zone", "exec", "z", "true"]), 125);
        assert_eq!(code(&["sporectl", "zone", "attach", "z"]), 125);
        assert_eq!(code(&["sporectl", "zone", "list"]), 1);
        assert_eq!(code(&["sporectl", "run", "busybox"]), 125);
        assert_eq!(code(&["sporectl", "run", "-d", "busybox"]), 1);
        assert_eq!(code(&["sporectl", "exec", "z", "true"]), 125);
        assert_eq!(code(&["sporectl", "ps"]), 1);
    }

    #[test]
    fn socket_comes_from_flag_then_default() {
        let cli =
            Cli::try_parse_from(["sporectl", "--socket", "/tmp/x.sock", "host", "status"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        let cli = Cli::try_parse_from(["sporectl", "host", "status", "-o", "json"]).unwrap();
        assert_eq!(cli.output, Format::Json);
    }
}
