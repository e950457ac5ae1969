//! sporectl: the command-line client of spored.
//!
//! Every subcommand lives in its own file under `commands/`; they share one connection helper
//! ([`context`]), one output formatter that knows table, JSON and YAML ([`output`]), the
//! argument parsers ([`parse`]), the human renderings ([`human`]) and the interactive console
//! loop ([`console`]).
//!
//! Exit codes: 0 on success, 1 on error. Commands that stand in for a workload (`zone launch
//! --attach`, `zone attach`, `zone exec`) exit with the workload's own status (a signal death
//! maps to 128 + the signal, as in a shell) and with 125 when spore itself fails, so a
//! script can tell the two apart.

use std::io::Write;

pub mod cli;
pub mod commands;
pub mod console;
pub mod context;
pub mod human;
pub mod output;
pub mod parse;
pub mod term;

pub use cli::Cli;

/// Exit status when sporectl (not a workload) fails.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of the workload-forwarding commands when spore itself fails (as docker does).
pub const EXIT_SPORE_FAILURE: i32 = 125;

/// Parses the process's arguments. `--help` and `--version` print and exit 0; a usage error
/// prints clap's message and exits 1 (the CLI's single error code, not clap's 2).
pub fn parse_args() -> Cli {
    use clap::Parser as _;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { EXIT_FAILURE } else { 0 };
            let _ = err.print();
            exit(code)
        }
    }
}

/// Runs one parsed command line to completion and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(commands::run(cli))
}

/// Prints an error as one line: the message and its causes, joined by ": ".
pub fn report_error(err: &anyhow::Error) {
    // Progress bars or partial output may have left the cursor mid-line.
    let _ = std::io::stdout().flush();
    eprintln!("sporectl: {err:#}");
}

/// Flushes stdout and ends the process. Threads blocked on stdin are not waited for.
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}
