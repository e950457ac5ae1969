//! `boot`: spore-xen alone boots a PV guest (no xl, libxl or libxc, nor the runtime's
//! backend): build, introduce, an optional disk, console 0 served by our backend, until the
//! guest prints its marker; then teardown, checked to leave nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spore_kernel::KernelImage;
use spore_xen::builder::{BuiltDomain, DomainBuilder, DomainConfig, introduce};
use spore_xen::console::ConsoleBackend;
use spore_xen::devices::{self, Kind, Vbd};
use spore_xen::loopdev::LoopDevice;
use spore_xen::xs::{AsyncXs, Watch, XsClient};
use spore_xen::{DomId, GntDev, Hypervisor, PrivCmd};
use tokio::io::{AsyncReadExt, DuplexStream};

use crate::report::result;

struct BootArgs {
    kernel: PathBuf,
    initrd: PathBuf,
    mem: u64,
    cmdline: String,
    marker: String,
    timeout: u64,
    cache: Option<PathBuf>,
    disk: Option<PathBuf>,
    runs: u32,
}

fn parse(a: &[String]) -> Result<BootArgs> {
    if a.len() < 2 {
        bail!("boot KERNEL INITRD [options]");
    }
    let mut b = BootArgs {
        kernel: a[0].clone().into(),
        initrd: a[1].clone().into(),
        mem: 128,
        cmdline: "console=hvc0 quiet xenlab.mode=marker".into(),
        marker: "XENLAB-GUEST-MARKER".into(),
        timeout: 120,
        cache: None,
        disk: None,
        runs: 1,
    };
    for pair in a[2..].chunks(2) {
        let v = pair.get(1).cloned().context("option needs a value")?;
        match pair[0].as_str() {
            "--mem" => b.mem = v.parse()?,
            "--cmdline" => b.cmdline = v,
            "--marker" => b.marker = v,
            "--timeout" => b.timeout = v.parse()?,
            "--cache" => b.cache = Some(v.into()),
            "--disk" => b.disk = Some(v.into()),
            "--runs" => b.runs = v.parse()?,
            o => bail!("unknown option {o}"),
        }
    }
    Ok(b)
}

/// VmRSS and VmHWM of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = |f| crate::report::status_kib(f);
    (status("VmRSS:"), status("VmHWM:"))
}

pub async fn run(a: &[String]) -> Result<()> {
    let args = parse(a)?;
    let t0 = Instant::now();
    let (rss_start, _) = rss_kib();
    let hv = PrivCmd::open()?;
    let v = hv.version();
    result(format!(
        "xen_version={}.{} domctl={:#x} sysctl={:#x}",
        v.major, v.minor, v.domctl, v.sysctl
    ));
    let kernel = KernelImage::load(&args.kernel, args.cache.as_deref())?;
    let initrd = std::fs::read(&args.initrd)
        .with_context(|| format!("reading {}", args.initrd.display()))?;
    result(format!(
        "kernel_load_ms={} kernel_elf_bytes={} rss_at_start_kib={rss_start}",
        t0.elapsed().as_millis(),
        kernel.elf.len()
    ));
    // The first run counts the kernel load, as a one-shot tool would; later runs reuse the
    // loaded kernel, as the daemon does.
    let mut start = t0;
    for run in 1..=args.runs {
        boot_one(&args, &hv, &kernel, &initrd, start, run).await?;
        start = Instant::now();
    }
    result("boot=PASS");
    Ok(())
}

async fn boot_one(
    args: &BootArgs,
    hv: &PrivCmd,
    kernel: &KernelImage,
    initrd: &[u8],
    t0: Instant,
    run: u32,
) -> Result<()> {
    let ms = |t: Instant| t.elapsed().as_millis();
    let (rss_before, _) = rss_kib();
    let t_kernel = ms(t0);
    let handle = *uuid::Uuid::new_v4().as_bytes();
    let cfg = DomainConfig::new(handle, args.mem, 1, args.cmdline.clone());

    let axs = AsyncXs::connect().await?;
    let mut released = axs.watch("@releaseDomain").await?;
    released.next().await; // the initial firing
    let mut xs = XsClient::open()?;
    let built = build_and_introduce(hv, &axs, &mut xs, &cfg, kernel, initrd).await?;
    let domid = built.domid;
    let t_built = ms(t0);
    let _disk = match &args.disk {
        Some(img) => Some(attach_disk(&mut xs, domid, img)?),
        None => None,
    };
    let gnt = GntDev::open()?;
    let console = ConsoleBackend::connect_primary(&gnt, domid, built.console_port)?;
    let (mut stream, pump) = console.spawn();
    let t_unpause = Instant::now();
    hv.unpause(domid)?;
    result(format!(
        "run={run} built domid={domid} since_request_kernel_ms={t_kernel} build_ms={} to_unpause_ms={} nr_pages={} store_port={} console_port={}",
        t_built - t_kernel,
        ms(t0),
        built.nr_pages,
        built.store_port,
        built.console_port
    ));

    let (found, first_output, bytes) = read_until_marker(args, &mut stream, t0, t_unpause).await?;
    let (rss, hwm) = rss_kib();
    ensure!(
        found,
        "marker {:?} not seen within {} s ({bytes} bytes of console output)",
        args.marker,
        args.timeout,
    );
    result(format!(
        "console marker=OK create_to_first_output_ms={} create_to_marker_ms={} console_bytes={bytes}",
        first_output.map_or(0, |d| d.as_millis()),
        ms(t0),
    ));
    result(format!(
        "process_rss_kib={rss} per_domain_rss_kib={} process_hwm_kib={hwm}",
        rss.saturating_sub(rss_before)
    ));

    // Release our mappings of the guest's pages before the destroy: a destroyed domain
    // lingers as dying while anyone still maps its memory.
    let stop_console = async move {
        drop(stream);
        pump.abort();
        let _ = pump.await;
    };
    teardown(args, hv, &mut xs, domid, &handle, released, stop_console).await
}

/// Builds the domain and introduces it to xenstored, checking that xenstored fires
/// `@introduceDomain`.
async fn build_and_introduce(
    hv: &PrivCmd,
    axs: &AsyncXs,
    xs: &mut XsClient,
    cfg: &DomainConfig,
    kernel: &KernelImage,
    initrd: &[u8],
) -> Result<BuiltDomain> {
    let mut introduced = axs.watch("@introduceDomain").await?;
    introduced.next().await; // the initial firing
    let built = DomainBuilder::new(hv).build(cfg, kernel, Some(initrd))?;
    let domid = built.domid;
    let uuid = uuid::Uuid::from_bytes(cfg.handle).to_string();
    introduce(
        xs,
        &built,
        cfg,
        &format!("spore-lab-{domid}"),
        &[("spore/zone", &uuid)],
    )?;
    ensure!(
        xs.is_domain_introduced(domid)?,
        "xenstored does not know domain {domid}"
    );
    let intro = tokio::time::timeout(Duration::from_secs(10), introduced.next()).await;
    ensure!(matches!(intro, Ok(Some(_))), "no @introduceDomain event");
    result("introduce_domain_event=true");
    Ok(built)
}

/// `img` as the guest's xvda, read-only from a loop device.
fn attach_disk(xs: &mut XsClient, domid: DomId, img: &std::path::Path) -> Result<LoopDevice> {
    let lo = LoopDevice::attach_read_only(img)?;
    let vbd = Vbd {
        index: 0,
        physical_device: lo.physical_device(),
        device_path: lo.path.display().to_string(),
    };
    devices::add_vbd(xs, domid, &vbd)?;
    Ok(lo)
}

/// Prints the console as `GUEST| ...` lines until the marker shows or the timeout passes:
/// (whether it showed, when the first byte came from `t0`, bytes read).
async fn read_until_marker(
    args: &BootArgs,
    stream: &mut DuplexStream,
    t0: Instant,
    t_unpause: Instant,
) -> Result<(bool, Option<Duration>, usize)> {
    let mut out = Vec::new();
    let mut first_output = None;
    let mut buf = [0u8; 4096];
    let deadline = Duration::from_secs(args.timeout);
    loop {
        let left = deadline.saturating_sub(t_unpause.elapsed());
        let n = match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok((false, first_output, out.len())),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        first_output.get_or_insert_with(|| t0.elapsed());
        out.extend_from_slice(&buf[..n]);
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            println!("GUEST| {line}");
        }
        if String::from_utf8_lossy(&out).contains(&args.marker) {
            return Ok((true, first_output, out.len()));
        }
    }
}

/// Gives the guest a moment to power off by itself, closes the disk, stops the console,
/// destroys the domain and removes its nodes; then checks that nothing is left.
async fn teardown(
    args: &BootArgs,
    hv: &PrivCmd,
    xs: &mut XsClient,
    domid: DomId,
    handle: &[u8; 16],
    mut released: Watch,
    stop_console: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let t_destroy = Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(30), released.next()).await;
    drop(released);
    let shutdown = hv.domain_info(domid).ok().and_then(|i| i.shutdown_reason());
    result(format!(
        "release_domain_event={} guest_shutdown={shutdown:?}",
        ev.is_ok()
    ));
    if args.disk.is_some() {
        // A guest that already shut down will not answer the close handshake.
        let wait = if shutdown.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        devices::close_device(xs, Kind::Vbd, domid, devices::xvd_devid(0), wait)?;
    }
    stop_console.await;
    hv.destroy(domid)?;
    devices::remove_domain_nodes(xs, domid, handle)?;
    let gone = spore_xen::hypervisor::wait_domain_gone(hv, domid, Duration::from_secs(10))?;
    let uuid = uuid::Uuid::from_bytes(*handle);
    let mut left = Vec::new();
    for p in [
        format!("/local/domain/{domid}"),
        format!("/vm/{uuid}"),
        format!("/local/domain/0/backend/vbd/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
    ] {
        if xs.read(&p)?.is_some() {
            left.push(p);
        }
    }
    let domains: Vec<u16> = hv.list_domains(0, 64)?.iter().map(|d| d.domid).collect();
    result(format!(
        "destroy domain_gone={gone} xenstore_left={left:?} domains_now={domains:?} destroy_ms={}",
        t_destroy.elapsed().as_millis()
    ));
    ensure!(gone && left.is_empty(), "teardown left state behind");
    Ok(())
}
