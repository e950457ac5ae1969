//! The zones sporenet serves: one [`engine`](crate::engine) task per attached zone, started and
//! stopped as discovery says, restarted if it ends on its own, and reported in the status file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::counters::Counters;
use crate::engine::{self, ZoneShared};
use crate::link::LinkSpec;
use crate::stack::PortReport;
use crate::zone::ZoneNet;

/// A zone whose loop ended on its own is started again after this long.
const RESTART_DELAY: Duration = Duration::from_secs(1);

struct Running {
    shared: Arc<ZoneShared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    started: Instant,
    /// Drop counters last logged, to log only changes.
    logged_drops: BTreeMap<&'static str, u64>,
}

pub struct Service {
    cfg: Arc<Config>,
    zones: HashMap<String, Running>,
}

/// One zone in the status file.
#[derive(Debug, Serialize)]
pub struct ZoneReport {
    pub id: String,
    pub name: String,
    pub link: String,
    pub link_up: bool,
    pub link_reconnects: u64,
    pub mac: String,
    pub ipv4: String,
    pub ipv6: String,
    pub gateway_ipv4: String,
    pub gateway_ipv6: String,
    pub mtu: usize,
    pub ports: Vec<PortReport>,
    pub tcp_flows: u64,
    pub udp_flows: u64,
    pub icmp_flows: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dropped: BTreeMap<&'static str, u64>,
}

/// The status file's content.
#[derive(Debug, Serialize)]
pub struct Report {
    pub pid: u32,
    pub zones: Vec<ZoneReport>,
}

impl Service {
    pub fn new(cfg: Arc<Config>) -> Service {
        Service {
            cfg,
            zones: HashMap::new(),
        }
    }

    /// Serves `zone` over `link`; a zone already served with the same addresses, ports and
    /// link keeps its loop (and its flows).
    pub fn attach(&mut self, zone: ZoneNet, link: LinkSpec) {
        if let Some(r) = self.zones.get(&zone.id) {
            if r.shared.zone == zone && r.shared.link == link {
                return;
            }
            self.detach(&zone.id.clone());
        }
        tracing::info!(zone = %zone.name, id = %zone.id, "attaching over {link}");
        let id = zone.id.clone();
        let shared = Arc::new(ZoneShared {
            zone,
            link,
            counters: Arc::new(Counters::default()),
            ports: Mutex::new(Vec::new()),
        });
        let running = self.spawn(shared);
        self.zones.insert(id, running);
    }

    fn spawn(&self, shared: Arc<ZoneShared>) -> Running {
        let (stop, stopped) = oneshot::channel();
        let cfg = self.cfg.clone();
        let task_shared = shared.clone();
        let task = tokio::spawn(async move {
            let name = task_shared.zone.name.clone();
            if let Err(e) = engine::run(task_shared, cfg, stopped).await {
                tracing::error!(zone = %name, "zone loop ended: {}", crate::error_chain(&e));
            }
        });
        Running {
            shared,
            stop: Some(stop),
            task,
            started: Instant::now(),
            logged_drops: BTreeMap::new(),
        }
    }

    /// Stops serving zone `id` (its listeners close, its flows end).
    pub fn detach(&mut self, id: &str) {
        if let Some(mut r) = self.zones.remove(id) {
            tracing::info!(zone = %r.shared.zone.name, id, "detaching");
            if let Some(stop) = r.stop.take() {
                let _ = stop.send(());
            }
            // The loop ends at its next wake-up; if it is wedged, it is not left behind.
            let task = r.task;
            tokio::spawn(async move {
                let abort = task.abort_handle();
                if tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            });
        }
    }

    /// Serves exactly `zones`: attaches the new ones, detaches the others.
    pub fn sync(&mut self, zones: Vec<(ZoneNet, LinkSpec)>) {
        let wanted: std::collections::HashSet<String> =
            zones.iter().map(|(z, _)| z.id.clone()).collect();
        let gone: Vec<String> = self
            .zones
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.detach(&id);
        }
        for (zone, link) in zones {
            self.attach(zone, link);
        }
    }

    pub fn attached(&self) -> Vec<String> {
        self.zones.keys().cloned().collect()
    }

    /// Restarts zone loops that ended on their own, logs new drops.
    pub fn tend(&mut self) {
        let ended: Vec<String> = self
            .zones
            .iter()
            .filter(|(_, r)| r.task.is_finished() && r.started.elapsed() >= RESTART_DELAY)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            if let Some(old) = self.zones.remove(&id) {
                tracing::warn!(zone = %old.shared.zone.name, "restarting the zone's loop");
                let shared = Arc::new(ZoneShared {
                    zone: old.shared.zone.clone(),
                    link: old.shared.link.clone(),
                    counters: old.shared.counters.clone(),
                    ports: Mutex::new(Vec::new()),
                });
                let running = self.spawn(shared);
                self.zones.insert(id, running);
            }
        }
        for r in self.zones.values_mut() {
            let drops = r.shared.counters.drops();
            if drops != r.logged_drops {
                tracing::info!(zone = %r.shared.zone.name, "dropped so far: {drops:?}");
                r.logged_drops = drops;
            }
        }
    }

    pub fn report(&self) -> Report {
        let mut zones: Vec<ZoneReport> = self
            .zones
            .values()
            .map(|r| {
                let z = &r.shared.zone;
                let c = &r.shared.counters;
                ZoneReport {
                    id: z.id.clone(),
                    name: z.name.clone(),
                    link: r.shared.link.to_string(),
                    link_up: Counters::get(&c.link_up) == 1,
                    link_reconnects: Counters::get(&c.link_reconnects),
                    mac: z.mac.to_string(),
                    ipv4: z.ipv4.to_string(),
                    ipv6: z.ipv6.to_string(),
                    gateway_ipv4: z.gateway_ipv4.to_string(),
                    gateway_ipv6: z.gateway_ipv6.to_string(),
                    mtu: z.mtu,
                    ports: r.shared.ports.lock().map(|p| p.clone()).unwrap_or_default(),
                    tcp_flows: Counters::get(&c.tcp_flows),
                    udp_flows: Counters::get(&c.udp_flows),
                    icmp_flows: Counters::get(&c.icmp_flows),
                    rx_frames: Counters::get(&c.rx_frames),
                    rx_bytes: Counters::get(&c.rx_bytes),
                    tx_bytes: Counters::get(&c.tx_bytes),
                    dropped: c.drops(),
                }
            })
            .collect();
        zones.sort_by(|a, b| a.name.cmp(&b.name));
        Report {
            pid: std::process::id(),
            zones,
        }
    }

    /// Writes the report to `path` atomically (a reader never sees half a file), off the
    /// async workers.
    pub async fn write_report(&self, path: &Path) -> std::io::Result<()> {
        if path.as_os_str().is_empty() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&self.report()).map_err(std::io::Error::other)?;
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = PathBuf::from(format!("{}.tmp", path.display()));
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Stops every zone loop (sporenet is exiting; zones keep running and reconnect later).
    pub fn shutdown(&mut self) {
        let ids = self.attached();
        for id in ids {
            self.detach(&id);
        }
    }
}
