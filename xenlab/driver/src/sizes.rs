//! `sizes`: one zone per memory size; did its workload run, or how did its domain stop?

use anyhow::Result;
use spore_runtime::Backend;
use spore_runtime::xen::{XenBackend, XenConfig};

use crate::console::Console;
use crate::idm::ack_exits;
use crate::lab::{BOOT, Lab, TIMED_CMDLINE};
use crate::report::result;

pub async fn run(lab: Lab, sizes: &[u64]) -> Result<()> {
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
                    let text = console.text();
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
