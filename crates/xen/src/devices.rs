//! PV device plumbing in xenstore: frontend/backend nodes for vbd (blkback), vif (netback)
//! and secondary consoles served by our own process, the backend state handshake, and
//! teardown.
//!
//! Trust rule: every path this module writes, waits on or removes is computed from the
//! domid, the device kind and the device id; nothing read from a guest-writable node is ever
//! used as a path. The only guest-written values read are numbers (state, ring-ref, port),
//! parsed and bounded.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::builder::introduce::{domain_path, guest_readable, vm_path};
use crate::console::ConsoleBackend;
use crate::gntdev::GntDev;
use crate::xs::{Access, AsyncXs, Perm, XsClient};
use crate::{DomId, Result, XenError};

/// xenbus states (`io/xenbus.h`).
pub mod state {
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;
}

/// The device kinds spore creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vbd,
    Vif,
    Console,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vbd => "vbd",
            Kind::Vif => "vif",
            Kind::Console => "console",
        }
    }
}

/// `/local/domain/0/backend/<kind>/<domid>/<devid>`.
pub fn backend_path(kind: Kind, domid: DomId, devid: u32) -> String {
    format!("/local/domain/0/backend/{}/{domid}/{devid}", kind.as_str())
}

/// `/local/domain/<domid>/device/<kind>/<devid>`.
pub fn frontend_path(kind: Kind, domid: DomId, devid: u32) -> String {
    format!("{}/device/{}/{devid}", domain_path(domid), kind.as_str())
}

/// Linux's xvd device number for disk `index` (xvda = 0): major 202, 16 minors per disk.
pub fn xvd_devid(index: u32) -> u32 {
    202 * 256 + 16 * index
}

/// The name `xvd<letter>` for disk `index` (< 26).
pub fn xvd_name(index: u32) -> String {
    format!("xvd{}", (b'a' + (index % 26) as u8) as char)
}

fn frontend_perms(domid: DomId) -> [Perm; 2] {
    // The guest owns its frontend; the backend (dom0) may read it.
    [Perm::new(domid, Access::None), Perm::new(0, Access::Read)]
}

/// Writes a device's frontend and backend nodes in one transaction.
fn write_device<T: Read + Write>(
    xs: &mut XsClient<T>,
    kind: Kind,
    domid: DomId,
    devid: u32,
    front: &[(&str, String)],
    back: &[(&str, String)],
) -> Result<()> {
    let f = frontend_path(kind, domid, devid);
    let b = backend_path(kind, domid, devid);
    let fp = frontend_perms(domid);
    let bp = guest_readable(domid);
    xs.transaction(|tx| {
        tx.write(&f, b"")?;
        tx.set_perms(&f, &fp)?;
        for (k, v) in [
            ("backend", b.clone()),
            ("backend-id", "0".into()),
            ("state", "1".into()),
        ]
        .iter()
        .chain(front)
        {
            let p = format!("{f}/{k}");
            tx.write(&p, v.as_bytes())?;
            tx.set_perms(&p, &fp)?;
        }
        tx.write(&b, b"")?;
        tx.set_perms(&b, &bp)?;
        // A node made by WRITE takes its parent's permissions with the writer (dom0) as
        // owner: exactly `bp` under the backend directory, so its nodes need no SET_PERMS
        // (one round trip each; xenstored is slow in a loaded dom0). Frontend nodes do: the
        // guest owns them.
        for (k, v) in [
            ("frontend", f.clone()),
            ("frontend-id", domid.to_string()),
            ("online", "1".into()),
            ("state", "1".into()),
        ]
        .iter()
        .chain(back)
        {
            tx.write(&format!("{b}/{k}"), v.as_bytes())?;
        }
        Ok(())
    })
}

/// A read-only disk served by blkback from a block device (a loop device).
#[derive(Debug, Clone)]
pub struct Vbd {
    /// Disk index: 0 = xvda.
    pub index: u32,
    /// `major:minor` in hex (`LoopDevice::physical_device`).
    pub physical_device: String,
    /// `/dev/loopN`, informational.
    pub device_path: String,
}

/// Writes a vbd's nodes; blkback connects when it sees `physical-device`.
pub fn add_vbd<T: Read + Write>(xs: &mut XsClient<T>, domid: DomId, vbd: &Vbd) -> Result<u32> {
    let devid = xvd_devid(vbd.index);
    write_device(
        xs,
        Kind::Vbd,
        domid,
        devid,
        &[
            ("virtual-device", devid.to_string()),
            ("device-type", "disk".into()),
        ],
        &[
            ("dev", xvd_name(vbd.index)),
            ("type", "phy".into()),
            ("mode", "r".into()),
            ("device-type", "disk".into()),
            ("removable", "0".into()),
            ("bootable", "1".into()),
            ("params", vbd.device_path.clone()),
            ("physical-device-path", vbd.device_path.clone()),
            ("physical-device", vbd.physical_device.clone()),
        ],
    )?;
    Ok(devid)
}

/// A network interface served by netback (`vif<domid>.<devid>` in dom0).
#[derive(Debug, Clone)]
pub struct Vif {
    pub devid: u32,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub mtu: u32,
}

/// Writes a vif's nodes. No hotplug script runs: spore's network service takes the
/// interface, so `hotplug-status` is written as connected at once (netback waits for it).
pub fn add_vif<T: Read + Write>(xs: &mut XsClient<T>, domid: DomId, vif: &Vif) -> Result<()> {
    let valid_mac = vif.mac.len() == 17
        && vif
            .mac
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid_mac {
        return Err(XenError::InvalidArgument(format!(
            "bad MAC address {:?}",
            vif.mac
        )));
    }
    write_device(
        xs,
        Kind::Vif,
        domid,
        vif.devid,
        &[
            ("handle", vif.devid.to_string()),
            ("mac", vif.mac.clone()),
            ("mtu", vif.mtu.to_string()),
        ],
        &[
            ("handle", vif.devid.to_string()),
            ("mac", vif.mac.clone()),
            ("mtu", vif.mtu.to_string()),
            ("type", "vif".into()),
            ("script", String::new()),
            ("hotplug-status", "connected".into()),
        ],
    )
}

/// Writes a secondary console's nodes (`devid` >= 1; console 0 is the start_info console).
pub fn add_console<T: Read + Write>(
    xs: &mut XsClient<T>,
    domid: DomId,
    devid: u32,
    name: &str,
) -> Result<()> {
    if devid == 0 {
        return Err(XenError::InvalidArgument(
            "console 0 is the start_info console".into(),
        ));
    }
    write_device(
        xs,
        Kind::Console,
        domid,
        devid,
        &[
            ("protocol", "vt100".into()),
            ("type", "spore".into()),
            ("name", name.to_string()),
            ("limit", "1048576".into()),
            ("output", "spore".into()),
        ],
        &[("protocol", "vt100".into()), ("type", "spore".into())],
    )
}

/// Reads a guest-written number, bounded; `None` if absent or not a number.
fn read_num<T: Read + Write>(xs: &mut XsClient<T>, path: &str) -> Result<Option<u32>> {
    Ok(parse_num(xs.read(path)?))
}

/// A guest-written node's value as a number: at most 10 bytes of decimal digits (surrounding
/// whitespace allowed), else `None`.
pub fn parse_num(value: Option<Vec<u8>>) -> Option<u32> {
    value
        .filter(|v| v.len() <= 10)
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
}

/// Waits for a secondary console's frontend to publish its ring and port, maps it and
/// reports the backend connected. The ring-ref and port are guest-written numbers. Driven by
/// a xenstore watch on the frontend instead of polling, so it costs nothing while the guest
/// boots and can be dropped at any await.
pub async fn connect_console_async(
    xs: &AsyncXs,
    gnt: &GntDev,
    domid: DomId,
    devid: u32,
    timeout: Duration,
) -> Result<ConsoleBackend> {
    let f = frontend_path(Kind::Console, domid, devid);
    let b = backend_path(Kind::Console, domid, devid);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut watch = xs.watch(&f).await?;
    let (gref, port) = loop {
        let st = parse_num(xs.read(&format!("{f}/state")).await?).unwrap_or(0);
        let gref = parse_num(xs.read(&format!("{f}/ring-ref")).await?);
        let port = parse_num(xs.read(&format!("{f}/port")).await?);
        if let (true, Some(g), Some(p)) = (st >= state::INITIALISED, gref, port) {
            break (g, p);
        }
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(XenError::XsClosed),
            Err(_) => {
                return Err(XenError::BackendTimeout {
                    path: f,
                    want: state::INITIALISED,
                    last: st.to_string(),
                    secs: timeout.as_secs(),
                });
            }
        }
    };
    drop(watch);
    let backend = ConsoleBackend::connect(gnt, domid, gref, port)?;
    xs.write(
        &format!("{b}/state"),
        state::CONNECTED.to_string().as_bytes(),
    )
    .await?;
    Ok(backend)
}

/// Waits until the node at `path` (a frontend or backend `state`) reaches one of `want`.
pub fn wait_state<T: Read + Write>(
    xs: &mut XsClient<T>,
    path: &str,
    want: &[u32],
    timeout: Duration,
) -> Result<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = read_num(xs, path)?;
        if let Some(s) = st
            && want.contains(&s)
        {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            return Err(XenError::BackendTimeout {
                path: path.to_string(),
                want: want.first().copied().unwrap_or(0),
                last: st.map_or_else(|| "absent".into(), |s| s.to_string()),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Closes one device: backend state 5 (Closing), wait for the frontend to close (5/6) or
/// vanish — a dead or hostile guest must not hold us past `timeout` — then state 6 and
/// removal of both node trees.
pub fn close_device<T: Read + Write>(
    xs: &mut XsClient<T>,
    kind: Kind,
    domid: DomId,
    devid: u32,
    timeout: Duration,
) -> Result<()> {
    let f = frontend_path(kind, domid, devid);
    let b = backend_path(kind, domid, devid);
    if xs.read(&format!("{b}/state"))?.is_some() {
        xs.write(&format!("{b}/state"), state::CLOSING.to_string().as_bytes())?;
        let fstate = format!("{f}/state");
        if read_num(xs, &fstate)?.is_some()
            && let Err(e) = wait_state(xs, &fstate, &[state::CLOSING, state::CLOSED], timeout)
        {
            tracing::warn!(domid, devid, error = %e, "frontend did not close; removing anyway");
        }
        xs.write(&format!("{b}/state"), state::CLOSED.to_string().as_bytes())?;
    }
    xs.rm(&b)?;
    xs.rm(&f)
}

/// Removes everything spore wrote for a domain: its home, its `/vm` entry and the backend
/// directories of every kind spore creates. Idempotent.
pub fn remove_domain_nodes<T: Read + Write>(
    xs: &mut XsClient<T>,
    domid: DomId,
    handle: &[u8; 16],
) -> Result<()> {
    for kind in [Kind::Vbd, Kind::Vif, Kind::Console] {
        xs.rm(&format!(
            "/local/domain/0/backend/{}/{domid}",
            kind.as_str()
        ))?;
    }
    xs.rm(&domain_path(domid))?;
    xs.rm(&vm_path(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_written_numbers_are_bounded() {
        let n = |v: &[u8]| parse_num(Some(v.to_vec()));
        assert_eq!(n(b"42"), Some(42));
        assert_eq!(n(b" 7\n"), Some(7));
        assert_eq!(n(b"4294967295"), Some(u32::MAX));
        assert_eq!(n(b"4294967296"), None, "overflow");
        assert_eq!(n(b"00000000001"), None, "longer than 10 bytes");
        assert_eq!(n(b"-1"), None);
        assert_eq!(n(b"0x10"), None);
        assert_eq!(n(b"../../x"), None);
        assert_eq!(n(b"\xff\xfe"), None, "not UTF-8");
        assert_eq!(n(b""), None);
        assert_eq!(parse_num(None), None);
    }

    #[test]
    fn paths_are_computed_not_read() {
        assert_eq!(
            backend_path(Kind::Vbd, 5, 51712),
            "/local/domain/0/backend/vbd/5/51712"
        );
        assert_eq!(
            frontend_path(Kind::Console, 5, 1),
            "/local/domain/5/device/console/1"
        );
        assert_eq!(xvd_devid(0), 51712);
        assert_eq!(xvd_devid(1), 51728);
        assert_eq!(xvd_name(1), "xvdb");
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    #[test]
    fn vbd_nodes_and_teardown_with_a_frontend_that_never_closes() {
        let mut xs = crate::xs::tests::sync_client(0);
        let vbd = Vbd {
            index: 0,
            physical_device: "7:3".into(),
            device_path: "/dev/loop3".into(),
        };
        let devid = add_vbd(&mut xs, 9, &vbd).unwrap();
        let b = backend_path(Kind::Vbd, 9, devid);
        let f = frontend_path(Kind::Vbd, 9, devid);
        assert_eq!(
            xs.read_string(&format!("{b}/physical-device"))
                .unwrap()
                .as_deref(),
            Some("7:3")
        );
        assert_eq!(
            xs.read_string(&format!("{f}/backend")).unwrap().as_deref(),
            Some(b.as_str())
        );
        assert_eq!(
            xs.get_perms(&f).unwrap()[0],
            Perm::new(9, Access::None),
            "guest owns its frontend"
        );
        assert_eq!(
            xs.get_perms(&b).unwrap()[0],
            Perm::new(0, Access::None),
            "dom0 owns the backend"
        );
        // A hostile guest repoints its frontend's backend key: teardown must not follow it.
        xs.write(
            &format!("{f}/backend"),
            b"/local/domain/0/backend/vbd/1/51712",
        )
        .unwrap();
        xs.write("/local/domain/0/backend/vbd/1/51712/state", b"4")
            .unwrap();
        let t = Instant::now();
        close_device(&mut xs, Kind::Vbd, 9, devid, Duration::from_millis(200)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(xs.read(&format!("{b}/state")).unwrap(), None);
        assert_eq!(xs.read(&format!("{f}/state")).unwrap(), None);
        assert_eq!(
            xs.read_string("/local/domain/0/backend/vbd/1/51712/state")
                .unwrap()
                .as_deref(),
            Some("4"),
            "another domain's backend is untouched"
        );
        add_vif(
            &mut xs,
            9,
            &Vif {
                devid: 0,
                mac: "00:16:3e:00:00:01".into(),
                mtu: 1500,
            },
        )
        .unwrap();
        assert!(
            add_vif(
                &mut xs,
                9,
                &Vif {
                    devid: 1,
                    mac: "../../x".into(),
                    mtu: 1500
                }
            )
            .is_err()
        );
        remove_domain_nodes(&mut xs, 9, &[0; 16]).unwrap();
        assert_eq!(
            xs.read("/local/domain/0/backend/vif/9/0/state").unwrap(),
            None
        );
    }
}
