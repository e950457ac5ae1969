//! `peer`: `xl create` of the same kernel, initrd and devices as `time` (the vif on bridge
//! `xenbr0`, which must exist; xenconsoled must run), timed the same way: until it returns
//! (the domain is unpaused) and until the first byte reaches xenconsoled's log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spore_runtime::LaunchSpec;

use crate::lab::{BOOT, Lab, RUN_INIT, TIMED_CMDLINE, mac};
use crate::report::result;

pub async fn run(lab: Lab, runs: u32) -> Result<()> {
    for run in 1..=runs {
        let mut spec = lab.spec(&format!("xl-peer-{run}"), "echo peer; exit 0")?;
        spec.kernel_cmdline = TIMED_CMDLINE.into();
        let name = format!("xl-peer-{run}");
        let cfg = spec.zone_dir.join("xl.cfg");
        std::fs::write(&cfg, xl_config(&name, &spec, run))?;
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
        let (first, run_init) = watch_console(&name, &log, req).await?;
        result(format!(
            "peer run={run} xl_create_return_ms={} request_to_first_console_ms={} request_to_kernel_run_init_ms={}",
            returned.as_millis(),
            first.map_or(0, |d| d.as_millis()),
            run_init.as_millis()
        ));
        let _ = tokio::process::Command::new("xl")
            .args(["destroy", &name])
            .output()
            .await;
        std::fs::remove_dir_all(&spec.zone_dir)?;
    }
    Ok(())
}

/// The xl configuration of the guest `spec` describes, with run `run`'s vif.
fn xl_config(name: &str, spec: &LaunchSpec, run: u32) -> String {
    format!(
        "name = \"{name}\"\ntype = \"pv\"\nkernel = \"{}\"\nramdisk = \"{}\"\nextra = \"{}\"\nmemory = {}\nvcpus = 1\non_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"destroy\"\ndisk = [ 'format=raw,vdev=xvda,access=ro,target={}', 'format=raw,vdev=xvdb,access=ro,target={}' ]\nvif = [ 'bridge=xenbr0,mac={}' ]\n",
        spec.kernel.display(),
        spec.initrd.display(),
        spec.kernel_cmdline,
        spec.memory_mib,
        spec.root_image.display(),
        spec.config_block.display(),
        mac(run)
    )
}

/// xenconsoled's log of the guest, polled every 10 ms (no forks: they cost dom0 CPU): when
/// its first byte and the kernel's `Run /init` line arrived, from `req`.
async fn watch_console(
    name: &str,
    log: &Path,
    req: Instant,
) -> Result<(Option<Duration>, Duration)> {
    let deadline = Instant::now() + BOOT;
    let mut first = None;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        if !text.is_empty() {
            first.get_or_insert_with(|| req.elapsed());
        }
        if String::from_utf8_lossy(&text).contains(RUN_INIT) {
            return Ok((first, req.elapsed()));
        }
        ensure!(
            Instant::now() < deadline,
            "{name}: no {RUN_INIT:?} on its console"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
