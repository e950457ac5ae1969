//! `backend`: the Xen backend against the real hypervisor, driven only through the `Backend`
//! trait: a zone prints, says Started and Exit, powers off; exit codes; the smallest zone;
//! three zones at once (2 vCPUs, a vif); resources; re-adoption by a fresh backend; destroy
//! while running; a domain killed behind spore's back; a guest kernel crash; a half-built
//! domain; and last a zone left running for `adopt`. After every destroy, nothing is left.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spore_runtime::xen::XenBackend;
use spore_runtime::{Backend, LaunchSpec, NicSpec, Resources, RuntimeError, StopReason, VmStop};
use spore_xen::builder::{DomainBuilder, DomainConfig};
use spore_xen::xs::XsClient;
use spore_xen::{DomId, Hypervisor, PrivCmd};
use uuid::Uuid;

use crate::checks::{assert_clean, check_perms, domid_of, loops_of};
use crate::console::Console;
use crate::idm::{self, Idm, expect_exit, expect_started};
use crate::lab::{BOOT, Lab, TICKER};
use crate::report::{result, rss_breakdown, rss_kib, status_kib};

pub async fn run(lab: Lab) -> Result<()> {
    let backend = start(&lab).await?;
    let anon_at_start = status_kib("RssAnon:");
    result(format!("at_start {}", rss_breakdown()));
    too_small_is_refused(&lab, &backend).await?;
    first_zone(&lab, &backend).await?;
    exit_code_seven(&lab, &backend).await?;
    smallest_zone(&lab, &backend).await?;

    let tickers = three_zones(&lab, &backend, anon_at_start).await?;
    vif_connected(tickers.held[2].domid).await?;
    resources(&backend, &tickers.specs[1], tickers.held[1].domid).await?;
    let ids: Vec<Uuid> = tickers.specs.iter().map(|s| s.zone_id).collect();
    let domids: Vec<DomId> = tickers.held.iter().map(|h| h.domid).collect();
    // This backend goes away (as spored would), a fresh one takes over.
    drop(tickers);
    drop(backend);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let backend = readopt(&lab, &ids).await?;

    destroy_running(&backend, ids[0], domids[0]).await?;
    killed_outside(&backend, ids[1], domids[1]).await?;
    crash(&lab, &backend).await?;
    last_ticker(&backend, ids[2], domids[2]).await?;
    half_built(&lab, &backend).await?;
    handoff(&lab, &backend).await
}

async fn start(lab: &Lab) -> Result<XenBackend> {
    let t = Instant::now();
    let backend = XenBackend::new(lab.config())?;
    result(format!(
        "backend_new_ms={} xen={} min_memory_mib={}",
        t.elapsed().as_millis(),
        backend.xen_version(),
        backend.limits().min_memory_mib
    ));
    ensure!(backend.list().await?.is_empty(), "no zones at start");
    Ok(backend)
}

/// Too little memory is refused with the minimum in the message.
async fn too_small_is_refused(lab: &Lab, backend: &XenBackend) -> Result<()> {
    let min = backend.limits().min_memory_mib;
    let mut small = lab.spec("small", "true")?;
    small.memory_mib = min - 1;
    let e = backend.create(&small).await.unwrap_err();
    ensure!(
        matches!(e, RuntimeError::InvalidSpec { .. })
            && e.to_string().contains(&format!("{min} MiB")),
        "{e}"
    );
    result(format!("too_small_refused=OK msg={e}"));
    Ok(())
}

/// Waits for the zone to stop, destroys it and checks nothing is left of it; returns how it
/// stopped.
async fn destroy_stopped(backend: &XenBackend, spec: &LaunchSpec, domid: DomId) -> Result<VmStop> {
    let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
    let loops = loops_of(domid)?;
    backend.destroy(spec.zone_id).await?;
    assert_clean(spec.zone_id, domid, &loops).await?;
    Ok(stop)
}

/// Step 1: A zone prints, says Started and Exit(0), powers off, is listed as not running, and
/// destroy leaves nothing (the zone directory keeps only the config block).
async fn first_zone(lab: &Lab, backend: &XenBackend) -> Result<()> {
    let spec = lab.spec("hello", "echo hello from the xen zone; exit 0")?;
    let rss0 = rss_kib();
    let req = Instant::now();
    let info = backend.create(&spec).await?;
    let to_unpause = req.elapsed();
    let domid = domid_of(&info)?;
    let console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = idm::framed(backend.open_idm(spec.zone_id).await?);
    expect_started(&mut idm).await?;
    let to_started = req.elapsed();
    expect_exit(&mut idm, 0).await?;
    let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id)).await??;
    ensure!(stop.reason == StopReason::Poweroff, "{stop:?}");
    console.wait_for("hello from the xen zone", BOOT).await?;
    let first = console.first().context("no console output")?;
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
    Ok(())
}

/// Step 2: Exit code 7.
async fn exit_code_seven(lab: &Lab, backend: &XenBackend) -> Result<()> {
    let spec = lab.spec("seven", "echo seven; exit 7")?;
    let info = backend.create(&spec).await?;
    let _console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = idm::framed(backend.open_idm(spec.zone_id).await?);
    expect_started(&mut idm).await?;
    expect_exit(&mut idm, 7).await?;
    let stop = destroy_stopped(backend, &spec, domid_of(&info)?).await?;
    ensure!(stop.reason == StopReason::Poweroff, "{stop:?}");
    result("zone2_exit7=OK");
    Ok(())
}

/// Step 2b: The smallest zone the backend accepts boots and runs its workload.
async fn smallest_zone(lab: &Lab, backend: &XenBackend) -> Result<()> {
    let mut spec = lab.spec("smallest", "echo smallest; exit 0")?;
    spec.memory_mib = backend.limits().min_memory_mib;
    let info = backend.create(&spec).await?;
    let console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = idm::framed(backend.open_idm(spec.zone_id).await?);
    expect_started(&mut idm).await?;
    expect_exit(&mut idm, 0).await?;
    console.wait_for("smallest", BOOT).await?;
    destroy_stopped(backend, &spec, domid_of(&info)?).await?;
    result(format!(
        "smallest_zone_boots=OK memory_mib={}",
        spec.memory_mib
    ));
    Ok(())
}

/// A running ticker zone and what this process holds of it.
struct Held {
    domid: DomId,
    console: Console,
    idm: Idm,
}

struct Tickers {
    specs: Vec<LaunchSpec>,
    held: Vec<Held>,
}

/// Step 3: Three long-running zones at once (one with two vCPUs, one with a NIC), with this
/// process's memory per zone.
async fn three_zones(lab: &Lab, backend: &XenBackend, anon_at_start: u64) -> Result<Tickers> {
    let mut specs = Vec::new();
    for i in 0..3 {
        let mut s = lab.spec(&format!("ticker{i}"), TICKER)?;
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
    let mut requested = Vec::new();
    for s in &specs {
        let req = Instant::now();
        let info = backend.create(s).await?;
        let console = Console::spawn(backend.open_console(s.zone_id).await?);
        let idm = idm::framed(backend.open_idm(s.zone_id).await?);
        requested.push(req);
        held.push(Held {
            domid: domid_of(&info)?,
            console,
            idm,
        });
    }
    for (i, (req, h)) in requested.iter().zip(held.iter_mut()).enumerate() {
        expect_started(&mut h.idm).await?;
        h.console.wait_for("tick", BOOT).await?;
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
    Ok(Tickers { specs, held })
}

/// The NIC: netback made vif<domid>.0 and connected.
async fn vif_connected(domid: DomId) -> Result<()> {
    let vif = format!("/sys/class/net/vif{domid}.0");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut xs = XsClient::open()?;
    let state = format!("/local/domain/0/backend/vif/{domid}/0/state");
    while !(Path::new(&vif).exists() && xs.read_string(&state)?.as_deref() == Some("4")) {
        ensure!(
            Instant::now() < deadline,
            "vif{domid}.0 not connected (backend state {:?})",
            xs.read_string(&state)?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result(format!("vif=OK vif{domid}.0 backend_state=4"));
    Ok(())
}

/// Resources: more vCPUs than the zone was created with are refused; the two-vCPU zone goes
/// down to one vCPU and a smaller balloon target, and the guest follows.
async fn resources(backend: &XenBackend, two: &LaunchSpec, domid: DomId) -> Result<()> {
    let too_many = Resources {
        vcpus: 3,
        memory_mib: 128,
    };
    let e = backend
        .update_resources(two.zone_id, too_many)
        .await
        .unwrap_err();
    ensure!(e.to_string().contains("1 to 2 can be online"), "{e}");
    let smaller = Resources {
        vcpus: 1,
        memory_mib: 100,
    };
    backend.update_resources(two.zone_id, smaller).await?;
    let hv = PrivCmd::open()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = hv.domain_info(domid)?;
        if i.online_vcpus == 1 && i.tot_pages <= 100 * 256 + 256 {
            result(format!(
                "update_resources=OK online_vcpus={} tot_pages={}",
                i.online_vcpus, i.tot_pages
            ));
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "guest did not follow: online_vcpus={} tot_pages={}",
            i.online_vcpus,
            i.tot_pages
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Step 4: Re-adoption: a fresh backend lists the three zones and re-opens console and IDM; a
/// second open in the same process replaces the first.
async fn readopt(lab: &Lab, ids: &[Uuid]) -> Result<XenBackend> {
    let backend = XenBackend::new(lab.config())?;
    let listed = backend.list().await?;
    ensure!(
        listed.len() == 3 && listed.iter().all(|d| d.running && ids.contains(&d.zone_id)),
        "fresh backend lists {listed:?}"
    );
    let console = Console::spawn(backend.open_console(ids[0]).await?);
    console.wait_for("tick", Duration::from_secs(30)).await?;
    let mut idm = idm::framed(backend.open_idm(ids[0]).await?);
    idm::ping(&mut idm, 5, 77).await?;
    let again = Console::spawn(backend.open_console(ids[0]).await?);
    again.wait_for("tick", Duration::from_secs(30)).await?;
    result("readopt_list_console_idm=OK");
    Ok(backend)
}

/// Step 5: Destroy while running.
async fn destroy_running(backend: &XenBackend, id: Uuid, domid: DomId) -> Result<()> {
    let loops = loops_of(domid)?;
    let t = Instant::now();
    backend.destroy(id).await?;
    let destroy_ms = t.elapsed().as_millis();
    assert_clean(id, domid, &loops).await?;
    result(format!("destroy_running=OK destroy_ms={destroy_ms}"));
    Ok(())
}

/// Step 6: A domain killed behind spore's back: wait_stopped says Killed.
async fn killed_outside(backend: &XenBackend, id: Uuid, domid: DomId) -> Result<()> {
    let waiter = {
        let b = backend.clone();
        tokio::spawn(async move { b.wait_stopped(id).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !waiter.is_finished(),
        "wait_stopped returned for a running zone"
    );
    let loops = loops_of(domid)?;
    PrivCmd::open()?.destroy(domid)?;
    let stop = tokio::time::timeout(Duration::from_secs(30), waiter).await???;
    ensure!(stop.reason == StopReason::Killed, "{stop:?}");
    backend.destroy(id).await?;
    assert_clean(id, domid, &loops).await?;
    result(format!("killed_outside=OK detail={:?}", stop.detail));
    Ok(())
}

/// Step 7: A guest kernel crash: wait_stopped says Crash.
async fn crash(lab: &Lab, backend: &XenBackend) -> Result<()> {
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
    Ok(())
}

/// The last ticker, then nothing is left, its vif included.
async fn last_ticker(backend: &XenBackend, id: Uuid, domid: DomId) -> Result<()> {
    let loops = loops_of(domid)?;
    backend.destroy(id).await?;
    assert_clean(id, domid, &loops).await?;
    ensure!(
        !Path::new(&format!("/sys/class/net/vif{domid}.0")).exists(),
        "vif{domid}.0 is left"
    );
    ensure!(backend.list().await?.is_empty(), "zones left");
    result("all_destroyed=OK");
    Ok(())
}

/// Step 8: Half-built: a domain built but never introduced (spored died in between) is listed as
/// ours and not running, and destroy removes it.
async fn half_built(lab: &Lab, backend: &XenBackend) -> Result<()> {
    let spec = lab.spec("half-built", "true")?;
    let kernel = spore_kernel::KernelImage::load(&lab.kernel, None)?;
    let initrd = std::fs::read(&lab.initrd)?;
    let cfg = DomainConfig::new(*spec.zone_id.as_bytes(), 128, 1, "console=hvc0".into());
    let hv = PrivCmd::open()?;
    let built = DomainBuilder::new(&hv).build(&cfg, &kernel, Some(&initrd))?;
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
    Ok(())
}

/// Step 9: A zone left running for the next process (`adopt`), as spored leaves its zones when
/// it stops.
async fn handoff(lab: &Lab, backend: &XenBackend) -> Result<()> {
    let spec = lab.spec("handoff", TICKER)?;
    backend.create(&spec).await?;
    let console = Console::spawn(backend.open_console(spec.zone_id).await?);
    let mut idm = idm::framed(backend.open_idm(spec.zone_id).await?);
    expect_started(&mut idm).await?;
    console.wait_for("tick", BOOT).await?;
    result(format!("handoff_zone_running zone={}", spec.zone_id));
    Ok(())
}
