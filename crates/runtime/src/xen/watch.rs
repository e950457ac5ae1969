//! Watching a running domain: until it stops ([`XenBackend::watch_stop`]), and until its
//! guest connects the IDM console ([`XenBackend::connect_idm`]).

use spore_xen::DomId;
use spore_xen::Hypervisor;
use spore_xen::xs::AsyncXs;
use uuid::Uuid;

use super::config::{IDM_CONSOLE, STOP_POLL};
use super::platform::{Platform, ServeRings};
use super::status::{self, DomainState};
use super::zone::Connected;
use super::{XenBackend, xen};
use crate::{Result, RuntimeError, VmStop};

impl<P: Platform> XenBackend<P> {
    /// Resolves when `zone`'s domain `domid` has stopped: on `@releaseDomain` (fired when a
    /// domain shuts down or goes) and every [`STOP_POLL`], it asks the hypervisor.
    pub(super) async fn watch_stop(&self, zone: Uuid, domid: DomId) -> Result<VmStop> {
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
    pub(super) async fn connect_idm(&self, zone: Uuid, domid: DomId) -> Result<Connected> {
        let xs = AsyncXs::connect()
            .await
            .map_err(xen("connecting to xenstored"))?;
        let timeout = self.inner.config.idm_timeout;
        let rings = &self.inner.rings;
        tokio::select! {
            connected = rings.secondary(&xs, domid, IDM_CONSOLE, timeout) => {
                connected.map_err(xen(format!(
                    "connecting the IDM console (hvc1) of domain {domid}"
                )))
            }
            stop = self.watch_stop(zone, domid) => Err(RuntimeError::Launch {
                zone,
                detail: format!(
                    "the domain stopped before the guest connected its IDM console (hvc1): {}",
                    stop?.detail
                ),
            }),
        }
    }
}
