//! Facts about the host (CPUs, memory, name) and the daemon's host status report.

use spore_api::v1;

use crate::backends::api_kind;
use crate::daemon::Daemon;
use crate::state::ALL_STATES;
use crate::store::StoreError;

impl Daemon {
    /// What `GetHostStatus` reports: the backend and why, the host's resources, zone counts,
    /// the event sequence and whether the guest bundle is in place.
    pub async fn host_status(&self) -> Result<v1::GetHostStatusResponse, StoreError> {
        let counts = self.zones.counts();
        let zone_counts = ALL_STATES
            .iter()
            .filter_map(|s| {
                counts.get(s).map(|&count| v1::ZoneStateCount {
                    state: *s as i32,
                    count,
                })
            })
            .collect();
        let next = self.zones.store().run(|s| s.next_sequence()).await?;
        let (total, available) = memory();
        let kernel = self.config.guest_kernel();
        let initrd = self.config.guest_initrd();
        let missing: Vec<String> = [&kernel, &initrd]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        let probes = self
            .selection
            .probes
            .iter()
            .map(|p| v1::BackendProbe {
                kind: api_kind(p.kind) as i32,
                usable: p.usable,
                detail: p.detail.clone(),
            })
            .collect();
        Ok(v1::GetHostStatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            backend: self.selection.kind as i32,
            backend_reason: self.selection.reason.clone(),
            probes,
            cpus: cpus(),
            memory_total_bytes: total,
            memory_available_bytes: available,
            zone_counts,
            last_event_sequence: next.saturating_sub(1),
            state_dir: self.config.state_dir.display().to_string(),
            hostname: hostname(),
            guest_bundle: Some(v1::GuestBundle {
                kernel_path: kernel.display().to_string(),
                initrd_path: initrd.display().to_string(),
                present: missing.is_empty(),
                detail: if missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        "missing {}: build it with kernel/build-bundle.sh and install it there",
                        missing.join(" and ")
                    )
                },
            }),
        })
    }
}

/// CPUs online.
pub fn cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// (total, available) memory in bytes, from /proc/meminfo.
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_facts_are_plausible() {
        assert!(super::cpus() >= 1);
        let (total, available) = super::memory();
        assert!(total > 64 << 20, "{total}");
        assert!(available <= total);
        assert!(!super::hostname().is_empty());
    }
}
