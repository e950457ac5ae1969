//! The Xen backend against the real hypervisor, run inside a Xen dom0 (the Xen lab,
//! `xenlab/tests/backend.sh`): zones from the guest bundle and a busybox squashfs, driven
//! only through the `Backend` trait, with results as `XENLAB-RESULT` lines and a non-zero
//! exit on the first failed check. `peer` times `xl create` of the same kernel, initrd and
//! disks for comparison.
//!
//! ```text
//! xen_lab backend KERNEL INITRD ROOT_SQUASHFS WORK_DIR
//! xen_lab time    KERNEL INITRD ROOT_SQUASHFS WORK_DIR RUNS
//! xen_lab peer    KERNEL INITRD ROOT_SQUASHFS WORK_DIR RUNS
//! xen_lab adopt   KERNEL INITRD ROOT_SQUASHFS WORK_DIR
//! xen_lab sizes   KERNEL INITRD ROOT_SQUASHFS WORK_DIR MIB...
//! ```
//!
//! `backend` ends with one zone left running; `adopt`, in a new process, takes it over
//! (list, console, IDM) and destroys it.
//!
//! `sizes` boots one zone per memory size (MiB) and says whether its workload ran.
//!
//! `time` and `peer` boot the same guest with the same devices (root image on xvda, config
//! block on xvdb, a vif; `peer` puts the vif on bridge `xenbr0`, which must exist) and print,
//! per run, from the request: until the domain runs (spore: `create` returns; xl: `xl create`
//! returns) and until the first console byte (spore: the console stream; xl: xenconsoled's
//! log, so xenconsoled must run).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{SinkExt, StreamExt};
use spore_idm::launch::*;
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{ExitStatus, IdmCodec, IdmPacket};
use spore_runtime::xen::{XenBackend, XenConfig};
use spore_runtime::{Backend, ByteStream, Error, LaunchSpec, NicSpec, Resources, StopReason};
use spore_xen::xs::XsClient;
use spore_xen::{Hypervisor, PrivCmd};
use tokio::io::AsyncReadExt;
use tokio_util::codec::Framed;
use uuid::Uuid;

const BOOT: Duration = Duration::from_secs(240);

fn result(line: impl std::fmt::Display) {
    println!("XENLAB-RESULT {line}");
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Resident memory in words: total, anonymous (the process's own), file and shmem (mapped
/// files, e.g. the kernel: page cache shared with every other mapping of the file; shmem when
/// the file is on tmpfs).
fn rss_breakdown() -> String {
    format!(
        "rss_kib={} rss_anon_kib={} rss_file_kib={} rss_shmem_kib={}",
        status_kib("VmRSS:"),
        status_kib("RssAnon:"),
        status_kib("RssFile:"),
        status_kib("RssShmem:")
    )
}

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
    let r = match args.first().map(String::as_str) {
        Some("backend") if args.len() == 5 => backend_test(Lab::new(&args[1..5])).await,
        Some("adopt") if args.len() == 5 => adopt(Lab::new(&args[1..5])).await,
        Some(cmd @ ("time" | "peer")) if args.len() == 6 => match args[5].parse() {
            Ok(runs) if cmd == "time" => time(Lab::new(&args[1..5]), runs).await,
            Ok(runs) => peer(Lab::new(&args[1..5]), runs).await,
            Err(e) => Err(anyhow::anyhow!("RUNS: {e}")),
        },
        Some("sizes") if args.len() > 5 => {
            let sizes: Result<Vec<u64>, _> = args[5..].iter().map(|a| a.parse()).collect();
            match sizes {
                Ok(sizes) => sizes_test(Lab::new(&args[1..5]), &sizes).await,
                Err(e) => Err(anyhow::anyhow!("MIB: {e}")),
            }
        }
        _ => Err(anyhow::anyhow!(
            "usage: xen_lab backend KERNEL INITRD ROOT WORK | time|peer KERNEL INITRD ROOT WORK RUNS"
        )),
    };
    match r {
        Ok(()) => result("PASS"),
        Err(e) => {
            result(format!("FAIL {e:#}"));
            std::process::exit(1);
        }
    }
}

struct Lab {
    kernel: PathBuf,
    initrd: PathBuf,
    root: PathBuf,
    root_size: u64,
    zones: PathBuf,
    kernels: PathBuf,
}

impl Lab {
    fn new(a: &[String]) -> Lab {
        let work = PathBuf::from(&a[3]);
        let root = PathBuf::from(&a[2]);
        let root_size = std::fs::metadata(&root).map(|m| m.len()).unwrap_or(0);
        Lab {
            kernel: a[0].clone().into(),
            initrd: a[1].clone().into(),
            root,
            root_size,
            zones: work.join("zones"),
            kernels: work.join("kernels"),
        }
    }

    fn config(&self) -> XenConfig {
        XenConfig {
            guest_kernel: Some(self.kernel.clone()),
            guest_initrd: Some(self.initrd.clone()),
            kernel_cache: self.kernels.clone(),
            idm_timeout: BOOT,
            ..XenConfig::new(&self.zones)
        }
    }

    /// A zone running `sh -c script`, its config block written into its zone directory.
    fn spec(&self, name: &str, script: &str) -> Result<LaunchSpec> {
        let zone_id = Uuid::new_v4();
        let zone_dir = self.zones.join(zone_id.to_string());
        std::fs::create_dir_all(&zone_dir)?;
        let launch = LaunchConfig {
            version: LAUNCH_CONFIG_VERSION,
            zone_id: zone_id.to_string(),
            hostname: name.into(),
            root: RootImage {
                format: spore_idm::launch::RootFormat::Squashfs,
                size_bytes: self.root_size,
            },
            overlay_size_mib: 16,
            image: ImageConfig {
                cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/bin".into()],
                ..Default::default()
            },
            overrides: Overrides::default(),
            network: None,
            hosts: vec![],
            rlimits: vec![],
            verbose: false,
        };
        let config_block = zone_dir.join("config.blk");
        spore_idm::config_block::write_to(&config_block, &launch)?;
        Ok(LaunchSpec {
            zone_id,
            name: name.into(),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            kernel_cmdline: "console=hvc0 quiet".into(),
            root_image: self.root.clone(),
            root_format: spore_runtime::RootFormat::Squashfs,
            config_block,
            vcpus: 1,
            memory_mib: 128,
            zone_dir,
            nic: None,
        })
    }
}

/// Console output collected by a reader task, with the arrival time of every chunk.
#[derive(Clone, Default)]
struct Console {
    text: Arc<Mutex<String>>,
    first: Arc<Mutex<Option<Instant>>>,
    /// (arrival, length of `text` after the chunk)
    chunks: Arc<Mutex<Vec<(Instant, usize)>>>,
}

impl Console {
    fn spawn(mut stream: Box<dyn ByteStream>) -> Console {
        let c = Console::default();
        let out = c.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                out.first.lock().unwrap().get_or_insert(now);
                let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                for line in s.lines() {
                    println!("GUEST| {line}");
                }
                let mut text = out.text.lock().unwrap();
                text.push_str(&s);
                out.chunks.lock().unwrap().push((now, text.len()));
            }
        });
        c
    }

    fn contains(&self, s: &str) -> bool {
        self.text.lock().unwrap().contains(s)
    }

    /// When `s` arrived (its last byte), if it has.
    fn time_of(&self, s: &str) -> Option<Instant> {
        let end = self.text.lock().unwrap().find(s)? + s.len();
        let chunks = self.chunks.lock().unwrap();
        chunks.iter().find(|(_, len)| *len >= end).map(|(t, _)| *t)
    }

    async fn wait_for(&self, s: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.contains(s) {
            ensure!(
                Instant::now() < deadline,
                "console never showed {s:?} in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// The guest kernel's line when it starts the initrd's /init (its boot is done).
const RUN_INIT: &str = "Run /init as init process";
/// The timed runs boot without `quiet`: the first console byte is the kernel's first line,
/// under spore and under xl alike.
const TIMED_CMDLINE: &str = "console=hvc0";

type Idm = Framed<Box<dyn ByteStream>, IdmCodec>;

async fn next_body(idm: &mut Idm, what: &str) -> Result<Body> {
    loop {
        let packet = tokio::time::timeout(BOOT, idm.next())
            .await
            .with_context(|| format!("no IDM packet ({what}) within {BOOT:?}"))?
            .with_context(|| format!("IDM closed while waiting for {what}"))?
            .context("IDM stream")?
            .context("IDM packet")?;
        if let Some(body) = packet.body {
            return Ok(body);
        }
    }
}

async fn expect_started(idm: &mut Idm) -> Result<()> {
    match next_body(idm, "Started").await? {
        Body::Started(s) => {
            ensure!(s.workload_pid > 1, "{s:?}");
            Ok(())
        }
        other => bail!("expected Started, got {other:?}"),
    }
}

/// The workload's Exit with `code`, acknowledged as spored does: spore-init powers off only
/// after the ack.
async fn expect_exit(idm: &mut Idm, code: i32) -> Result<()> {
    match next_body(idm, "Exit").await? {
        Body::Exit(e) => {
            ensure!(
                e.status() == Some(ExitStatus::Code(code)),
                "exit {:?}, want {code}",
                e.status()
            );
            idm.send(IdmPacket::event(Body::ExitAck(proto::ExitAck {})))
                .await
                .context("sending ExitAck")?;
            Ok(())
        }
        other => bail!("expected Exit, got {other:?}"),
    }
}

/// Reads a zone's IDM in the background and acknowledges every Exit, as spored does, so the
/// guest powers off once its workload ended.
fn ack_exits(stream: Box<dyn ByteStream>) -> tokio::task::JoinHandle<()> {
    let mut idm: Idm = Framed::new(stream, IdmCodec::new());
    tokio::spawn(async move {
        while let Some(item) = idm.next().await {
            let Ok(item) = item else { break };
            if let Ok(IdmPacket {
                body: Some(Body::Exit(_)),
                ..
            }) = item
            {
                let ack = IdmPacket::event(Body::ExitAck(proto::ExitAck {}));
                if idm.send(ack).await.is_err() {
                    break;
                }
            }
        }
    })
}

fn domid_of(info: &spore_runtime::DomainInfo) -> Result<u16> {
    info.handle
        .strip_prefix("domid ")
        .and_then(|d| d.split(' ').next()?.parse().ok())
        .with_context(|| format!("handle {:?}", info.handle))
}

/// The loop devices blkback serves the domain's disks from (our own backend nodes).
fn loops_of(domid: u16) -> Result<Vec<String>> {
    let mut xs = XsClient::open()?;
    let mut out = Vec::new();
    for devid in [51712, 51728] {
        let p = format!("/local/domain/0/backend/vbd/{domid}/{devid}/params");
        if let Some(v) = xs.read_string(&p)? {
            out.push(v.trim_start_matches("/dev/").to_string());
        }
    }
    Ok(out)
}

/// The trust rule in xenstored itself: backend nodes and our keys are dom0's (the guest may
/// only read them), frontend nodes are the guest's.
fn check_perms(domid: u16) -> Result<()> {
    use spore_xen::xs::{Access, Perm};
    let mut xs = XsClient::open()?;
    let dom0 = vec![Perm::new(0, Access::None), Perm::new(domid, Access::Read)];
    let guest = vec![Perm::new(domid, Access::None), Perm::new(0, Access::Read)];
    for (path, want) in [
        (
            format!("/local/domain/0/backend/vbd/{domid}/51712/physical-device"),
            &dom0,
        ),
        (
            format!("/local/domain/0/backend/vbd/{domid}/51728/state"),
            &dom0,
        ),
        (
            format!("/local/domain/0/backend/console/{domid}/1/state"),
            &dom0,
        ),
        (format!("/local/domain/{domid}/spore/zone"), &dom0),
        (format!("/local/domain/{domid}/console/port"), &dom0),
        (
            format!("/local/domain/{domid}/device/vbd/51712/state"),
            &guest,
        ),
        (
            format!("/local/domain/{domid}/device/console/1/backend"),
            &guest,
        ),
    ] {
        let got = xs.get_perms(&path)?;
        ensure!(got == *want, "{path}: permissions {got:?}, want {want:?}");
    }
    result("xenstore_permissions=OK");
    Ok(())
}

/// Every domain Xen knows.
fn store_domains(hv: &PrivCmd) -> Result<Vec<spore_xen::DomainInfo>> {
    Ok(hv.list_domains(0, 1024)?)
}

/// Asserts that nothing of the zone's domain is left: domain, xenstore nodes, loop devices.
async fn assert_clean(zone: Uuid, domid: u16, loops: &[String]) -> Result<()> {
    let hv = PrivCmd::open()?;
    let alive = store_domains(&hv)?
        .iter()
        .any(|d| d.domid == domid && d.handle == *zone.as_bytes());
    ensure!(!alive, "domain {domid} still exists");
    let mut xs = XsClient::open()?;
    let mut left = Vec::new();
    for p in [
        format!("/local/domain/{domid}"),
        format!("/vm/{zone}"),
        format!("/local/domain/0/backend/vbd/{domid}"),
        format!("/local/domain/0/backend/vif/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
    ] {
        if xs.read(&p)?.is_some() {
            left.push(p);
        }
    }
    ensure!(left.is_empty(), "xenstore nodes left: {left:?}");
    // Autoclear detaches a loop device once blkback lets go: allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    for lo in loops {
        let f = format!("/sys/block/{lo}/loop/backing_file");
        while Path::new(&f).exists() {
            ensure!(Instant::now() < deadline, "{lo} is still attached");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ensure!(
        !Path::new(&format!("/sys/bus/xen-backend/devices/vbd-{domid}-51712")).exists(),
        "blkback still has vbd-{domid}-51712"
    );
    Ok(())
}

async fn backend_test(lab: Lab) -> Result<()> {
    let t = Instant::now();
    let backend = XenBackend::new(lab.config())?;
    result(format!(
        "backend_new_ms={} xen={} min_memory_mib={}",
        t.elapsed().as_millis(),
        backend.xen_version(),
        backend.limits().min_memory_mib
    ));
    ensure!(backend.list().await?.is_empty(), "no zones at start");
    let anon_at_start = status_kib("RssAnon:");
    result(format!("at_start {}", rss_breakdown()));

    // Too little memory is refused with the minimum in the message.
    let mut small = lab.spec("small", "true")?;
    small.memory_mib = backend.limits().min_memory_mib - 1;
    let e = backend.create(&small).await.unwrap_err();
    ensure!(
        matches!(e, Error::InvalidSpec { .. })
            && e.to_string()
                .contains(&format!("{} MiB", backend.limits().min_memory_mib)),
        "{e}"
    );
    result(format!("too_small_refused=OK msg={e}"));

    // 1. A zone prints, says Started and Exit(0), powers off.
    let spec = lab.spec("hello", "echo hello from the xen zone; exit 0")?;
    let rss0 = rss_kib();
    let req = Instant::now();
    let info = backend.create(&spec).await?;
    let to_unpause = req.elapsed();
    let domid = domid_of(&info)?;
    let console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = Framed::new(backend.open_idm(spec.zone_id).await?, IdmCodec::new());
    expect_started(&mut idm).await?;
    let to_started = req.elapsed();
    expect_exit(&mut idm, 0).await?;
    let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
    ensure!(stop.reason == StopReason::Poweroff, "{stop:?}");
    console.wait_for("hello from the xen zone", BOOT).await?;
    let first = console.first.lock().unwrap().context("no console output")?;
    result(format!(
        "zone1 domid={domid} request_to_unpause_ms={} request_to_first_console_ms={} request_to_started_ms={} stop={:?}",
        to_unpause.as_millis(),
        first.duration_since(req).as_millis(),
        to_started.as_millis(),
        stop.reason
    ));
    let listed = backend.list().await?;
    ensure!(
        listed
            .iter()
            .any(|d| d.zone_id == spec.zone_id && !d.running),
        "a powered-off domain is listed as not running: {listed:?}"
    );
    let loops = loops_of(domid)?;
    ensure!(loops.len() == 2, "two loop devices, got {loops:?}");
    check_perms(domid)?;
    backend.destroy(spec.zone_id).await?;
    assert_clean(spec.zone_id, domid, &loops).await?;
    backend.destroy(spec.zone_id).await?; // idempotent
    ensure!(
        std::fs::read_dir(&spec.zone_dir)?.count() == 1,
        "only the config block is left in the zone directory"
    );
    result(format!(
        "zone1_output_exit0_poweroff_destroy=OK rss_after_first_zone_kib={}",
        rss_kib().saturating_sub(rss0)
    ));

    // 2. Exit code 7.
    let spec = lab.spec("seven", "echo seven; exit 7")?;
    let info = backend.create(&spec).await?;
    let domid = domid_of(&info)?;
    let _console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = Framed::new(backend.open_idm(spec.zone_id).await?, IdmCodec::new());
    expect_started(&mut idm).await?;
    expect_exit(&mut idm, 7).await?;
    let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
    ensure!(stop.reason == StopReason::Poweroff, "{stop:?}");
    let loops = loops_of(domid)?;
    backend.destroy(spec.zone_id).await?;
    assert_clean(spec.zone_id, domid, &loops).await?;
    result("zone2_exit7=OK");

    // 2b. The smallest zone the backend accepts boots and runs its workload.
    let mut spec = lab.spec("smallest", "echo smallest; exit 0")?;
    spec.memory_mib = backend.limits().min_memory_mib;
    let info = backend.create(&spec).await?;
    let domid = domid_of(&info)?;
    let console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = Framed::new(backend.open_idm(spec.zone_id).await?, IdmCodec::new());
    expect_started(&mut idm).await?;
    expect_exit(&mut idm, 0).await?;
    console.wait_for("smallest", BOOT).await?;
    tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
    let loops = loops_of(domid)?;
    backend.destroy(spec.zone_id).await?;
    assert_clean(spec.zone_id, domid, &loops).await?;
    result(format!(
        "smallest_zone_boots=OK memory_mib={}",
        spec.memory_mib
    ));

    // 3. Three long-running zones at once (one with two vCPUs, one with a NIC).
    let ticker = "echo up; while true; do echo tick; sleep 1; done";
    let mut specs = Vec::new();
    for i in 0..3 {
        let mut s = lab.spec(&format!("ticker{i}"), ticker)?;
        if i == 1 {
            s.vcpus = 2;
        }
        if i == 2 {
            s.nic = Some(NicSpec {
                mac: "00:16:3e:5a:00:02".into(),
            });
        }
        specs.push(s);
    }
    let rss_before = rss_kib();
    let anon_before = status_kib("RssAnon:");
    result(format!("before_three_zones {}", rss_breakdown()));
    let mut held = Vec::new();
    for s in &specs {
        let req = Instant::now();
        let info = backend.create(s).await?;
        let console = Console::spawn(backend.open_console(s.zone_id).await?);
        let idm = Framed::new(backend.open_idm(s.zone_id).await?, IdmCodec::new());
        held.push((req, domid_of(&info)?, console, idm));
    }
    for (i, (req, _, console, idm)) in held.iter_mut().enumerate() {
        expect_started(idm).await?;
        console.wait_for("tick", BOOT).await?;
        result(format!(
            "ticker{i} started_ms={}",
            req.elapsed().as_millis()
        ));
    }
    let rss_after = rss_kib();
    result(format!(
        "three_zones_running=OK {} per_domain_rss_kib={} per_domain_anon_kib={} per_domain_anon_since_start_kib={}",
        rss_breakdown(),
        rss_after.saturating_sub(rss_before) / 3,
        status_kib("RssAnon:").saturating_sub(anon_before) / 3,
        status_kib("RssAnon:").saturating_sub(anon_at_start) / 3
    ));
    let listed = backend.list().await?;
    ensure!(
        listed.len() == 3 && listed.iter().all(|d| d.running),
        "{listed:?}"
    );

    // The NIC: netback made vif<domid>.0 and connected.
    let nic_domid = held[2].1;
    let vif = format!("/sys/class/net/vif{nic_domid}.0");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut xs = XsClient::open()?;
    let state = format!("/local/domain/0/backend/vif/{nic_domid}/0/state");
    while !(Path::new(&vif).exists() && xs.read_string(&state)?.as_deref() == Some("4")) {
        ensure!(
            Instant::now() < deadline,
            "vif{nic_domid}.0 not connected (backend state {:?})",
            xs.read_string(&state)?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result(format!("vif=OK vif{nic_domid}.0 backend_state=4"));

    // Resources: take the two-vCPU zone down to one vCPU and a smaller balloon target.
    let two = &specs[1];
    let two_domid = held[1].1;
    let e = backend
        .update_resources(
            two.zone_id,
            Resources {
                vcpus: 3,
                memory_mib: 128,
            },
        )
        .await
        .unwrap_err();
    ensure!(e.to_string().contains("1 to 2 can be online"), "{e}");
    backend
        .update_resources(
            two.zone_id,
            Resources {
                vcpus: 1,
                memory_mib: 100,
            },
        )
        .await?;
    let hv = PrivCmd::open()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = hv.domain_info(two_domid)?;
        if i.online_vcpus == 1 && i.tot_pages <= 100 * 256 + 256 {
            result(format!(
                "update_resources=OK online_vcpus={} tot_pages={}",
                i.online_vcpus, i.tot_pages
            ));
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "guest did not follow: online_vcpus={} tot_pages={}",
            i.online_vcpus,
            i.tot_pages
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 4. Re-adoption: this backend goes away (as spored would), a fresh one takes over.
    let ids: Vec<Uuid> = specs.iter().map(|s| s.zone_id).collect();
    let domids: Vec<u16> = held.iter().map(|h| h.1).collect();
    drop(held);
    drop(backend);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let backend = XenBackend::new(lab.config())?;
    let listed = backend.list().await?;
    ensure!(
        listed.len() == 3 && listed.iter().all(|d| d.running && ids.contains(&d.zone_id)),
        "fresh backend lists {listed:?}"
    );
    let console = Console::spawn(backend.open_console(ids[0]).await?);
    console.wait_for("tick", Duration::from_secs(30)).await?;
    let mut idm = Framed::new(backend.open_idm(ids[0]).await?, IdmCodec::new());
    idm.send(IdmPacket::request(5, Body::Ping(proto::Ping { nonce: 77 })))
        .await?;
    match next_body(&mut idm, "Pong").await? {
        Body::Pong(p) => ensure!(p.nonce == 77, "{p:?}"),
        other => bail!("expected Pong, got {other:?}"),
    }
    // Opening again in the same process replaces the old connection.
    let again = Console::spawn(backend.open_console(ids[0]).await?);
    again.wait_for("tick", Duration::from_secs(30)).await?;
    result("readopt_list_console_idm=OK");

    // 5. Destroy while running.
    let loops = loops_of(domids[0])?;
    let t = Instant::now();
    backend.destroy(ids[0]).await?;
    let destroy_ms = t.elapsed().as_millis();
    assert_clean(ids[0], domids[0], &loops).await?;
    result(format!("destroy_running=OK destroy_ms={destroy_ms}"));

    // 6. A domain killed behind spore's back: wait_stopped says Killed.
    let waiter = {
        let b = backend.clone();
        let id = ids[1];
        tokio::spawn(async move { b.wait_stopped(id).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !waiter.is_finished(),
        "wait_stopped returned for a running zone"
    );
    let loops = loops_of(domids[1])?;
    hv.destroy(domids[1])?;
    let stop = tokio::time::timeout(Duration::from_secs(30), waiter).await???;
    ensure!(stop.reason == StopReason::Killed, "{stop:?}");
    backend.destroy(ids[1]).await?;
    assert_clean(ids[1], domids[1], &loops).await?;
    result(format!("killed_outside=OK detail={:?}", stop.detail));

    // 7. A guest kernel crash: wait_stopped says Crash.
    let spec = lab.spec("crash", "echo c > /proc/sysrq-trigger; sleep 60")?;
    let info = backend.create(&spec).await?;
    let domid = domid_of(&info)?;
    let _console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let _idm = backend.open_idm(spec.zone_id).await?;
    let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
    let loops = loops_of(domid)?;
    backend.destroy(spec.zone_id).await?;
    assert_clean(spec.zone_id, domid, &loops).await?;
    result(format!(
        "crash stop={:?} detail={:?}",
        stop.reason, stop.detail
    ));
    ensure!(stop.reason == StopReason::Crash, "{stop:?}");

    // The last ticker, then nothing is left.
    let loops = loops_of(domids[2])?;
    backend.destroy(ids[2]).await?;
    assert_clean(ids[2], domids[2], &loops).await?;
    ensure!(
        !Path::new(&format!("/sys/class/net/vif{}.0", domids[2])).exists(),
        "vif{}.0 is left",
        domids[2]
    );
    ensure!(backend.list().await?.is_empty(), "zones left");
    result("all_destroyed=OK");

    // 8. Half-built: a domain built but never introduced (spored died in between) is listed as
    // ours and not running, and destroy removes it.
    let spec = lab.spec("half-built", "true")?;
    let kernel = spore_xen::kernel::KernelImage::load(&lab.kernel, None)?;
    let initrd = std::fs::read(&lab.initrd)?;
    let cfg = spore_xen::builder::DomainConfig::new(
        *spec.zone_id.as_bytes(),
        128,
        1,
        "console=hvc0".into(),
    );
    let built = spore_xen::builder::DomainBuilder::new(&hv).build(&cfg, &kernel, Some(&initrd))?;
    let listed = backend.list().await?;
    ensure!(
        listed.len() == 1
            && listed[0].zone_id == spec.zone_id
            && !listed[0].running
            && listed[0].handle.ends_with("(half-built)"),
        "{listed:?}"
    );
    backend.destroy(spec.zone_id).await?;
    assert_clean(spec.zone_id, built.domid, &[]).await?;
    ensure!(backend.list().await?.is_empty(), "zones left");
    result(format!(
        "half_built_listed_and_destroyed=OK domid={}",
        built.domid
    ));

    // 9. A zone left running for the next process (`adopt`), as spored leaves its zones when
    // it stops.
    let spec = lab.spec("handoff", ticker)?;
    backend.create(&spec).await?;
    let console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = Framed::new(backend.open_idm(spec.zone_id).await?, IdmCodec::new());
    expect_started(&mut idm).await?;
    console.wait_for("tick", BOOT).await?;
    result(format!("handoff_zone_running zone={}", spec.zone_id));
    Ok(())
}

/// In a fresh process: the one zone a previous process left running is listed, its console
/// and IDM channel re-attached, and it is destroyed without a trace.
async fn adopt(lab: Lab) -> Result<()> {
    let backend = XenBackend::new(lab.config())?;
    let listed = backend.list().await?;
    ensure!(
        listed.len() == 1 && listed[0].running,
        "one running zone expected, found {listed:?}"
    );
    let zone = listed[0].zone_id;
    let domid = domid_of(&listed[0])?;
    let console = Console::spawn(backend.open_console(zone).await?);
    console.wait_for("tick", Duration::from_secs(30)).await?;
    let mut idm = Framed::new(backend.open_idm(zone).await?, IdmCodec::new());
    idm.send(IdmPacket::request(
        9,
        Body::Ping(proto::Ping { nonce: 4242 }),
    ))
    .await?;
    match next_body(&mut idm, "Pong").await? {
        Body::Pong(p) => ensure!(p.nonce == 4242, "{p:?}"),
        other => bail!("expected Pong, got {other:?}"),
    }
    let loops = loops_of(domid)?;
    backend.destroy(zone).await?;
    assert_clean(zone, domid, &loops).await?;
    result(format!("adopt_other_process=OK zone={zone} domid={domid}"));
    Ok(())
}

/// One zone per memory size: did its workload run, or how did its domain stop?
async fn sizes_test(lab: Lab, sizes: &[u64]) -> Result<()> {
    let backend = XenBackend::new(XenConfig {
        boot_headroom_mib: 0, // only the layout's floor: try what we are told
        ..lab.config()
    })?;
    for &mib in sizes {
        let mut spec = lab.spec(&format!("size-{mib}"), "echo workload-ran; exit 0")?;
        spec.memory_mib = mib;
        spec.kernel_cmdline = TIMED_CMDLINE.into();
        let outcome = match backend.create(&spec).await {
            Err(e) => format!("refused: {e}"),
            Ok(_) => {
                let console = Console::spawn(backend.open_console(spec.zone_id).await?);
                let _idm = backend.open_idm(spec.zone_id).await.map(ack_exits);
                let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
                if console.contains("workload-ran") {
                    "booted".to_string()
                } else {
                    let text = console.text.lock().unwrap().clone();
                    let tail: Vec<&str> = text.lines().rev().take(12).collect();
                    format!(
                        "failed ({:?}: {}); console ends: {}",
                        stop.reason,
                        stop.detail,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )
                }
            }
        };
        let _ = backend.destroy(spec.zone_id).await;
        result(format!("size memory_mib={mib} {outcome}"));
    }
    Ok(())
}

fn mac(run: u32) -> String {
    format!("00:16:3e:5b:{:02x}:{:02x}", (run >> 8) & 0xff, run & 0xff)
}

/// Sequential zones with the `peer` devices, timed from the request.
async fn time(lab: Lab, runs: u32) -> Result<()> {
    let backend = XenBackend::new(lab.config())?;
    let ms = |req: Instant, t: Option<Instant>| {
        t.map_or_else(
            || "-".to_string(),
            |t| t.duration_since(req).as_millis().to_string(),
        )
    };
    for run in 1..=runs {
        let mut spec = lab.spec(&format!("timed-{run}"), "echo timed-workload; exit 0")?;
        spec.nic = Some(NicSpec { mac: mac(run) });
        spec.kernel_cmdline = TIMED_CMDLINE.into();
        let rss = rss_kib();
        let req = Instant::now();
        backend.create(&spec).await?;
        let unpause = req.elapsed();
        let console = Console::spawn(backend.open_console(spec.zone_id).await?);
        let mut idm = Framed::new(backend.open_idm(spec.zone_id).await?, IdmCodec::new());
        expect_started(&mut idm).await?;
        let started = req.elapsed();
        expect_exit(&mut idm, 0).await?;
        console.wait_for("timed-workload", BOOT).await?;
        let held_rss = rss_kib().saturating_sub(rss);
        tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
        let t = Instant::now();
        backend.destroy(spec.zone_id).await?;
        result(format!(
            "time run={run} request_to_unpause_ms={} request_to_first_console_ms={} request_to_kernel_run_init_ms={} request_to_started_ms={} request_to_workload_output_ms={} destroy_ms={} rss_growth_kib={held_rss}",
            unpause.as_millis(),
            ms(req, *console.first.lock().unwrap()),
            ms(req, console.time_of(RUN_INIT)),
            started.as_millis(),
            ms(req, console.time_of("timed-workload")),
            t.elapsed().as_millis(),
        ));
        std::fs::remove_dir_all(&spec.zone_dir)?;
    }
    Ok(())
}

/// `xl create` of the same kernel, initrd and disks, timed the same way: until it returns
/// (the domain is unpaused) and until the first byte reaches xenconsoled's log.
async fn peer(lab: Lab, runs: u32) -> Result<()> {
    for run in 1..=runs {
        let mut spec = lab.spec(&format!("xl-peer-{run}"), "echo peer; exit 0")?;
        spec.kernel_cmdline = TIMED_CMDLINE.into();
        let name = format!("xl-peer-{run}");
        let cfg = spec.zone_dir.join("xl.cfg");
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\ntype = \"pv\"\nkernel = \"{}\"\nramdisk = \"{}\"\nextra = \"{}\"\nmemory = {}\nvcpus = 1\non_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"destroy\"\ndisk = [ 'format=raw,vdev=xvda,access=ro,target={}', 'format=raw,vdev=xvdb,access=ro,target={}' ]\nvif = [ 'bridge=xenbr0,mac={}' ]\n",
                spec.kernel.display(),
                spec.initrd.display(),
                spec.kernel_cmdline,
                spec.memory_mib,
                spec.root_image.display(),
                spec.config_block.display(),
                mac(run)
            ),
        )?;
        let log = PathBuf::from(format!("/var/log/xen/console/guest-{name}.log"));
        let _ = std::fs::remove_file(&log);
        let req = Instant::now();
        let out = tokio::process::Command::new("xl")
            .args(["create", "-q"])
            .arg(&cfg)
            .output()
            .await?;
        let returned = req.elapsed();
        ensure!(
            out.status.success(),
            "xl create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // xenconsoled's log of the guest, polled every 10 ms (no forks: they cost dom0 CPU).
        let deadline = Instant::now() + BOOT;
        let (mut first, mut run_init) = (None, None);
        while run_init.is_none() {
            let text = std::fs::read(&log).unwrap_or_default();
            if !text.is_empty() {
                first.get_or_insert_with(|| req.elapsed());
            }
            if String::from_utf8_lossy(&text).contains(RUN_INIT) {
                run_init = Some(req.elapsed());
            }
            ensure!(
                Instant::now() < deadline,
                "{name}: no {RUN_INIT:?} on its console"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis());
        result(format!(
            "peer run={run} xl_create_return_ms={} request_to_first_console_ms={} request_to_kernel_run_init_ms={}",
            returned.as_millis(),
            ms(first),
            ms(run_init)
        ));
        let _ = tokio::process::Command::new("xl")
            .args(["destroy", &name])
            .output()
            .await;
        std::fs::remove_dir_all(&spec.zone_dir)?;
    }
    Ok(())
}
