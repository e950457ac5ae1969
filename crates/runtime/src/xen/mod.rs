//! The Xen backend: each zone is a PV domain built by `spore-xen` (no xl, libxl or libxc),
//! with its devices wired through xenstore and its two consoles served by this process.
//!
//! - xvda = the root image and xvdb = the config block, each a read-only loop device served
//!   by the kernel's blkback;
//! - hvc0 = the start_info console ring, hvc1 = a second PV console (`device/console/1`, the
//!   guest's hvc_xen frontend) carrying IDM; both rings are mapped through grants and pumped
//!   by tasks of this process ([`spore_xen::console`]);
//! - vif 0 (netback, `vif<domid>.0` in dom0) when the spec has a NIC.
//!
//! Domains outlive the process. Ownership lives in the hypervisor (domain handle = zone
//! UUID) and in dom0-owned xenstore keys ([`store`]), so a fresh backend lists, re-attaches
//! to and destroys what an earlier one created; no state is kept in files.

mod images;
mod resources;
mod status;
mod store;
mod teardown;
mod zone;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use spore_xen::builder::{self, DomainBuilder, DomainConfig, Layout};
use spore_xen::console::ConsoleBackend;
use spore_xen::devices::{self, Vbd, Vif};
use spore_xen::kernel::KernelImage;
use spore_xen::loopdev::LoopDevice;
use spore_xen::xs::{AsyncXs, XsClient};
use spore_xen::{DomId, EvtChn, GntDev, Hypervisor, PrivCmd, XenError};
use uuid::Uuid;

use crate::probe::BackendKind;
use crate::{
    Backend, ByteStream, DomainInfo, DomainStop, Error, LaunchSpec, Resources, Result, VmLimits,
};
use images::{Images, LoadError};
use status::DomainState;
use teardown::Timeouts;
use zone::{Channel, Connected, Zone};

/// The memory floor reported when the configured guest bundle cannot be read at start
/// (create still checks the exact need of the kernel and initrd it boots).
pub const FALLBACK_MIN_MEMORY_MIB: u64 = 128;
/// Memory a zone needs beyond its kernel's initial mapping to boot, by default (see
/// [`XenConfig::boot_headroom_mib`]). Measured in the lab with the Debian 6.1 kernel and the
/// bundle's initrd (layout minimum 80 MiB): 84 MiB panics out of memory while booting, 88
/// MiB runs a shell workload; 16 MiB keeps a margin over that.
pub const BOOT_HEADROOM_MIB: u64 = 16;
/// vCPUs a zone may have.
pub const MAX_VCPUS: u32 = 128;
/// The console device that carries IDM (hvc1).
const IDM_CONSOLE: u32 = 1;
/// How often `wait_stopped` re-checks the domain when no xenstore event arrives.
const STOP_POLL: Duration = Duration::from_secs(5);

/// How the backend runs zones.
#[derive(Debug, Clone)]
pub struct XenConfig {
    /// `<state>/zones`: zone directories, and this backend's identity in xenstore
    /// (`spore/owner`), so two daemons never take each other's domains.
    pub zones_root: PathBuf,
    /// Where kernels extracted from bzImages are kept (`<sha256>.elf`).
    pub kernel_cache: PathBuf,
    /// The guest bundle's kernel and initrd, for [`Backend::limits`].
    pub guest_kernel: Option<PathBuf>,
    pub guest_initrd: Option<PathBuf>,
    /// Memory a zone needs beyond its kernel's initial mapping (`Layout::min_memory_mib`) for
    /// the kernel to boot and spore-init to run: the layout alone is not enough (measured in
    /// the lab with the Debian 6.1 kernel: `xenlab/tests/backend.sh`, docs/backends.md).
    pub boot_headroom_mib: u64,
    /// How long the guest may take to connect its IDM console (its kernel boot).
    pub idm_timeout: Duration,
    /// How long `destroy` lets a running guest close its devices.
    pub device_timeout: Duration,
    /// How long `destroy` waits for the kernel backends and the domain to go.
    pub release_timeout: Duration,
}

impl XenConfig {
    /// Defaults, with the kernel cache beside the zones root (`<state>/kernels`).
    pub fn new(zones_root: impl Into<PathBuf>) -> XenConfig {
        let zones_root: PathBuf = zones_root.into();
        XenConfig {
            kernel_cache: zones_root
                .parent()
                .unwrap_or(Path::new("/"))
                .join("kernels"),
            zones_root,
            guest_kernel: None,
            guest_initrd: None,
            boot_headroom_mib: BOOT_HEADROOM_MIB,
            idm_timeout: Duration::from_secs(120),
            device_timeout: Duration::from_secs(5),
            release_timeout: Duration::from_secs(15),
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            devices: self.device_timeout,
            release: self.release_timeout,
        }
    }
}

/// The Xen backend.
#[derive(Debug, Clone)]
pub struct XenBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: XenConfig,
    /// `spore/owner` of our domains.
    owner: String,
    hv: PrivCmd,
    gnt: GntDev,
    images: Images,
    min_memory_mib: u64,
    zones: Mutex<HashMap<Uuid, Arc<Zone>>>,
}

fn xen(context: impl Into<String>) -> impl FnOnce(XenError) -> Error {
    let context = context.into();
    move |e| Error::Backend {
        context,
        source: Box::new(e),
    }
}

fn unavailable(detail: String) -> Error {
    Error::Unavailable {
        kind: BackendKind::Xen,
        detail,
    }
}

impl XenBackend {
    /// Opens the hypervisor, xenstore, grant and event channel devices and checks that
    /// blkback and loop devices are there (blocking). [`Error::Unavailable`] says what is
    /// missing when this is not a usable dom0.
    pub fn new(config: XenConfig) -> Result<XenBackend> {
        let chain = |e: &dyn std::error::Error| {
            let mut s = e.to_string();
            let mut src = e.source();
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        };
        let hv = PrivCmd::open().map_err(|e| unavailable(chain(&e)))?;
        XsClient::open().map_err(|e| {
            unavailable(format!(
                "xenstored does not answer ({}): start xenstored",
                chain(&e)
            ))
        })?;
        let gnt = GntDev::open().map_err(|e| unavailable(chain(&e)))?;
        EvtChn::open().map_err(|e| unavailable(chain(&e)))?;
        for (path, fix) in [
            ("/dev/loop-control", "load the loop module (modprobe loop)"),
            (
                "/sys/bus/xen-backend/drivers/vbd",
                "load blkback (modprobe xen-blkback)",
            ),
        ] {
            if !Path::new(path).exists() {
                return Err(unavailable(format!("{path} is missing: {fix}")));
            }
        }
        std::fs::create_dir_all(&config.zones_root)
            .map_err(|e| Error::io(format!("cannot create {}", config.zones_root.display()), e))?;
        let owner = config.zones_root.display().to_string();
        let images = Images::new(config.kernel_cache.clone());
        let min_memory_mib = match (&config.guest_kernel, &config.guest_initrd) {
            (Some(k), Some(i)) => match (images.kernel(k), images.initrd(i)) {
                (Ok(k), Ok(i)) => zone_min_mib(&k, i.len(), config.boot_headroom_mib),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(
                        "cannot read the guest bundle ({}); assuming zones need {FALLBACK_MIN_MEMORY_MIB} MiB",
                        load_error_text(&e)
                    );
                    FALLBACK_MIN_MEMORY_MIB
                }
            },
            _ => FALLBACK_MIN_MEMORY_MIB,
        };
        let v = hv.version();
        tracing::info!(
            xen = %format!("{}.{}", v.major, v.minor),
            min_memory_mib,
            "Xen backend ready"
        );
        Ok(XenBackend {
            inner: Arc::new(Inner {
                config,
                owner,
                hv,
                gnt,
                images,
                min_memory_mib,
                zones: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The hypervisor's version, `major.minor`.
    pub fn xen_version(&self) -> String {
        let v = self.inner.hv.version();
        format!("{}.{}", v.major, v.minor)
    }

    /// Runs blocking Xen work (hypercalls, the blocking xenstore client, loop ioctls) off
    /// the async workers.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> T + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::io("a Xen task failed", std::io::Error::other(e.to_string())))
    }

    /// The zone's domain: known already, or re-adopted from the hypervisor and xenstore.
    async fn zone(&self, id: Uuid) -> Result<Arc<Zone>> {
        if let Some(z) = self.inner.zones.lock().unwrap().get(&id) {
            return Ok(z.clone());
        }
        let found = self
            .blocking(move |i| i.find(id))
            .await?
            .map_err(xen(format!("looking up the domain of zone {id}")))?;
        let Some(owned) = found.filter(|o| o.built) else {
            return Err(Error::NoSuchZone(id));
        };
        tracing::info!(zone = %id, domid = owned.domid, "re-adopted a Xen domain");
        let zone = Arc::new(Zone::adopted(owned.domid));
        Ok(self
            .inner
            .zones
            .lock()
            .unwrap()
            .entry(id)
            .or_insert(zone)
            .clone())
    }

    fn check(&self, spec: &LaunchSpec) -> Result<()> {
        let invalid = |detail: String| Error::InvalidSpec {
            zone: spec.zone_id,
            detail,
        };
        if spec.memory_mib == 0 {
            return Err(invalid("0 MiB of memory".into()));
        }
        if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
            return Err(invalid(format!(
                "{} vCPUs: a Xen zone has 1 to {MAX_VCPUS}",
                spec.vcpus
            )));
        }
        if spec.nic.is_some() && !Path::new("/sys/bus/xen-backend/drivers/vif").exists() {
            return Err(invalid(
                "the zone has a NIC but netback is not loaded: modprobe xen-netback".into(),
            ));
        }
        spec.check_files()?;
        Ok(())
    }

    /// Resolves when `zone`'s domain `domid` has stopped: on `@releaseDomain` (fired when a
    /// domain shuts down or goes) and every [`STOP_POLL`], it asks the hypervisor.
    async fn watch_stop(&self, zone: Uuid, domid: DomId) -> Result<DomainStop> {
        let mut watch = None;
        loop {
            // Watch first, then look: a stop between the two still fires the watch.
            if watch.is_none() {
                match AsyncXs::connect().await {
                    Ok(xs) => match xs.watch("@releaseDomain").await {
                        Ok(w) => watch = Some((xs, w)),
                        Err(e) => tracing::warn!(zone = %zone, "cannot watch @releaseDomain: {e}"),
                    },
                    Err(e) => tracing::warn!(zone = %zone, "cannot reach xenstored: {e}"),
                }
            }
            let state = self
                .blocking(move |i| status::state_of(zone, domid, i.hv.domain_info(domid)))
                .await?
                .map_err(xen(format!("asking Xen about domain {domid}")))?;
            if let DomainState::Stopped(stop) = state {
                return Ok(stop);
            }
            match &mut watch {
                Some((_, w)) => {
                    if let Ok(None) = tokio::time::timeout(STOP_POLL, w.next()).await {
                        watch = None; // xenstored went away: poll, then watch again
                        tokio::time::sleep(STOP_POLL).await;
                    }
                }
                None => tokio::time::sleep(STOP_POLL).await,
            }
        }
    }

    /// Connects the IDM console once the guest's frontend has published its ring; fails at
    /// once if the domain stops first (a guest that dies while booting never publishes it).
    async fn connect_idm(&self, zone: Uuid, domid: DomId) -> Result<Connected> {
        let xs = AsyncXs::connect()
            .await
            .map_err(xen("connecting to xenstored"))?;
        let timeout = self.inner.config.idm_timeout;
        let gnt = &self.inner.gnt;
        tokio::select! {
            backend = devices::connect_console_async(&xs, gnt, domid, IDM_CONSOLE, timeout) => {
                let backend = backend.map_err(xen(format!(
                    "connecting the IDM console (hvc1) of domain {domid}"
                )))?;
                Ok(backend.spawn())
            }
            stop = self.watch_stop(zone, domid) => Err(Error::Launch {
                zone,
                detail: format!(
                    "the domain stopped before the guest connected its IDM console (hvc1): {}",
                    stop?.detail
                ),
            }),
        }
    }

    /// Tears down a domain that failed during create and returns the create error.
    async fn abandon(&self, zone: Uuid, domid: DomId, loops: Vec<LoopDevice>, e: Error) -> Error {
        let t = self.inner.config.timeouts();
        let t = Timeouts {
            devices: Duration::ZERO,
            ..t
        };
        match self
            .blocking(move |i| teardown::teardown(&i.hv, zone, Some(domid), loops, t))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(left)) => {
                tracing::error!(zone = %zone, domid, "cleaning up a failed create: {left}")
            }
            Err(te) => tracing::error!(zone = %zone, domid, "cleaning up a failed create: {te}"),
        }
        e
    }
}

/// The smallest zone that boots `kernel` with an initrd of `initrd_len` bytes.
fn zone_min_mib(kernel: &KernelImage, initrd_len: usize, headroom_mib: u64) -> u64 {
    Layout::min_memory_mib(&kernel.info, initrd_len as u64).saturating_add(headroom_mib)
}

fn load_error_text(e: &LoadError) -> String {
    match e {
        LoadError::Io(p, e) => format!("{}: {e}", p.display()),
        LoadError::Kernel(p, e) => format!("{}: {e}", p.display()),
    }
}

/// A domain built, introduced and wired, still paused.
struct Built {
    domid: DomId,
    console_port: u32,
    loops: Vec<LoopDevice>,
}

impl Inner {
    fn find(&self, zone: Uuid) -> spore_xen::Result<Option<store::Owned>> {
        let mut xs = XsClient::open()?;
        store::find(
            &self.hv,
            &mut xs,
            &self.owner,
            &self.config.zones_root,
            zone,
        )
    }

    /// Attaches the disks, builds the domain and writes its xenstore home and devices
    /// (blocking). On failure nothing is left.
    fn build(&self, spec: &LaunchSpec, kernel: &KernelImage, initrd: &[u8]) -> Result<Built> {
        let zone = spec.zone_id;
        let t = Instant::now();
        let root = LoopDevice::attach_read_only(&spec.root_image).map_err(xen(format!(
            "attaching the root image {} to a loop device",
            spec.root_image.display()
        )))?;
        let config = LoopDevice::attach_read_only(&spec.config_block).map_err(xen(format!(
            "attaching the config block {} to a loop device",
            spec.config_block.display()
        )))?;
        let loops_ms = t.elapsed().as_millis() as u64;
        let cfg = DomainConfig::new(
            *zone.as_bytes(),
            spec.memory_mib,
            spec.vcpus,
            spec.kernel_cmdline.clone(),
        );
        // The builder destroys the domain again if it fails half-way.
        let built = DomainBuilder::new(&self.hv)
            .build(&cfg, kernel, Some(initrd))
            .map_err(|e| Error::Launch {
                zone,
                detail: format!("building the domain failed: {e}"),
            })?;
        let domid = built.domid;
        let build_ms = t.elapsed().as_millis() as u64 - loops_ms;
        let wire = || -> spore_xen::Result<()> {
            let mut xs = XsClient::open()?;
            let id = zone.to_string();
            builder::introduce(
                &mut xs,
                &built,
                &cfg,
                &spec.vm_name(),
                &[(store::ZONE_KEY, &id), (store::OWNER_KEY, &self.owner)],
            )?;
            for (index, lo) in [(0, &root), (1, &config)] {
                devices::add_vbd(
                    &mut xs,
                    domid,
                    &Vbd {
                        index,
                        physical_device: lo.physical_device(),
                        device_path: lo.path.display().to_string(),
                    },
                )?;
            }
            devices::add_console(&mut xs, domid, IDM_CONSOLE, "idm")?;
            if let Some(nic) = &spec.nic {
                devices::add_vif(
                    &mut xs,
                    domid,
                    &Vif {
                        devid: 0,
                        mac: nic.mac.clone(),
                        mtu: 1500,
                    },
                )?;
            }
            Ok(())
        };
        if let Err(e) = wire() {
            let t = Timeouts {
                devices: Duration::ZERO,
                ..self.config.timeouts()
            };
            if let Err(left) =
                teardown::teardown(&self.hv, zone, Some(domid), vec![root, config], t)
            {
                tracing::error!(zone = %zone, domid, "cleaning up a failed create: {left}");
            }
            return Err(xen(format!("wiring domain {domid} in xenstore"))(e));
        }
        tracing::debug!(
            zone = %zone,
            domid,
            loops_ms,
            build_ms,
            xenstore_ms = t.elapsed().as_millis() as u64 - loops_ms - build_ms,
            "domain built"
        );
        Ok(Built {
            domid,
            console_port: built.console_port,
            loops: vec![root, config],
        })
    }
}

/// Connects console 0: grant reference 0 and the console event channel, known from the build
/// or read from the domain's dom0-owned `console/port` node.
async fn connect_console(
    gnt: &GntDev,
    zone: Uuid,
    domid: DomId,
    port: Option<u32>,
) -> Result<Connected> {
    let port = match port {
        Some(p) => p,
        None => {
            let xs = AsyncXs::connect()
                .await
                .map_err(xen("connecting to xenstored"))?;
            let path = format!("/local/domain/{domid}/console/port");
            let value = xs
                .read(&path)
                .await
                .map_err(xen(format!("reading {path}")))?;
            devices::parse_num(value).ok_or_else(|| Error::Launch {
                zone,
                detail: format!("{path} holds no event channel port"),
            })?
        }
    };
    let backend = ConsoleBackend::connect_primary(gnt, domid, port).map_err(xen(format!(
        "connecting the console (hvc0) of domain {domid}"
    )))?;
    Ok(backend.spawn())
}

#[async_trait]
impl Backend for XenBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Xen
    }

    fn limits(&self) -> VmLimits {
        VmLimits {
            min_memory_mib: self.inner.min_memory_mib,
            max_vcpus: MAX_VCPUS,
        }
    }

    async fn create(&self, spec: &LaunchSpec) -> Result<DomainInfo> {
        let started = Instant::now();
        self.check(spec)?;
        let id = spec.zone_id;
        if self.inner.zones.lock().unwrap().contains_key(&id)
            || self
                .blocking(move |i| i.find(id))
                .await?
                .map_err(xen(format!("looking up the domain of zone {id}")))?
                .is_some()
        {
            return Err(Error::Launch {
                zone: id,
                detail: "the zone already has a domain".into(),
            });
        }
        let (kernel_path, initrd_path) = (spec.kernel.clone(), spec.initrd.clone());
        let (kernel, initrd) = self
            .blocking(move |i| {
                Ok::<_, LoadError>((
                    i.images.kernel(&kernel_path)?,
                    i.images.initrd(&initrd_path)?,
                ))
            })
            .await?
            .map_err(|e| match e {
                LoadError::Io(path, source) => Error::File {
                    what: "kernel or initrd",
                    path,
                    source,
                },
                LoadError::Kernel(path, e) => Error::InvalidSpec {
                    zone: id,
                    detail: format!("the kernel {} cannot be booted: {e}", path.display()),
                },
            })?;
        let loaded_ms = started.elapsed().as_millis() as u64;
        let need = zone_min_mib(&kernel, initrd.len(), self.inner.config.boot_headroom_mib);
        if spec.memory_mib < need {
            return Err(Error::InvalidSpec {
                zone: id,
                detail: format!(
                    "{} MiB of memory is below the {need} MiB a Xen zone with this kernel and initrd needs ({} MiB for the kernel's initial mapping, {} MiB to boot)",
                    spec.memory_mib,
                    need - self.inner.config.boot_headroom_mib,
                    self.inner.config.boot_headroom_mib
                ),
            });
        }
        let owned_spec = spec.clone();
        let built = self
            .blocking(move |i| i.build(&owned_spec, &kernel, &initrd))
            .await??;
        let domid = built.domid;
        let built_ms = started.elapsed().as_millis() as u64;
        let console =
            match connect_console(&self.inner.gnt, id, domid, Some(built.console_port)).await {
                Ok(c) => c,
                Err(e) => return Err(self.abandon(id, domid, built.loops, e).await),
            };
        let unpaused = self
            .blocking(move |i| i.hv.unpause(domid))
            .await
            .and_then(|r| r.map_err(xen(format!("unpausing domain {domid}"))));
        if let Err(e) = unpaused {
            let mut ch = Channel::connected(console);
            ch.stop().await;
            return Err(self.abandon(id, domid, built.loops, e).await);
        }
        // The task holds the backend until the guest's frontend shows up or the domain stops.
        let idm = {
            let this = self.clone();
            tokio::spawn(async move { this.connect_idm(id, domid).await })
        };
        let zone = Zone::new(
            domid,
            Channel::connected(console),
            Channel::connecting(idm),
            built.loops,
        );
        self.inner.zones.lock().unwrap().insert(id, Arc::new(zone));
        tracing::info!(
            zone = %id,
            domid,
            ms = started.elapsed().as_millis() as u64,
            loaded_ms,
            built_ms,
            "Xen domain started"
        );
        Ok(DomainInfo {
            zone_id: id,
            handle: format!("domid {domid}"),
            running: true,
        })
    }

    async fn destroy(&self, zone_id: Uuid) -> Result<()> {
        let known = self.inner.zones.lock().unwrap().remove(&zone_id);
        let (domid, loops) = match known {
            Some(z) => {
                z.stop_channels().await;
                (Some(z.domid), z.take_loops())
            }
            None => {
                let found = self
                    .blocking(move |i| i.find(zone_id))
                    .await?
                    .map_err(xen(format!("looking up the domain of zone {zone_id}")))?;
                (found.map(|o| o.domid), Vec::new())
            }
        };
        let t = self.inner.config.timeouts();
        self.blocking(move |i| teardown::teardown(&i.hv, zone_id, domid, loops, t))
            .await?
            .map_err(|detail| Error::Destroy {
                zone: zone_id,
                detail,
            })
    }

    async fn list(&self) -> Result<Vec<DomainInfo>> {
        let owned = self
            .blocking(|i| {
                let mut xs = XsClient::open()?;
                store::owned_domains(&i.hv, &mut xs, &i.owner, &i.config.zones_root)
            })
            .await?
            .map_err(xen("listing Xen domains"))?;
        let mut found: Vec<DomainInfo> = owned
            .into_iter()
            .map(|o| DomainInfo {
                zone_id: o.zone,
                handle: if o.built {
                    format!("domid {}", o.domid)
                } else {
                    format!("domid {} (half-built)", o.domid)
                },
                running: o.running,
            })
            .collect();
        found.sort_by_key(|d| d.zone_id);
        Ok(found)
    }

    async fn open_console(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let zone = self.zone(zone_id).await?;
        let connect = connect_console(&self.inner.gnt, zone_id, zone.domid, None);
        let stream = zone.console.lock().await.open(connect).await?;
        Ok(Box::new(stream))
    }

    async fn open_idm(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let zone = self.zone(zone_id).await?;
        let stream = zone
            .idm
            .lock()
            .await
            .open(self.connect_idm(zone_id, zone.domid))
            .await?;
        Ok(Box::new(stream))
    }

    async fn wait_stopped(&self, zone_id: Uuid) -> Result<DomainStop> {
        let zone = self.zone(zone_id).await?;
        self.watch_stop(zone_id, zone.domid).await
    }

    async fn update_resources(&self, zone_id: Uuid, resources: Resources) -> Result<()> {
        let zone = self.zone(zone_id).await?;
        let domid = zone.domid;
        let min = self.inner.min_memory_mib;
        self.blocking(move |_| resources::set(zone_id, domid, resources, min))
            .await?
    }
}

/// Fixtures shared by the unit tests of this backend's modules.
#[cfg(test)]
mod testing {
    use spore_xen::{DomId, DomainInfo};
    use uuid::Uuid;

    /// What the hypervisor reports of a running one-vCPU domain whose handle is `zone`.
    pub fn domain_info(domid: DomId, zone: Uuid, flags: u32) -> DomainInfo {
        DomainInfo {
            domid,
            flags,
            tot_pages: 0,
            max_pages: 0,
            shared_info_frame: 0,
            cpu_time_ns: 0,
            online_vcpus: 1,
            handle: *zone.as_bytes(),
        }
    }
}
