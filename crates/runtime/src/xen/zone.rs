//! A zone's domain as this process holds it: the domid, the console and IDM ring backends
//! served by our pumps, and the disks (loop devices) this process attached.
//!
//! Nothing here is needed to find the domain again: a fresh process re-adopts it from the
//! hypervisor and xenstore ([`super::store`]) and re-maps its rings ([`Channel::open`]).

use std::sync::Mutex;

use spore_xen::DomId;
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;

use super::platform::Disk;
use crate::sync::lock;

/// A ring pump's task.
pub type Pump = JoinHandle<spore_xen::Result<()>>;
/// A connected ring: the stream end and its pump.
pub type Connected = (DuplexStream, Pump);
/// A connection being made in the background (the IDM console waits for the guest's
/// frontend).
pub type Connecting = JoinHandle<crate::Result<Connected>>;

/// One of the zone's two rings (console 0 = hvc0, console 1 = hvc1 with IDM).
#[derive(Debug, Default)]
pub struct Channel {
    /// Connected at create and not handed out yet.
    ready: Option<DuplexStream>,
    pump: Option<Pump>,
    connecting: Option<Connecting>,
}

impl Channel {
    /// A channel whose ring is served from now on; the stream waits for the first `take`.
    pub fn connected((stream, pump): Connected) -> Channel {
        Channel {
            ready: Some(stream),
            pump: Some(pump),
            connecting: None,
        }
    }

    /// A channel whose connection is being made by `task`.
    pub fn connecting(task: Connecting) -> Channel {
        Channel {
            ready: None,
            pump: None,
            connecting: Some(task),
        }
    }

    /// The stream to hand out: the one made at create if nobody took it yet, else a new
    /// connection made by `connect` once the previous pump and mapping are gone.
    pub async fn open(
        &mut self,
        connect: impl std::future::Future<Output = crate::Result<Connected>>,
    ) -> crate::Result<DuplexStream> {
        if let Some(ready) = self.take_ready().await {
            return ready;
        }
        self.stop().await;
        let (stream, pump) = connect.await?;
        self.pump = Some(pump);
        Ok(stream)
    }

    /// The stream made at create, once (waiting for a background connection to finish).
    async fn take_ready(&mut self) -> Option<crate::Result<DuplexStream>> {
        if let Some(task) = self.connecting.take() {
            return Some(match task.await {
                Ok(Ok((stream, pump))) => {
                    self.pump = Some(pump);
                    Ok(stream)
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(crate::RuntimeError::io(
                    "connecting a guest console",
                    std::io::Error::other(e),
                )),
            });
        }
        self.ready.take().map(Ok)
    }

    /// Stops serving the ring: the pump and any pending connection end, and with them our
    /// grant mapping and event channel binding, so the ring can be connected again (by this
    /// process or another) and a destroyed domain is not kept alive by our mappings.
    pub async fn stop(&mut self) {
        self.ready = None;
        if let Some(task) = self.connecting.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(pump) = self.pump.take() {
            pump.abort();
            let _ = pump.await;
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(t) = &self.connecting {
            t.abort();
        }
        if let Some(p) = &self.pump {
            p.abort();
        }
    }
}

/// A zone's domain and what this process serves for it.
#[derive(Debug)]
pub struct Zone {
    pub domid: DomId,
    pub console: tokio::sync::Mutex<Channel>,
    pub idm: tokio::sync::Mutex<Channel>,
    /// Disks attached by this process, held until teardown so that autoclear cannot detach
    /// one before blkback has opened it.
    pub disks: Mutex<Vec<Box<dyn Disk>>>,
}

impl Zone {
    pub fn new(domid: DomId, console: Channel, idm: Channel, disks: Vec<Box<dyn Disk>>) -> Zone {
        Zone {
            domid,
            console: tokio::sync::Mutex::new(console),
            idm: tokio::sync::Mutex::new(idm),
            disks: Mutex::new(disks),
        }
    }

    /// A domain found through xenstore (re-adoption): nothing served yet.
    pub fn adopted(domid: DomId) -> Zone {
        Zone::new(domid, Channel::default(), Channel::default(), Vec::new())
    }

    /// Stops both rings' pumps (before teardown).
    pub async fn stop_channels(&self) {
        self.console.lock().await.stop().await;
        self.idm.lock().await.stop().await;
    }

    pub fn take_disks(&self) -> Vec<Box<dyn Disk>> {
        std::mem::take(&mut *lock(&self.disks))
    }
}
