//! Lab driver for spore-xen, run inside a Xen dom0 (the Xen lab): exercises the xenstore
//! client against the real xenstored and boots a PV guest with our builder and console
//! backend (no xl, libxl or libxc), printing `XENLAB-RESULT` lines.
//!
//! ```text
//! xenlab xs-test
//! xenlab boot KERNEL INITRD [--mem MIB] [--cmdline STR] [--marker STR] [--timeout S]
//!             [--cache DIR] [--disk IMAGE]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spore_xen::builder::{DomainBuilder, DomainConfig, introduce};
use spore_xen::console::ConsoleBackend;
use spore_xen::devices::{self, Kind, Vbd};
use spore_xen::kernel::KernelImage;
use spore_xen::loopdev::LoopDevice;
use spore_xen::xs::{Access, AsyncXs, Perm, XsClient};
use spore_xen::{GntDev, Hypervisor, PrivCmd};
use tokio::io::AsyncReadExt;

fn result(line: impl std::fmt::Display) {
    println!("XENLAB-RESULT {line}");
}

fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("xs-test") => xs_test().await,
        Some("boot") => boot(&args[1..]).await,
        _ => Err(anyhow::anyhow!(
            "usage: xenlab xs-test | boot KERNEL INITRD [options]"
        )),
    };
    if let Err(e) = r {
        println!("XENLAB-RESULT FAIL {e:#}");
        std::process::exit(1);
    }
}

async fn xs_test() -> Result<()> {
    let mut xs = XsClient::open().context("connecting to xenstored")?;
    let base = "/local/domain/0/spore-xs-test";
    xs.rm(base)?;
    xs.write(&format!("{base}/a"), b"hello")?;
    ensure!(
        xs.read_string(&format!("{base}/a"))?.as_deref() == Some("hello"),
        "read back"
    );
    ensure!(
        xs.read(&format!("{base}/missing"))?.is_none(),
        "missing node reads as None"
    );
    xs.mkdir(&format!("{base}/dir/sub"))?;
    let mut d = xs.directory(base)?.context("directory")?;
    d.sort();
    ensure!(d == ["a", "dir"], "directory listing {d:?}");
    result("xs_read_write_mkdir_directory=OK");

    let perms = [
        Perm::new(0, Access::None),
        Perm::new(5, Access::Read),
        Perm::new(7, Access::Both),
    ];
    xs.set_perms(&format!("{base}/a"), &perms)?;
    let got = xs.get_perms(&format!("{base}/a"))?;
    ensure!(got == perms, "perms {got:?}");
    result("xs_perms=OK");

    // A transaction that conflicts with another client's write is retried.
    let mut other = XsClient::open()?;
    let mut attempts = 0;
    xs.transaction(|tx| {
        attempts += 1;
        let v = tx.read_string(&format!("{base}/a"))?.unwrap_or_default();
        if attempts == 1 {
            other.write(&format!("{base}/a"), b"interloper")?;
        }
        tx.write(&format!("{base}/a"), format!("{v}+tx").as_bytes())
    })?;
    let v = xs.read_string(&format!("{base}/a"))?.unwrap_or_default();
    ensure!(
        attempts == 2 && v == "interloper+tx",
        "attempts {attempts}, value {v}"
    );
    result(format!("xs_transaction_retry=OK attempts={attempts}"));

    // Watches: sync with a token, async with concurrent requests.
    xs.watch(base, "tok")?;
    let first = xs.next_watch_event()?;
    ensure!(
        first.path == base && first.token == "tok",
        "initial event {first:?}"
    );
    other.write(&format!("{base}/dir/sub/x"), b"1")?;
    let ev = xs.next_watch_event()?;
    ensure!(ev.path == format!("{base}/dir/sub/x"), "event {ev:?}");
    xs.unwatch(base, "tok")?;
    result("xs_watch_sync=OK");

    let axs = AsyncXs::connect().await?;
    let mut w = axs.watch(&format!("{base}/async")).await?;
    w.next().await.context("initial async event")?;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let axs = axs.clone();
        let p = format!("{base}/async/k{i}");
        tasks.push(tokio::spawn(async move {
            axs.write(&p, i.to_string().as_bytes()).await?;
            axs.read_string(&p).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        ensure!(
            t.await??.as_deref() == Some(i.to_string().as_str()),
            "async value {i}"
        );
    }
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await?
        .context("async event")?;
    ensure!(
        ev.path.starts_with(&format!("{base}/async/k")),
        "async event {ev:?}"
    );
    result("xs_async_concurrent_watch=OK");
    ensure!(xs.get_domain_path(0)? == "/local/domain/0", "domain path");
    ensure!(
        !xs.is_domain_introduced(4000).unwrap_or(false),
        "domain 4000 unknown"
    );
    xs.rm(base)?;
    ensure!(xs.read(base)?.is_none(), "rm");
    result("xs_test=PASS");
    Ok(())
}

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

fn parse_boot(a: &[String]) -> Result<BootArgs> {
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
    let mut i = 2;
    while i + 1 < a.len() + 1 && i < a.len() {
        let v = a.get(i + 1).cloned().context("option needs a value")?;
        match a[i].as_str() {
            "--mem" => b.mem = v.parse()?,
            "--cmdline" => b.cmdline = v,
            "--marker" => b.marker = v,
            "--timeout" => b.timeout = v.parse()?,
            "--cache" => b.cache = Some(v.into()),
            "--disk" => b.disk = Some(v.into()),
            "--runs" => b.runs = v.parse()?,
            o => bail!("unknown option {o}"),
        }
        i += 2;
    }
    Ok(b)
}

async fn boot(a: &[String]) -> Result<()> {
    let args = parse_boot(a)?;
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

    let mut introduced = axs.watch("@introduceDomain").await?;
    introduced.next().await; // the initial firing
    let built = DomainBuilder::new(hv).build(&cfg, kernel, Some(initrd))?;
    let domid = built.domid;
    let t_built = ms(t0);
    let mut xs = XsClient::open()?;
    let uuid = uuid::Uuid::from_bytes(handle).to_string();
    introduce(
        &mut xs,
        &built,
        &cfg,
        &format!("spore-lab-{domid}"),
        &[("spore/zone", &uuid)],
    )?;
    ensure!(
        xs.is_domain_introduced(domid)?,
        "xenstored does not know domain {domid}"
    );
    let intro = tokio::time::timeout(Duration::from_secs(10), introduced.next()).await;
    ensure!(matches!(intro, Ok(Some(_))), "no @introduceDomain event");
    drop(introduced);
    result("introduce_domain_event=true");
    let _disk = match &args.disk {
        Some(img) => {
            let lo = LoopDevice::attach_read_only(img)?;
            let vbd = Vbd {
                index: 0,
                physical_device: lo.physical_device(),
                device_path: lo.path.display().to_string(),
            };
            devices::add_vbd(&mut xs, domid, &vbd)?;
            Some(lo)
        }
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

    let mut out = Vec::new();
    let mut first_output = None;
    let mut buf = [0u8; 4096];
    let deadline = Duration::from_secs(args.timeout);
    let found = loop {
        let n = match tokio::time::timeout(
            deadline.saturating_sub(t_unpause.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Err(_) => break false,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        first_output.get_or_insert_with(|| t0.elapsed());
        out.extend_from_slice(&buf[..n]);
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            println!("GUEST| {line}");
        }
        if String::from_utf8_lossy(&out).contains(&args.marker) {
            break true;
        }
    };
    let (rss, hwm) = rss_kib();
    ensure!(
        found,
        "marker {:?} not seen within {} s ({} bytes of console output)",
        args.marker,
        args.timeout,
        out.len()
    );
    result(format!(
        "console marker=OK create_to_first_output_ms={} create_to_marker_ms={} console_bytes={}",
        first_output.map_or(0, |d| d.as_millis()),
        ms(t0),
        out.len()
    ));
    result(format!(
        "process_rss_kib={rss} per_domain_rss_kib={} process_hwm_kib={hwm}",
        rss.saturating_sub(rss_before)
    ));

    // Teardown: give the guest a moment to power off by itself, then destroy.
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
        devices::close_device(&mut xs, Kind::Vbd, domid, devices::xvd_devid(0), wait)?;
    }
    // Release our mappings of the guest's pages first: a destroyed domain lingers as dying
    // while anyone still maps its memory.
    drop(stream);
    pump.abort();
    let _ = pump.await;
    hv.destroy(domid)?;
    devices::remove_domain_nodes(&mut xs, domid, &handle)?;
    // Nothing left: no domain, no xenstore nodes.
    let gone = spore_xen::hypervisor::wait_domain_gone(hv, domid, Duration::from_secs(10))?;
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
