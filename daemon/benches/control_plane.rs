//! ListZones latency and spored's memory with many stored zones and many event watchers,
//! measured over the real `spored` binary and its Unix socket (issues 2 and 14, "Measure").
//! The latency measured is that of one page of [`PAGE`] zones (ListZones is paged); the whole
//! list, paged through, is measured once for comparison.
//!
//! ```text
//! cargo bench -p spored --bench control_plane [-- ZONES WATCHERS CALLS]   # 1000 100 2000
//! ```
//!
//! 1. Setup: ZONES zones are written into a fresh state directory through the daemon's own
//!    zone table (`spored::zones::Zones`, the code CreateZone and the zone drivers use): each
//!    is inserted with an address reservation and walked Pending -> Preparing -> Creating ->
//!    Starting -> Running -> Exited (every tenth Creating -> Failed instead), one durable commit
//!    per step, so the records, histories and event log look like a host that ran them. (Zones
//!    cannot be created through the API here: spored refuses CreateZone before storing
//!    anything when no backend is usable, and booting 1000 VMs under TCG is not a benchmark.)
//! 2. Floors, in this process: the same reply built from the in-memory table (what spored's
//!    handler does, without gRPC), the same with a sort key that does not clone, and from a
//!    plain redb read of the database.
//! 3. spored is started on that state directory with a backend that cannot be used (so
//!    reconcile leaves the ended zones alone) and measured: start-up time; with no watcher,
//!    ListZones, GetHostStatus (a small reply) and a ListZones that matches nothing (the
//!    handler's walk without the transfer), the whole list in pages; ListZones while WATCHERS
//!    clients replay the whole event log at once, and with WATCHERS clients connected and
//!    following; spored's RSS and threads at each step. Each ListZones call asks for the page
//!    after the previous reply's (from the first again after the last), so every page of the
//!    list is measured, not only the first.
//!
//! spored inherits this process's environment: `MALLOC_ARENA_MAX=2 cargo bench ...` measures
//! it with glibc's malloc limited to two arenas.
//!
//! Every watcher has its own connection, as separate client processes would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use spore_api::v1::{self, ZoneState};
use spored::config::NetworkConfig;
use spored::events::EventBus;
use spored::network::AddressPlan;
use spored::store::{Store, ZoneRecord};
use spored::zones::Zones;
use uuid::Uuid;

type Result<T> = anyhow::Result<T>;

/// Zones per ListZones page.
const PAGE: u32 = 100;

struct Args {
    zones: usize,
    watchers: usize,
    calls: usize,
}

fn args() -> Result<Args> {
    // `cargo bench` passes `--bench`; the numbers are the positional arguments.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("usage: control_plane [ZONES WATCHERS CALLS]: {e}"))?;
    let get = |i: usize, default| numbers.get(i).copied().unwrap_or(default);
    Ok(Args {
        zones: get(0, 1000),
        watchers: get(1, 100),
        calls: get(2, 2000).max(1),
    })
}

fn main() -> Result<()> {
    let args = args()?;
    let dir = tempfile::Builder::new()
        .prefix("spore-bench-cp.")
        .tempdir()?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let db = state_dir.join("state.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    println!(
        "spored control plane: {} zones, {} WatchEvents clients, {} ListZones calls per phase",
        args.zones, args.watchers, args.calls
    );
    let started = Instant::now();
    let last_sequence = rt.block_on(populate(&db, args.zones))?;
    let db_bytes = std::fs::metadata(&db)?.len();
    println!(
        "setup: {} zones and {last_sequence} events committed in {:.1} s ({:.0} µs per durable commit); state.db {:.1} MiB",
        args.zones,
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / last_sequence as f64,
        db_bytes as f64 / (1 << 20) as f64
    );

    floors(&db, args.calls)?;

    let socket = dir.path().join("spored.sock");
    let config = dir.path().join("spored.toml");
    // A QEMU that does not exist: no backend is usable on any host, so spored serves the API
    // and reconcile has nothing to adopt or fail (every zone has ended).
    std::fs::write(
        &config,
        "backend = \"qemu\"\n[qemu]\nbinary = \"/nonexistent/qemu-system-x86_64\"\n",
    )?;
    let log = dir.path().join("spored.log");
    let mut spored = SporedProcess::start(&socket, &state_dir, &config, &log)?;
    let result = rt.block_on(measure(&spored, &args, last_sequence));
    let status = spored.stop();
    if result.is_err() {
        eprintln!(
            "spored log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    result?;
    println!("spored stopped: {status:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------- setup

/// Writes `count` zones through the zone table; returns the last event sequence.
async fn populate(db: &Path, count: usize) -> Result<u64> {
    let store = Store::open(db, 10_000)?;
    let zones = Zones::load(store, EventBus::new(16))?;
    let plan = AddressPlan::from_config(&NetworkConfig::default())?;
    for i in 0..count {
        let record = record(i);
        let id = record.uuid();
        zones
            .insert(
                record,
                "requested image 127.0.0.1:5000/bench/app:1.0",
                Some(&plan),
            )
            .await?;
        let digest = format!("sha256:{:064x}", i);
        zones
            .transition(
                id,
                ZoneState::Preparing,
                "preparing image 127.0.0.1:5000/bench/app:1.0",
                |_| {},
            )
            .await?;
        zones
            .transition(
                id,
                ZoneState::Creating,
                format!("image 127.0.0.1:5000/bench/app:1.0 ready ({digest})"),
                |r| {
                    r.image_key = format!("{digest}/squashfs");
                    r.root_image = format!("/var/lib/spore/images/roots/{digest}.squashfs");
                    r.status_mut().image_digest = digest.clone();
                },
            )
            .await?;
        if i % 10 == 0 {
            zones
                .transition(
                    id,
                    ZoneState::Failed,
                    "qemu-system-x86_64 exited during start-up: could not allocate guest memory",
                    |_| {},
                )
                .await?;
            continue;
        }
        zones
            .transition(
                id,
                ZoneState::Starting,
                format!("VM started (qemu pid {})", 10_000 + i),
                |r| {
                    r.status_mut().domain = format!("qemu pid {}", 10_000 + i);
                },
            )
            .await?;
        zones
            .transition(
                id,
                ZoneState::Running,
                "workload started (pid 2 in the guest, 31 ms after init)",
                |_| {},
            )
            .await?;
        zones
            .transition(id, ZoneState::Exited, "workload exited with code 0", |r| {
                r.status_mut().exit = Some(v1::ExitStatus {
                    status: Some(v1::exit_status::Status::Code(0)),
                });
            })
            .await?;
    }
    Ok(zones.store().next_sequence()? - 1)
}

/// A zone as CreateZone stores it, with a spec of typical size.
fn record(i: usize) -> ZoneRecord {
    let spec = v1::ZoneSpec {
        image: "127.0.0.1:5000/bench/app:1.0".into(),
        name: format!("bench-{i:04}"),
        cmd: Some(v1::StringList {
            values: vec![
                "/usr/local/bin/server".into(),
                "--listen".into(),
                "0.0.0.0:8080".into(),
            ],
        }),
        env: vec![
            "RUST_LOG=info".into(),
            format!("INSTANCE={i}"),
            "DATABASE_URL=postgres://app@10.75.0.1/app".into(),
        ],
        working_dir: "/srv".into(),
        vcpus: Some(1),
        memory_mib: Some(256),
        ..Default::default()
    };
    let mut record = ZoneRecord::new(v1::Zone {
        id: Uuid::new_v4().to_string(),
        name: spec.name.clone(),
        spec: Some(spec),
        status: Some(v1::ZoneStatus {
            backend: v1::BackendKind::Qemu as i32,
            vcpus: 1,
            memory_mib: 256,
            ..Default::default()
        }),
    });
    record.max_vcpus = 1;
    record.max_memory_mib = 256;
    record
}

// --------------------------------------------------------------------------------- floors

/// The same reply without spored and without gRPC: built from the in-memory zone table as the
/// ListZones handler builds it (`Zones::list`: clone, sort, then encode); the same with a sort
/// key that borrows instead of cloning each zone's status (what `Zones::list` would cost with
/// that change); and from a plain redb read of the database.
fn floors(db: &Path, calls: usize) -> Result<()> {
    let store = Store::open(db, 10_000)?;
    let zones = Zones::load(store.clone(), EventBus::new(16))?;
    let encode = |records: Vec<ZoneRecord>| {
        v1::ListZonesResponse {
            zones: records.into_iter().filter_map(|r| r.zone).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    println!(
        "reply: {} bytes for {} zones",
        encode(zones.list()).len(),
        zones.list().len()
    );

    let mut table = time(calls, || Ok(encode(zones.list())))?;
    report(
        "floor: in-process, zone table as the handler does it (clone, sort, encode)",
        &mut table,
    );

    let ids: Vec<Uuid> = zones.list().iter().map(|r| r.uuid()).collect();
    let created = |r: &ZoneRecord| {
        r.zone()
            .status
            .as_ref()
            .and_then(|s| s.created_at)
            .map(|t| (t.seconds, t.nanos))
    };
    let mut borrowed = time(calls, || {
        let mut records: Vec<ZoneRecord> = ids.iter().filter_map(|id| zones.get(*id)).collect();
        records.sort_by(|a, b| {
            created(a)
                .cmp(&created(b))
                .then_with(|| a.zone().id.cmp(&b.zone().id))
        });
        Ok(encode(records))
    })?;
    report(
        "floor: in-process, zone table with a borrowed sort key (clone, sort, encode)",
        &mut borrowed,
    );

    let mut redb = time(calls, || Ok(encode(store.load_zones()?)))?;
    report(
        "floor: in-process, plain redb read (read, decode, encode)",
        &mut redb,
    );
    Ok(())
}

fn time(calls: usize, mut f: impl FnMut() -> Result<Vec<u8>>) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        std::hint::black_box(f()?);
        samples.push(t.elapsed());
    }
    Ok(samples)
}

// -------------------------------------------------------------------------------- spored

struct SporedProcess {
    child: Child,
    socket: PathBuf,
}

impl SporedProcess {
    fn start(socket: &Path, state_dir: &Path, config: &Path, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_spored"))
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut spored = SporedProcess {
            child,
            socket: socket.to_path_buf(),
        };
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Some(status) = spored.child.try_wait()? {
                anyhow::bail!(
                    "spored exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "spored did not listen on {} within 60 s",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        println!(
            "spored (pid {}) accepting calls {:.0} ms after exec",
            spored.child.id(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(spored)
    }

    fn rss(&self) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| format!("{:.1} MiB", kib as f64 / 1024.0))
                .unwrap_or_else(|| "?".into())
        };
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .map(str::trim)
            .unwrap_or("?");
        format!(
            "RSS {} (peak {}), {threads} threads",
            field("VmRSS:"),
            field("VmHWM:")
        )
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for SporedProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn measure(spored: &SporedProcess, args: &Args, last_sequence: u64) -> Result<()> {
    let mut client = spore_api::connect(&spored.socket).await?;
    let listed = whole_list(&mut client).await?;
    anyhow::ensure!(
        listed == args.zones,
        "spored lists {listed} zones, expected {}",
        args.zones
    );
    println!("spored idle: {}", spored.rss());
    let mut pages = Pages::default();
    for _ in 0..50 {
        pages.next(&mut client).await?;
    }
    let mut idle = list_zones(&mut client, &mut pages, args.calls).await?;
    report(
        &format!("spored ListZones, a page of {PAGE}, no watchers"),
        &mut idle,
    );
    let mut whole = Vec::new();
    for _ in 0..(args.calls / 10).max(1) {
        let t = Instant::now();
        whole_list(&mut client).await?;
        whole.push(t.elapsed());
    }
    report(
        &format!(
            "spored ListZones, all {} zones in pages of {PAGE}",
            args.zones
        ),
        &mut whole,
    );
    // Where the time goes: a call with a small reply, and ListZones with an empty reply (the
    // handler still walks every zone).
    let mut small = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let t = Instant::now();
        client.get_host_status(v1::GetHostStatusRequest {}).await?;
        small.push(t.elapsed());
    }
    report(
        "spored GetHostStatus (small reply), no watchers",
        &mut small,
    );
    let mut empty = Vec::with_capacity(args.calls);
    let nothing = v1::ListZonesRequest {
        states: Vec::new(),
        name: "no-such-zone".into(),
        ..Default::default()
    };
    for _ in 0..args.calls {
        let t = Instant::now();
        let reply = client.list_zones(nothing.clone()).await?.into_inner();
        anyhow::ensure!(reply.zones.is_empty(), "the name filter matched a zone");
        empty.push(t.elapsed());
    }
    report("spored ListZones matching no zone, no watchers", &mut empty);
    println!("  after: {}", spored.rss());

    // Watchers connect and replay the whole log while ListZones is being measured.
    let caught_up = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let replay_started = Instant::now();
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let mut watcher = spore_api::connect(&spored.socket).await?;
        let caught_up = caught_up.clone();
        let received = received.clone();
        let mut stream = watcher
            .watch_events(v1::WatchEventsRequest {
                from_sequence: Some(1),
                zone_id: String::new(),
            })
            .await?
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let _watcher = watcher;
            let mut expected = 1;
            while let Some(event) = stream.next().await {
                let event = event?;
                anyhow::ensure!(
                    event.sequence == expected,
                    "watcher got event {} after {}",
                    event.sequence,
                    expected - 1
                );
                expected += 1;
                received.fetch_add(1, Ordering::Relaxed);
                if event.sequence == last_sequence {
                    caught_up.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut during = Vec::new();
    loop {
        during.extend(list_zones(&mut client, &mut pages, 1).await?);
        if caught_up.load(Ordering::Relaxed) == args.watchers as u64 {
            break;
        }
        if during.len() >= args.calls * 20 {
            anyhow::bail!(
                "{} of {} watchers caught up after {} ListZones calls",
                caught_up.load(Ordering::Relaxed),
                args.watchers,
                during.len()
            );
        }
    }
    let replay = replay_started.elapsed();
    println!(
        "{} watchers replayed {} events each ({} in all) in {:.2} s",
        args.watchers,
        last_sequence,
        received.load(Ordering::Relaxed),
        replay.as_secs_f64()
    );
    report(
        &format!(
            "spored ListZones, a page of {PAGE}, while {} watchers replay",
            args.watchers
        ),
        &mut during,
    );
    println!("  after: {}", spored.rss());

    let mut following = list_zones(&mut client, &mut pages, args.calls).await?;
    report(
        &format!(
            "spored ListZones, a page of {PAGE}, {} watchers connected and following",
            args.watchers
        ),
        &mut following,
    );
    println!("  after: {}", spored.rss());
    for watcher in &watchers {
        anyhow::ensure!(!watcher.is_finished(), "a watcher's stream ended early");
    }
    for watcher in watchers {
        watcher.abort();
    }
    Ok(())
}

/// Walks the list page by page, starting over after the last page.
#[derive(Default)]
struct Pages {
    token: String,
}

impl Pages {
    async fn next(&mut self, client: &mut spore_api::ControlClient) -> Result<usize> {
        let reply = client
            .list_zones(v1::ListZonesRequest {
                page_size: PAGE,
                page_token: std::mem::take(&mut self.token),
                ..Default::default()
            })
            .await?
            .into_inner();
        self.token = reply.next_page_token;
        Ok(reply.zones.len())
    }
}

async fn list_zones(
    client: &mut spore_api::ControlClient,
    pages: &mut Pages,
    calls: usize,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        std::hint::black_box(pages.next(client).await?);
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Every zone, in pages; returns how many.
async fn whole_list(client: &mut spore_api::ControlClient) -> Result<usize> {
    let mut pages = Pages::default();
    let mut zones = pages.next(client).await?;
    while !pages.token.is_empty() {
        zones += pages.next(client).await?;
    }
    Ok(zones)
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    println!(
        "{what}: n={} p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
