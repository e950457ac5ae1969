//! `sporectl completions SHELL`: prints a completion script generated from the grammar.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

impl CompletionsArgs {
    pub fn run(self, ctx: &crate::context::Ctx) -> Result<i32> {
        ctx.out.require_raw("sporectl completions")?;
        let mut command = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "sporectl", &mut script);
        crate::output::write_stdout(&String::from_utf8_lossy(&script))?;
        Ok(0)
    }
}
