//! One module per noun, one file per verb. Each verb has an `Args` struct (its part of the
//! grammar) and `run(self, ctx) -> Result<i32>` returning the exit code.

pub mod completions;
pub mod docker;
pub mod host;
pub mod image;
pub mod network;
pub mod zone;

use anyhow::Result;

use crate::cli::{Cli, Command, HostCommand, ImageCommand, NetworkCommand, ZoneCommand};
use crate::context::Ctx;
use crate::output::Output;

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx::new(cli.socket, Output::new(cli.output));
    match cli.command {
        Command::Zone(command) => match *command {
            ZoneCommand::Launch(args) => args.run(&ctx).await,
            ZoneCommand::List(args) => args.run(&ctx).await,
            ZoneCommand::Get(args) => args.run(&ctx).await,
            ZoneCommand::Destroy(args) => args.run(&ctx).await,
            ZoneCommand::Watch(args) => args.run(&ctx).await,
            ZoneCommand::Logs(args) => args.run(&ctx).await,
            ZoneCommand::Attach(args) => args.run(&ctx).await,
            ZoneCommand::Exec(args) => args.run(&ctx).await,
            ZoneCommand::Top(args) => args.run(&ctx).await,
            ZoneCommand::Stats(args) => args.run(&ctx).await,
            ZoneCommand::Resources(args) => args.run(&ctx).await,
        },
        Command::Image(command) => match command {
            ImageCommand::Pull(args) => args.run(&ctx).await,
            ImageCommand::Import(args) => args.run(&ctx).await,
            ImageCommand::List(args) => args.run(&ctx).await,
            ImageCommand::Rm(args) => args.run(&ctx).await,
            ImageCommand::Prune(args) => args.run(&ctx).await,
        },
        Command::Host(HostCommand::Status(args)) => args.run(&ctx).await,
        Command::Network(NetworkCommand::Reservations(args)) => args.run(&ctx).await,
        Command::Run(args) => args.run(&ctx).await,
        Command::Ps(args) => args.run(&ctx).await,
        Command::Exec(args) => args.run(&ctx).await,
        Command::Logs(args) => args.run(&ctx).await,
        Command::Rm(args) => args.run(&ctx).await,
        Command::Inspect(args) => args.run(&ctx).await,
        Command::Pull(args) => args.run(&ctx).await,
        Command::Images(args) => args.run(&ctx).await,
        Command::Rmi(args) => args.run(&ctx).await,
        Command::Top(args) => args.run(&ctx).await,
        Command::Stats(args) => args.run(&ctx).await,
        Command::Completions(args) => args.run(&ctx),
    }
}
