//! Changing a running zone's vCPUs and memory (`UpdateZoneResources`): bounded by what the
//! zone was created with, applied by the backend (Xen: vCPU hotplug and the balloon target;
//! QEMU cannot yet), then recorded in the zone's status with a `ZoneResourcesChanged` event.

use spore_api::v1::{self, ZoneState};
use spore_runtime::{Resources, RuntimeError};
use uuid::Uuid;

use crate::daemon::{Daemon, DaemonError};
use crate::state;
use crate::store::ZoneRecord;
use crate::validate::{FieldError, bad};
use crate::zones::ZoneError;

impl Daemon {
    /// Sets a running zone's online vCPUs and memory target; a `None` keeps the current value.
    /// Returns the updated record.
    pub async fn update_resources(
        &self,
        id: Uuid,
        vcpus: Option<u32>,
        memory_mib: Option<u64>,
    ) -> Result<ZoneRecord, DaemonError> {
        let record = self
            .zones
            .get(id)
            .ok_or_else(|| ZoneError::NotFound(id.to_string()))?;
        let name = &record.zone().name;
        if record.state() != ZoneState::Running {
            return Err(DaemonError::WrongState {
                zone: name.clone(),
                state: state::name(record.state()),
                needs: "only a running zone's resources can change",
            });
        }
        let status = record.status();
        let wanted = Resources {
            vcpus: vcpus.unwrap_or(status.vcpus),
            memory_mib: memory_mib.unwrap_or(status.memory_mib),
        };
        check(&record, wanted)?;
        let Some(backend) = &self.backend else {
            return Err(DaemonError::NoBackend(self.selection.reason.clone()));
        };
        backend
            .update_resources(id, wanted)
            .await
            .map_err(|e| match e {
                RuntimeError::Unsupported { .. } => DaemonError::BackendCannot {
                    zone: name.clone(),
                    source: e,
                },
                RuntimeError::InvalidSpec { detail, .. } => {
                    DaemonError::Invalid(bad("resources", detail))
                }
                source => DaemonError::Backend {
                    what: "changing the resources",
                    zone: name.clone(),
                    source,
                },
            })?;
        // Committed with its event, so watchers see the new resources without polling.
        let (previous_vcpus, previous_memory_mib) = (status.vcpus, status.memory_mib);
        let record = self
            .zones
            .update_with_event(
                id,
                |r| {
                    let s = r.status_mut();
                    s.vcpus = wanted.vcpus;
                    s.memory_mib = wanted.memory_mib;
                },
                |r| v1::Event {
                    sequence: 0,
                    time: Some(crate::zones::now()),
                    kind: Some(v1::event::Kind::ZoneResourcesChanged(
                        v1::ZoneResourcesChanged {
                            zone_id: r.zone().id.clone(),
                            zone_name: r.zone().name.clone(),
                            vcpus: wanted.vcpus,
                            memory_mib: wanted.memory_mib,
                            previous_vcpus,
                            previous_memory_mib,
                        },
                    )),
                },
            )
            .await?;
        tracing::info!(zone = %id, vcpus = wanted.vcpus, memory_mib = wanted.memory_mib, "resources changed");
        Ok(record)
    }
}

/// The bounds the zone was created with (its VM cannot grow past them).
fn check(record: &ZoneRecord, wanted: Resources) -> Result<(), FieldError> {
    let (max_vcpus, max_mib) = (record.max_vcpus, record.max_memory_mib);
    if wanted.vcpus == 0 || wanted.vcpus > max_vcpus {
        return Err(bad(
            "vcpus",
            format!(
                "{} vCPUs: the zone was created with {max_vcpus}, so 1 to {max_vcpus} can be online",
                wanted.vcpus
            ),
        ));
    }
    if wanted.memory_mib == 0 || wanted.memory_mib > max_mib {
        return Err(bad(
            "memory_mib",
            format!(
                "{} MiB: the zone was created with {max_mib} MiB and cannot grow past it",
                wanted.memory_mib
            ),
        ));
    }
    Ok(())
}
