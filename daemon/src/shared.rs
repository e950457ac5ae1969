//! What the daemon's parts share: the configuration, the zone table, the image service, the
//! backend, the console hubs and the guests' links, with the zone operations every part needs
//! (fail, release a VM, open a console). The drivers work on this; the daemon (`daemon.rs`)
//! owns it beside the driver registry, so no part of the core depends on one that depends on
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use spore_api::v1;
use spore_runtime::{Backend, BackendProbe};
use uuid::Uuid;

use crate::config::Config;
use crate::console::{ConsoleHub, Ending};
use crate::idm::GuestLinks;
use crate::images::Images;
use crate::launch::zone_dir;
use crate::state;
use crate::zones::Zones;

/// Which backend the daemon uses, and why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub kind: v1::BackendKind,
    pub reason: String,
    pub probes: Vec<BackendProbe>,
}

/// The daemon's shared state (see the module doc).
pub struct Shared {
    pub config: Config,
    pub zones: Arc<Zones>,
    pub images: Images,
    pub backend: Option<Arc<dyn Backend>>,
    pub selection: Selection,
    consoles: Mutex<HashMap<Uuid, Arc<ConsoleHub>>>,
    /// The IDM links of supervised zones (exec, metrics).
    pub guests: GuestLinks,
}

impl Shared {
    pub fn new(
        config: Config,
        zones: Arc<Zones>,
        images: Images,
        backend: Option<Arc<dyn Backend>>,
        selection: Selection,
    ) -> Shared {
        Shared {
            config,
            zones,
            images,
            backend,
            selection,
            consoles: Mutex::new(HashMap::new()),
            guests: GuestLinks::default(),
        }
    }

    /// The zone's console hub (opened on first use, also for zones that already ended).
    pub fn console(&self, id: Uuid) -> std::io::Result<Arc<ConsoleHub>> {
        let mut consoles = self.consoles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hub) = consoles.get(&id) {
            return Ok(hub.clone());
        }
        let dir = zone_dir(&self.config, id);
        std::fs::create_dir_all(&dir)?;
        let hub = ConsoleHub::open(&dir, self.config.zones.console_log_bytes)?;
        if let Some(record) = self.zones.get(id) {
            match (record.state(), record.status().exit) {
                (v1::ZoneState::Exited, Some(exit)) => hub.end(Ending::Exited(exit)),
                (v1::ZoneState::Failed, _) => hub.end(Ending::Gone(record.status().reason)),
                _ => {}
            }
        }
        consoles.insert(id, hub.clone());
        Ok(hub)
    }

    pub(crate) fn forget_console(&self, id: Uuid) -> Option<Arc<ConsoleHub>> {
        self.consoles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Marks a zone FAILED (when its state allows) with `reason`.
    pub(crate) async fn fail(&self, id: Uuid, reason: &str) {
        let Some(record) = self.zones.get(id) else {
            return;
        };
        if !state::can_transition(record.state(), v1::ZoneState::Failed) {
            return;
        }
        if let Err(e) = self
            .zones
            .transition(id, v1::ZoneState::Failed, reason, |_| {})
            .await
        {
            tracing::error!(zone = %id, "cannot record the failure ({reason}): {e}");
        }
        if let Some(hub) = self
            .consoles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            hub.end(Ending::Gone(reason.to_string()));
        }
    }

    /// Releases whatever VM the backend still holds for a zone (logged, not fatal).
    pub(crate) async fn release_vm(&self, id: Uuid) {
        if let Some(b) = &self.backend
            && let Err(e) = b.destroy(id).await
        {
            tracing::error!(zone = %id, "releasing the VM failed: {}", chain(&e));
            return;
        }
        // The config block carries the zone's environment (secrets, often) and nothing reads it
        // once the VM is gone; the console log stays for `zone logs` until the zone is destroyed.
        let block = zone_dir(&self.config, id).join(crate::launch::CONFIG_BLOCK);
        if let Err(e) = std::fs::remove_file(&block)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(zone = %id, "removing {}: {e}", block.display());
        }
        // The handle names a VM only while it exists.
        if self
            .zones
            .get(id)
            .is_some_and(|r| !r.status().domain.is_empty())
            && let Err(e) = self
                .zones
                .update(id, |r| r.status_mut().domain.clear())
                .await
        {
            tracing::error!(zone = %id, "{e}");
        }
    }
}

/// An error and its sources, `: `-joined: how the daemon logs and reports errors (each error
/// type's message leaves its source to this).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
