//! The Xen lab's driver, run inside the lab's dom0 (a static musl binary; `xenlab/tests/
//! backend.sh` builds it and `backend-dom0.sh` runs it): checks against the real hypervisor,
//! printed as `XENLAB-RESULT` lines, with a non-zero exit on the first failed check.
//!
//! ```text
//! xenlab-driver backend KERNEL INITRD ROOT_SQUASHFS WORK_DIR       the Xen backend, end to end
//! xenlab-driver adopt   KERNEL INITRD ROOT_SQUASHFS WORK_DIR       take over what `backend` left
//! xenlab-driver time    KERNEL INITRD ROOT_SQUASHFS WORK_DIR RUNS  timed zones
//! xenlab-driver peer    KERNEL INITRD ROOT_SQUASHFS WORK_DIR RUNS  timed `xl create`s
//! xenlab-driver sizes   KERNEL INITRD ROOT_SQUASHFS WORK_DIR MIB... one zone per memory size
//! xenlab-driver xs-test                                            spore-xen's xenstore client
//! xenlab-driver boot    KERNEL INITRD [--mem MIB] [--cmdline S] [--marker S] [--timeout S]
//!                       [--cache DIR] [--disk IMAGE] [--runs N]    spore-xen's builder alone
//! ```
//!
//! One file per subcommand; `lab`, `console`, `idm`, `checks` and `report` are what they
//! share.

mod adopt;
mod backend;
mod boot;
mod checks;
mod console;
mod idm;
mod lab;
mod peer;
mod report;
mod sizes;
mod time;
mod xs_test;

use anyhow::{Context, Result, anyhow};

use lab::Lab;
use report::result;

const USAGE: &str = "usage: xenlab-driver backend|adopt KERNEL INITRD ROOT WORK \
    | time|peer KERNEL INITRD ROOT WORK RUNS | sizes KERNEL INITRD ROOT WORK MIB... \
    | xs-test | boot KERNEL INITRD [options]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPORE_LOG")
        .unwrap_or_else(|_| "spore_runtime=debug,spore_xen=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => result("PASS"),
        Err(e) => {
            result(format!("FAIL {e:#}"));
            std::process::exit(1);
        }
    }
}

/// `s` as a number, or an error naming `what` it should be.
fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.parse().with_context(|| format!("{what} {s:?}"))
}

async fn run(args: &[String]) -> Result<()> {
    let lab = || Lab::new(&args[1..5]);
    match args.first().map(String::as_str) {
        Some("backend") if args.len() == 5 => backend::run(lab()).await,
        Some("adopt") if args.len() == 5 => adopt::run(lab()).await,
        Some("time") if args.len() == 6 => time::run(lab(), number(&args[5], "RUNS")?).await,
        Some("peer") if args.len() == 6 => peer::run(lab(), number(&args[5], "RUNS")?).await,
        Some("sizes") if args.len() > 5 => {
            let sizes = args[5..]
                .iter()
                .map(|a| number(a, "MIB"))
                .collect::<Result<Vec<u64>>>()?;
            sizes::run(lab(), &sizes).await
        }
        Some("xs-test") => xs_test::run().await,
        Some("boot") => boot::run(&args[1..]).await,
        _ => Err(anyhow!(USAGE)),
    }
}
