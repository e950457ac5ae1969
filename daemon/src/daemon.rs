//! The daemon core: zone creation and destruction, reconcile at start, and the driver registry,
//! over the state every part shares (`shared.rs`). RPC handlers (`api/`) call into this; it
//! knows nothing of gRPC.

use std::sync::Arc;

use spore_api::v1;
use uuid::Uuid;

use crate::driver::{Drivers, Mode};
use crate::images::{ImageError, ZoneTarget};
use crate::network::{AddressPlan, NetworkError};
pub use crate::shared::{Selection, Shared, chain};
use crate::store::{ZoneImage, ZoneRecord};
use crate::validate::{self, FieldError, Limits};
use crate::zones::ZoneError;

/// Why a zone request failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No backend can run zones here; the message says what to install.
    #[error("no backend can run zones on this host: {0}")]
    NoBackend(String),
    /// This spore build or host cannot do what was asked; the message says what is missing.
    #[error("{0}")]
    Unsupported(String),
    /// The request needs the zone in another state.
    #[error("zone {zone} is {state}: {needs}")]
    WrongState {
        zone: String,
        state: &'static str,
        needs: &'static str,
    },
    /// The backend cannot make this change (FAILED_PRECONDITION).
    #[error("zone {zone}")]
    BackendCannot {
        zone: String,
        #[source]
        source: spore_runtime::RuntimeError,
    },
    /// The backend failed to carry out a change.
    #[error("{what} of zone {zone} failed")]
    Backend {
        what: &'static str,
        zone: String,
        #[source]
        source: spore_runtime::RuntimeError,
    },
    /// Destroying the zone failed; the zone stays, FAILED with this reason.
    #[error("zone {zone} could not be destroyed: {reason}")]
    NotDestroyed { zone: String, reason: String },
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// The spec's image names no image (an id not in the cache) or several.
    #[error("spec.image")]
    Image(#[source] ImageError),
    /// A request to the zone's guest (exec, metrics) failed.
    #[error("zone {zone}")]
    Guest {
        zone: String,
        #[source]
        source: crate::idm::LinkError,
    },
}

/// The daemon: the shared state, the driver registry (one task per zone) and the address plan.
/// It reads as its [`Shared`] state (`daemon.zones`, `daemon.config`, ...).
pub struct Daemon {
    shared: Arc<Shared>,
    drivers: Arc<Drivers>,
    /// Where zone addresses come from (an invalid plan fails creations, not the daemon).
    addresses: Result<AddressPlan, NetworkError>,
}

impl std::ops::Deref for Daemon {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Daemon {
    pub fn new(shared: Shared) -> Arc<Daemon> {
        let drivers = Arc::new(Drivers::new(shared.config.zones.max_parallel_launches));
        let addresses = AddressPlan::from_config(&shared.config.network);
        Arc::new(Daemon {
            shared: Arc::new(shared),
            drivers,
            addresses,
        })
    }

    /// Picks up where a previous daemon left off: re-adopts running zones, fails zones caught
    /// half-built, resumes destroys and pending launches, and destroys VMs nobody owns.
    pub async fn start(self: &Arc<Self>) {
        let running = match &self.backend {
            Some(b) => match b.list().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::error!("cannot list the backend's VMs: {}", chain(&e));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        match self.zones.store().run(|s| s.release_orphans()).await {
            Ok(orphans) if !orphans.is_empty() => {
                tracing::warn!(
                    "released the network reservations of {} zones no longer stored",
                    orphans.len()
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot check network reservations: {e}"),
        }
        let known: Vec<ZoneRecord> = self.zones.list();
        for vm in &running {
            if !known.iter().any(|z| z.uuid() == vm.zone_id) {
                tracing::warn!(zone = %vm.zone_id, handle = %vm.handle, "destroying a VM no stored zone owns");
                if let Some(b) = &self.backend
                    && let Err(e) = b.destroy(vm.zone_id).await
                {
                    tracing::error!(zone = %vm.zone_id, "{}", chain(&e));
                }
            }
        }
        for record in known {
            let id = record.uuid();
            let vm = running.iter().find(|vm| vm.zone_id == id);
            use v1::ZoneState::*;
            match record.state() {
                Pending => self.spawn_driver(id, Mode::Launch),
                Preparing | Creating => {
                    self.release_vm(id).await;
                    self.fail(id, "spored restarted while the zone was being created; destroy it and launch it again").await;
                }
                Starting | Running | Stopping => match vm {
                    Some(vm) if vm.running => self.spawn_driver(id, Mode::Adopt),
                    _ => {
                        self.release_vm(id).await;
                        self.fail(id, "the zone's VM stopped while spored was not running; its exit status is unknown").await;
                    }
                },
                Destroying => self.spawn_driver(id, Mode::Destroy),
                Exited | Failed => {
                    if vm.is_some() {
                        self.release_vm(id).await;
                    }
                }
                Destroyed | Unspecified => {}
            }
        }
    }

    /// Validates and stores a new zone, then starts launching it.
    pub async fn create_zone(
        self: &Arc<Self>,
        spec: v1::ZoneSpec,
    ) -> Result<(Uuid, String), DaemonError> {
        let (total, _) = crate::host::memory();
        let vm = self.backend.as_ref().map(|b| b.limits());
        let limits = Limits {
            host_cpus: crate::host::cpus(),
            host_memory_mib: total >> 20,
            min_memory_mib: vm.map_or(0, |l| l.min_memory_mib),
            max_vcpus: vm.map_or(u32::MAX, |l| l.max_vcpus),
            default_vcpus: self.config.zones.default_vcpus,
            default_memory_mib: self.config.zones.default_memory_mib,
        };
        let valid = validate::validate(&spec, &limits)?;
        if self.backend.is_none() {
            return Err(DaemonError::NoBackend(self.selection.reason.clone()));
        }
        if !spec.ports.is_empty() {
            return Err(DaemonError::Unsupported(
                "publishing ports needs zone networking (sporenet), which this spore build does not provide yet"
                    .into(),
            ));
        }
        let image = self
            .images
            .resolve_for_zone(&valid.image)
            .await
            .map_err(DaemonError::Image)?;
        let id = Uuid::new_v4();
        let name = if spec.name.is_empty() {
            format!("zone-{}", &id.simple().to_string()[..8])
        } else {
            spec.name.clone()
        };
        let backend = self.selection.kind;
        let addresses = match (&self.addresses, spec.network_disabled) {
            (_, true) => None,
            (Ok(plan), false) => Some(*plan),
            (Err(e), false) => return Err(ZoneError::Network(e.clone()).into()),
        };
        let network_disabled = spec.network_disabled;
        let mut record = ZoneRecord::new(v1::Zone {
            id: id.to_string(),
            name: name.clone(),
            spec: Some(spec),
            status: Some(v1::ZoneStatus {
                backend: backend as i32,
                vcpus: valid.vcpus,
                memory_mib: valid.memory_mib,
                ..Default::default()
            }),
        });
        record.max_vcpus = valid.vcpus;
        record.max_memory_mib = valid.memory_mib;
        // An image named by id is held from now on: image rm refuses it while the zone exists.
        record.image = Some(match &image {
            ZoneTarget::Reference(r) => ZoneImage::Reference(r.to_string()),
            ZoneTarget::Cached(cached) => {
                record.image_key = cached.key();
                ZoneImage::Id(cached.image.manifest_digest.to_string())
            }
        });
        if network_disabled {
            record.status_mut().network = Some(v1::ZoneNetworkStatus {
                attached: false,
                detail: "networking disabled in the zone's spec".into(),
                ..Default::default()
            });
        }
        self.zones
            .insert(
                record,
                &format!("requested image {image}"),
                addresses.as_ref(),
            )
            .await?;
        self.spawn_driver(id, Mode::Launch);
        Ok((id, name))
    }

    /// Destroys a zone and waits until it is gone (or destroying it failed).
    pub async fn destroy_zone(self: &Arc<Self>, id: Uuid) -> Result<(), DaemonError> {
        if self.zones.get(id).is_none() {
            return Err(ZoneError::NotFound(id.to_string()).into());
        }
        let mut done = self.drivers.destroy(&self.shared, id);
        // The driver is gone when this resolves (an error means it ended without saying so).
        let _ = done.wait_for(|d| *d).await;
        match self.zones.get(id) {
            None => Ok(()),
            Some(record) => Err(DaemonError::NotDestroyed {
                zone: id.to_string(),
                reason: record.status().reason,
            }),
        }
    }

    pub(crate) fn spawn_driver(&self, id: Uuid, mode: Mode) {
        self.drivers.spawn(&self.shared, id, mode);
    }
}
