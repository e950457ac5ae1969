//! Creating a zone's domain, step by step: check the spec, load the kernel and initrd, check
//! the memory they need, attach the disks, build the domain, write its xenstore home and
//! devices, connect console 0, unpause, and leave a task connecting the IDM console. A
//! failure at any step after the first disk is attached tears down what was made.

use std::sync::Arc;
use std::time::Instant;

use spore_kernel::KernelImage;
use spore_xen::builder::{self, BuiltDomain, DomainBuilder, DomainConfig, Layout};
use spore_xen::devices::{self, Vbd, Vif};
use spore_xen::xs::AsyncXs;
use spore_xen::{DomId, Hypervisor};
use uuid::Uuid;

use super::config::{FALLBACK_MIN_MEMORY_MIB, IDM_CONSOLE, MAX_VCPUS, XenConfig};
use super::platform::{AttachDisk, Disk, Platform, ServeRings, XsConnect};
use super::zone::{Channel, Connected, Zone};
use super::{Inner, XenBackend, store, teardown, xen};
use crate::boot_files::{BootFileError, BootFiles};
use crate::sync::lock;
use crate::{LaunchSpec, Result, RuntimeError, VmInfo};

/// A domain built, introduced and wired, still paused.
pub(super) struct Built {
    domid: DomId,
    console_port: u32,
    disks: Vec<Box<dyn Disk>>,
}

/// The smallest zone that boots `kernel` with an initrd of `initrd_len` bytes.
pub(super) fn zone_min_mib(kernel: &KernelImage, initrd_len: usize, headroom_mib: u64) -> u64 {
    Layout::min_memory_mib(&kernel.info, initrd_len as u64).saturating_add(headroom_mib)
}

/// The smallest zone the configured guest bundle boots in, for [`crate::Backend::limits`].
pub(super) fn bundle_min_mib(files: &BootFiles, config: &XenConfig) -> u64 {
    let (Some(kernel), Some(initrd)) = (&config.guest_kernel, &config.guest_initrd) else {
        return FALLBACK_MIN_MEMORY_MIB;
    };
    match (files.kernel(kernel), files.initrd(initrd)) {
        (Ok(k), Ok(i)) => zone_min_mib(&k, i.len(), config.boot_headroom_mib),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot read the guest bundle; assuming zones need {FALLBACK_MIN_MEMORY_MIB} MiB"
            );
            FALLBACK_MIN_MEMORY_MIB
        }
    }
}

impl<P: Platform> XenBackend<P> {
    /// [`crate::Backend::create`]: returns once the domain runs.
    pub(super) async fn launch(&self, spec: &LaunchSpec) -> Result<VmInfo> {
        let started = Instant::now();
        self.check(spec)?;
        let id = spec.zone_id;
        self.refuse_existing(id).await?;
        let (kernel, initrd) = self.boot_files(spec).await?;
        let loaded_ms = started.elapsed().as_millis() as u64;
        self.check_memory(spec, &kernel, initrd.len())?;
        let owned_spec = spec.clone();
        let built = self
            .blocking(move |i| i.build(&owned_spec, &kernel, &initrd))
            .await??;
        let domid = built.domid;
        let built_ms = started.elapsed().as_millis() as u64;
        let zone = self.start(id, built).await?;
        lock(&self.inner.zones).insert(id, Arc::new(zone));
        tracing::info!(
            zone = %id,
            domid,
            ms = started.elapsed().as_millis() as u64,
            loaded_ms,
            built_ms,
            "Xen domain started"
        );
        Ok(VmInfo {
            zone_id: id,
            handle: format!("domid {domid}"),
            running: true,
        })
    }

    /// What this backend can never run: refused before anything is made.
    pub(super) fn check(&self, spec: &LaunchSpec) -> Result<()> {
        let invalid = |detail: String| RuntimeError::InvalidSpec {
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
        if spec.nic.is_some() && !std::path::Path::new("/sys/bus/xen-backend/drivers/vif").exists()
        {
            return Err(invalid(
                "the zone has a NIC but netback is not loaded: modprobe xen-netback".into(),
            ));
        }
        spec.check_files()?;
        Ok(())
    }

    async fn refuse_existing(&self, id: Uuid) -> Result<()> {
        if lock(&self.inner.zones).contains_key(&id) || self.find(id).await?.is_some() {
            return Err(RuntimeError::Launch {
                zone: id,
                detail: "the zone already has a domain".into(),
            });
        }
        Ok(())
    }

    /// The spec's kernel and initrd, loaded once per file version.
    async fn boot_files(&self, spec: &LaunchSpec) -> Result<(Arc<KernelImage>, Arc<Vec<u8>>)> {
        let id = spec.zone_id;
        let (kernel, initrd) = (spec.kernel.clone(), spec.initrd.clone());
        self.blocking(move |i| {
            Ok::<_, BootFileError>((i.boot_files.kernel(&kernel)?, i.boot_files.initrd(&initrd)?))
        })
        .await?
        .map_err(|e| match e {
            BootFileError::Io { path, source } => RuntimeError::File {
                what: "kernel or initrd",
                path,
                source,
            },
            e @ BootFileError::Kernel { .. } => RuntimeError::Start {
                zone: id,
                step: "loading the kernel".into(),
                source: e.into(),
            },
        })
    }

    /// Refuses a zone smaller than its kernel and initrd need to boot, naming both numbers.
    fn check_memory(
        &self,
        spec: &LaunchSpec,
        kernel: &KernelImage,
        initrd_len: usize,
    ) -> Result<()> {
        let headroom = self.inner.config.boot_headroom_mib;
        let need = zone_min_mib(kernel, initrd_len, headroom);
        if spec.memory_mib < need {
            return Err(RuntimeError::InvalidSpec {
                zone: spec.zone_id,
                detail: format!(
                    "{} MiB of memory is below the {need} MiB a Xen zone with this kernel and initrd needs ({} MiB for the kernel's initial mapping, {headroom} MiB to boot)",
                    spec.memory_mib,
                    need - headroom,
                ),
            });
        }
        Ok(())
    }

    /// Connects console 0 and unpauses the built domain, then starts connecting its IDM
    /// console in the background; abandons the domain if either step fails.
    async fn start(&self, id: Uuid, built: Built) -> Result<Zone> {
        let domid = built.domid;
        let console = match self
            .connect_console(id, domid, Some(built.console_port))
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(self.abandon(id, domid, built.disks, e).await),
        };
        let unpaused = self
            .blocking(move |i| i.hv.unpause(domid))
            .await
            .and_then(|r| r.map_err(xen(format!("unpausing domain {domid}"))));
        if let Err(e) = unpaused {
            Channel::connected(console).stop().await;
            return Err(self.abandon(id, domid, built.disks, e).await);
        }
        // The task holds the backend until the guest's frontend shows up or the domain stops.
        let idm = {
            let this = self.clone();
            tokio::spawn(async move { this.connect_idm(id, domid).await })
        };
        Ok(Zone::new(
            domid,
            Channel::connected(console),
            Channel::connecting(idm),
            built.disks,
        ))
    }

    /// Connects console 0: grant reference 0 and the console event channel, known from the
    /// build or read from the domain's dom0-owned `console/port` node.
    pub(super) async fn connect_console(
        &self,
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
                devices::parse_num(value).ok_or_else(|| RuntimeError::Launch {
                    zone,
                    detail: format!("{path} holds no event channel port"),
                })?
            }
        };
        self.inner.rings.primary(domid, port).map_err(xen(format!(
            "connecting the console (hvc0) of domain {domid}"
        )))
    }

    /// Tears down a domain that failed during create and returns the create error.
    async fn abandon(
        &self,
        zone: Uuid,
        domid: DomId,
        disks: Vec<Box<dyn Disk>>,
        e: RuntimeError,
    ) -> RuntimeError {
        let t = self.inner.config.cleanup_timeouts();
        match self
            .blocking(move |i| teardown::teardown(&i.hv, &i.xs, zone, Some(domid), disks, t))
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

impl<P: Platform> Inner<P> {
    /// Attaches the disks, builds the domain and writes its xenstore home and devices
    /// (blocking). On failure nothing is left.
    fn build(&self, spec: &LaunchSpec, kernel: &KernelImage, initrd: &[u8]) -> Result<Built> {
        let zone = spec.zone_id;
        let t = Instant::now();
        let disks = self.attach_disks(spec)?;
        let loops_ms = t.elapsed().as_millis() as u64;
        let cfg = DomainConfig::new(
            *zone.as_bytes(),
            spec.memory_mib,
            spec.vcpus,
            spec.kernel_cmdline.clone(),
        );
        // The builder destroys the domain again if it fails half-way; dropping the disks
        // then detaches them.
        let built = DomainBuilder::new(&self.hv)
            .build(&cfg, kernel, Some(initrd))
            .map_err(|e| RuntimeError::Start {
                zone,
                step: "building the domain".into(),
                source: e.into(),
            })?;
        let domid = built.domid;
        let build_ms = t.elapsed().as_millis() as u64 - loops_ms;
        if let Err(e) = self.wire(spec, &cfg, &built, &disks) {
            let t = self.config.cleanup_timeouts();
            if let Err(left) = teardown::teardown(&self.hv, &self.xs, zone, Some(domid), disks, t) {
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
            disks,
        })
    }

    /// The root image (xvda) and the config block (xvdb) as read-only disks.
    fn attach_disks(&self, spec: &LaunchSpec) -> Result<Vec<Box<dyn Disk>>> {
        let mut disks = Vec::with_capacity(2);
        for (what, image) in [
            ("the root image", &spec.root_image),
            ("the config block", &spec.config_block),
        ] {
            let disk = self.disks.attach_read_only(image).map_err(xen(format!(
                "attaching {what} {} to a loop device",
                image.display()
            )))?;
            disks.push(disk);
        }
        Ok(disks)
    }

    /// Writes the domain's xenstore home (with our ownership marker), introduces it to
    /// xenstored and writes its devices: the disks, the IDM console and the NIC.
    fn wire(
        &self,
        spec: &LaunchSpec,
        cfg: &DomainConfig,
        built: &BuiltDomain,
        disks: &[Box<dyn Disk>],
    ) -> spore_xen::Result<()> {
        let domid = built.domid;
        let mut xs = self.xs.connect()?;
        let id = spec.zone_id.to_string();
        builder::introduce(
            &mut xs,
            built,
            cfg,
            &spec.vm_name(),
            &[(store::ZONE_KEY, &id), (store::OWNER_KEY, &self.owner)],
        )?;
        for (index, disk) in (0..).zip(disks) {
            devices::add_vbd(
                &mut xs,
                domid,
                &Vbd {
                    index,
                    physical_device: disk.physical_device(),
                    device_path: disk.device_path(),
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
    }
}
