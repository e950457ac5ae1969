//! spored: the spore daemon. See `spored --help` and docs/configuration.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spored::config::{BackendChoice, Config, LogFormat};

/// The spore daemon: runs OCI images as Xen (or QEMU) VMs and serves the spore.v1 API on a
/// Unix socket.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (every key optional) [default: /etc/spore/spored.toml, if present].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Control socket (overrides `socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// State directory (overrides `state_dir`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Backend (overrides `backend`).
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// Log format (overrides `log_format`); the level comes from RUST_LOG (default info).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

const DEFAULT_CONFIG: &str = "/etc/spore/spored.toml";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spored: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG), false)?,
    };
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    if let Some(backend) = args.backend {
        config.backend = backend;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    init_logging(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(spored::server::run(config))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
