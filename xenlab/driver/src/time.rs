//! `time`: sequential zones with the `peer` devices (root image on xvda, config block on
//! xvdb, a vif), timed from the request.

use std::time::Instant;

use anyhow::Result;
use spore_runtime::xen::XenBackend;
use spore_runtime::{Backend, NicSpec};

use crate::console::Console;
use crate::idm::{self, expect_exit, expect_started};
use crate::lab::{BOOT, Lab, RUN_INIT, TIMED_CMDLINE, mac};
use crate::report::{result, rss_kib};

pub async fn run(lab: Lab, runs: u32) -> Result<()> {
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
        let mut idm = idm::framed(backend.open_idm(spec.zone_id).await?);
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
            ms(req, console.first()),
            ms(req, console.time_of(RUN_INIT)),
            started.as_millis(),
            ms(req, console.time_of("timed-workload")),
            t.elapsed().as_millis(),
        ));
        std::fs::remove_dir_all(&spec.zone_dir)?;
    }
    Ok(())
}
