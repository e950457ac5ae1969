//! `sporenet`: the zones' network service (see docs/network.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sporenet::config::Config;
use sporenet::discovery::{self, Change};
use sporenet::link::LinkSpec;
use sporenet::service::Service;
use sporenet::zone::{PublishedPort, ZoneNet};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    version,
    about = "sporenet: userspace networking for spore's zones (gateway, proxy NAT, DNS, published ports)"
)]
struct Cli {
    /// Configuration file (every key has a default; see docs/network.md).
    #[arg(long, default_value = "/etc/spore/sporenet.toml", global = true)]
    config: PathBuf,
    /// spored's API socket [config: socket].
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Where the status JSON is written [config: status_file, where "" writes none].
    #[arg(long, global = true)]
    status_file: Option<PathBuf>,
    /// Map connections to the gateway (except DNS) to the host's loopback
    /// [config: policy.host_loopback_via_gateway].
    #[arg(long, global = true)]
    host_loopback_via_gateway: bool,
    /// DNS resolvers to forward to instead of /etc/resolv.conf's, ADDRESS:PORT; repeatable
    /// [config: dns.upstreams].
    #[arg(long = "dns-upstream", global = true)]
    dns_upstreams: Vec<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every zone spored runs (the default).
    Run {
        /// spored's state directory (where zones/<id>/net.sock are); default: as spored
        /// reports it [config: state_dir].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Serve one zone described here instead of by spored, over a tap device or a QEMU
    /// stream socket (tests and the benchmark).
    #[command(alias = "tap")]
    Zone {
        /// The tap device (it must exist; `ip tuntap add mode tap NAME`).
        #[arg(
            long,
            required_unless_present = "qemu_socket",
            conflicts_with = "qemu_socket"
        )]
        tap: Option<String>,
        /// The network namespace the tap is in: a name under /run/netns or a path.
        #[arg(long, requires = "tap")]
        netns: Option<String>,
        /// QEMU's `-netdev stream,server=on,addr.type=unix` socket to connect to.
        #[arg(long)]
        qemu_socket: Option<PathBuf>,
        /// The zone's IPv4 address with prefix.
        #[arg(long, default_value = "10.75.0.2/16")]
        ipv4: String,
        /// The zone's IPv6 address with prefix.
        #[arg(long, default_value = "fdd4:1476:6c7e::2/48")]
        ipv6: String,
        /// The zone's MAC: frames from any other are dropped.
        #[arg(long, default_value = "02:73:70:00:00:02")]
        mac: String,
        /// The gateway's IPv4 address (sporenet answers there).
        #[arg(long, default_value = "10.75.0.1")]
        gateway_ipv4: String,
        /// The gateway's IPv6 address.
        #[arg(long, default_value = "fdd4:1476:6c7e::1")]
        gateway_ipv6: String,
        /// The tap's MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// A published port, docker's syntax: [ADDRESS:]HOST_PORT:ZONE_PORT[/tcp|/udp].
        #[arg(short = 'p', long = "publish")]
        ports: Vec<PublishedPort>,
    },
    /// Print the running sporenet's status file.
    Status,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sporenet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let default_path = cli.config == std::path::Path::new("/etc/spore/sporenet.toml");
    let mut cfg = Config::load(&cli.config, !default_path)?;
    if let Some(s) = cli.socket {
        cfg.socket = s;
    }
    if let Some(s) = cli.status_file {
        cfg.status_file = s;
    }
    if cli.host_loopback_via_gateway {
        cfg.policy.host_loopback_via_gateway = true;
    }
    if !cli.dns_upstreams.is_empty() {
        cfg.dns.upstreams = cli.dns_upstreams;
    }
    let command = cli.command.unwrap_or(Command::Run { state_dir: None });
    if let Command::Status = command {
        let text = std::fs::read_to_string(&cfg.status_file).with_context(|| {
            format!(
                "cannot read {} (is sporenet running?)",
                cfg.status_file.display()
            )
        })?;
        print!("{text}");
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Run { state_dir } => {
                if let Some(d) = state_dir {
                    cfg.state_dir = d;
                }
                run(Arc::new(cfg)).await
            }
            Command::Zone {
                tap,
                netns,
                qemu_socket,
                ipv4,
                ipv6,
                mac,
                gateway_ipv4,
                gateway_ipv6,
                mtu,
                ports,
            } => {
                let link = match (tap, qemu_socket) {
                    (Some(name), _) => LinkSpec::Tap {
                        name,
                        netns: netns.map(|n| {
                            if n.contains('/') {
                                PathBuf::from(n)
                            } else {
                                PathBuf::from("/run/netns").join(n)
                            }
                        }),
                    },
                    (None, Some(path)) => LinkSpec::QemuStream { path },
                    (None, None) => anyhow::bail!("give --tap or --qemu-socket"),
                };
                let zone = ZoneNet {
                    id: "cmdline".into(),
                    name: "cmdline".into(),
                    mac: mac
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--mac {mac:?} is not a MAC"))?,
                    ipv4: ipv4
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--ipv4 {ipv4:?} is not ADDRESS/PREFIX"))?,
                    ipv6: ipv6
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--ipv6 {ipv6:?} is not ADDRESS/PREFIX"))?,
                    gateway_ipv4: gateway_ipv4.parse().context("--gateway-ipv4")?,
                    gateway_ipv6: gateway_ipv6.parse().context("--gateway-ipv6")?,
                    mtu,
                    ports,
                };
                serve_one(Arc::new(cfg), zone, link).await
            }
            Command::Status => Ok(()),
        }
    })
}

/// How often the status file is rewritten and ended zone loops are restarted.
const TEND_EVERY: Duration = Duration::from_secs(1);

async fn serve_one(cfg: Arc<Config>, zone: ZoneNet, link: LinkSpec) -> anyhow::Result<()> {
    let mut service = Service::new(cfg.clone());
    service.attach(zone, link);
    notify_ready();
    tend_until_signal(&mut service, &cfg, None).await
}

async fn run(cfg: Arc<Config>) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let (connected, first) = tokio::sync::oneshot::channel();
    let state_dir = (!cfg.state_dir.as_os_str().is_empty()).then(|| cfg.state_dir.clone());
    tokio::spawn(discovery::follow(
        cfg.socket.clone(),
        state_dir,
        tx,
        Some(connected),
    ));
    let mut service = Service::new(cfg.clone());
    let _ = first.await;
    notify_ready();
    tend_until_signal(&mut service, &cfg, Some(rx)).await
}

async fn tend_until_signal(
    service: &mut Service,
    cfg: &Config,
    mut changes: Option<tokio::sync::mpsc::Receiver<Change>>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut tick = tokio::time::interval(TEND_EVERY);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                service.tend();
                if let Err(e) = service.write_report(&cfg.status_file).await {
                    tracing::warn!("cannot write {}: {e}", cfg.status_file.display());
                }
            }
            change = async { match changes.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match change {
                    Some(change) => apply(service, cfg, change),
                    None => anyhow::bail!("discovery ended"),
                }
            }
        }
    }
    tracing::info!("stopping; zones keep running and are served again when sporenet restarts");
    service.shutdown();
    let _ = std::fs::remove_file(&cfg.status_file);
    Ok(())
}

fn apply(service: &mut Service, cfg: &Config, change: Change) {
    let net = |zone: &spore_api::v1::Zone| match ZoneNet::from_zone(zone, cfg.zone_mtu) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(zone = %zone.name, "cannot serve the zone's network: {e}");
            None
        }
    };
    match change {
        Change::Sync { state_dir, zones } => {
            let wanted = zones
                .iter()
                .filter(|z| {
                    z.status
                        .as_ref()
                        .is_some_and(|s| s.backend() == spore_api::v1::BackendKind::Qemu)
                })
                .filter_map(|z| net(z).map(|n| (n, discovery::qemu_link(&state_dir, &z.id))))
                .collect();
            service.sync(wanted);
        }
        Change::Attach { state_dir, zone } => {
            let backend = zone.status.as_ref().map(|s| s.backend());
            if backend != Some(spore_api::v1::BackendKind::Qemu) {
                tracing::info!(zone = %zone.name, "not served: only QEMU zones have a sporenet link so far");
                return;
            }
            if let Some(n) = net(&zone) {
                let link = discovery::qemu_link(&state_dir, &zone.id);
                service.attach(n, link);
            }
        }
        Change::Detach { zone_id } => service.detach(&zone_id),
    }
}

/// Tells systemd (`Type=notify`) that sporenet runs; nothing without `NOTIFY_SOCKET`.
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
    }
}
