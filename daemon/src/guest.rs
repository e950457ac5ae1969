//! Talking to a running zone's guest on a client's behalf: exec sessions and metrics, over the
//! zone's IDM link (registered by its driver), on Xen and QEMU alike.

use spore_api::v1::ZoneState;
use spore_idm::proto;
use uuid::Uuid;

use crate::daemon::DaemonError;
use crate::idm::exec::ExecSession;
use crate::idm::{IdmLink, Registration};
use crate::shared::Shared;
use crate::state;
use crate::zones::ZoneError;

impl Shared {
    /// Makes a supervised zone's link reachable for exec and metrics until the guard drops. A
    /// zone found running was adopted from an earlier daemon: the exec sessions that daemon
    /// started lost their clients with it, so the guest cancels them.
    pub fn register_guest(&self, link: &IdmLink) -> Registration<'_> {
        let adopted = self
            .zones
            .get(link.zone())
            .is_some_and(|r| matches!(r.state(), ZoneState::Running | ZoneState::Stopping));
        self.guests.register(link, adopted)
    }

    /// The link of a running zone.
    fn guest_link(&self, id: Uuid, what: &'static str) -> Result<(IdmLink, String), DaemonError> {
        let record = self
            .zones
            .get(id)
            .ok_or_else(|| ZoneError::NotFound(id.to_string()))?;
        let name = record.zone().name.clone();
        if record.state() != ZoneState::Running {
            return Err(DaemonError::WrongState {
                zone: name,
                state: state::name(record.state()),
                needs: what,
            });
        }
        match self.guests.get(id) {
            Some(link) => Ok((link, name)),
            None => Err(DaemonError::Unsupported(format!(
                "zone {name} has no IDM channel to its guest (spored could not open it; see its log)"
            ))),
        }
    }

    /// Starts a command in a running zone (`start` validated by the caller).
    pub async fn exec(
        &self,
        id: Uuid,
        start: proto::ExecStart,
    ) -> Result<ExecSession, DaemonError> {
        let (link, zone) = self.guest_link(id, "exec needs a running zone")?;
        link.exec(start, self.config.zones.max_execs_per_zone)
            .await
            .map_err(|source| DaemonError::Guest { zone, source })
    }

    /// A running zone's metrics as its guest sees them.
    pub async fn metrics(
        &self,
        id: Uuid,
        processes: bool,
    ) -> Result<proto::MetricsResponse, DaemonError> {
        let (link, zone) = self.guest_link(id, "metrics need a running zone")?;
        link.metrics(processes)
            .await
            .map_err(|source| DaemonError::Guest { zone, source })
    }
}
