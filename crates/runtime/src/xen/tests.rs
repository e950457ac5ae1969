//! The backend's failure paths without Xen: the same backend code over in-memory doubles of
//! dom0 (a hypervisor that keeps domains in a map, a xenstored that keeps nodes in a tree and
//! speaks the wire protocol, disks and console rings that record their lives). Every double
//! writes what happens to one journal, so the tests check order as well as what is left.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use spore_kernel::test_util::elf::{Seg, build as build_elf, linux_notes};
use spore_xen::hypervisor::{CreateDomain, DomainInfo, MemoryRegion};
use spore_xen::sys::pv::VcpuGuestContext;
use spore_xen::xs::wire::{self, Decoder, Message, MsgType};
use spore_xen::xs::{AsyncXs, XsClient};
use spore_xen::{DomId, Hypervisor, XenError};
use uuid::Uuid;

use super::platform::{AttachDisk, Disk, Parts, Platform, ServeRings, XsConnect};
use super::zone::Connected;
use super::{XenBackend, XenConfig};
use crate::{Backend, LaunchSpec, RuntimeError};

/// What the doubles saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// A write outside a transaction.
    XsWrite(String, String),
    /// A removal of a node that existed, outside a transaction.
    XsRm(String),
    Introduce(DomId),
    Unpause(DomId),
    Destroy(DomId),
    DiskDropped(String),
}

#[derive(Debug, Clone, Default)]
struct Journal(Arc<Mutex<Vec<Event>>>);

impl Journal {
    fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    /// Where the first event matching `f` is, panicking with the journal if none does.
    fn position(&self, what: &str, f: impl Fn(&Event) -> bool) -> usize {
        let events = self.events();
        events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {events:#?}"))
    }
}

// ---------------------------------------------------------------- the hypervisor

#[derive(Debug, Default)]
struct HvState {
    domains: BTreeMap<DomId, DomainInfo>,
    next_domid: DomId,
    next_frame: u64,
    next_port: u32,
}

/// Domains in a map; memory mappings are scratch buffers (the builder's output is checked
/// by spore-xen's own tests).
#[derive(Debug, Clone)]
struct FakeHv {
    state: Arc<Mutex<HvState>>,
    journal: Journal,
}

impl FakeHv {
    fn new(journal: &Journal) -> FakeHv {
        FakeHv {
            state: Arc::new(Mutex::new(HvState {
                next_domid: 1,
                next_frame: 0x1000,
                ..HvState::default()
            })),
            journal: journal.clone(),
        }
    }

    /// A domain made by createdomain alone, as a crash between createdomain and introduce
    /// leaves it.
    fn add_domain(&self, handle: Uuid) -> DomId {
        let mut st = self.state.lock().unwrap();
        let domid = st.next_domid;
        st.next_domid += 1;
        st.domains
            .insert(domid, super::testing::domain_info(domid, handle, 0));
        domid
    }

    fn domids(&self) -> Vec<DomId> {
        self.state.lock().unwrap().domains.keys().copied().collect()
    }
}

impl Hypervisor for FakeHv {
    type Mapping = Vec<u8>;

    fn create_domain(&self, cfg: &CreateDomain) -> spore_xen::Result<DomId> {
        Ok(self.add_domain(Uuid::from_bytes(cfg.handle)))
    }
    fn max_vcpus(&self, _: DomId, _: u32) -> spore_xen::Result<()> {
        Ok(())
    }
    fn max_mem(&self, _: DomId, _: u64) -> spore_xen::Result<()> {
        Ok(())
    }
    fn set_address_size(&self, _: DomId, _: u32) -> spore_xen::Result<()> {
        Ok(())
    }
    fn populate_physmap(
        &self,
        _: DomId,
        order: u32,
        frames: &mut [u64],
    ) -> spore_xen::Result<usize> {
        let mut st = self.state.lock().unwrap();
        for f in frames.iter_mut() {
            *f = st.next_frame;
            st.next_frame += 1 << order;
        }
        Ok(frames.len())
    }
    fn map_foreign(&self, _: DomId, mfns: &[u64]) -> spore_xen::Result<Vec<u8>> {
        Ok(vec![0; mfns.len() * 4096])
    }
    fn map_grant_table(&self, _: DomId) -> spore_xen::Result<Vec<u8>> {
        Ok(vec![0; 4096])
    }
    fn alloc_unbound(&self, _: DomId, _: DomId) -> spore_xen::Result<u32> {
        let mut st = self.state.lock().unwrap();
        st.next_port += 1;
        Ok(st.next_port)
    }
    fn domain_info(&self, domid: DomId) -> spore_xen::Result<DomainInfo> {
        let st = self.state.lock().unwrap();
        st.domains
            .get(&domid)
            .cloned()
            .ok_or(XenError::NoSuchDomain(domid))
    }
    fn list_domains(&self, first: DomId, max: u32) -> spore_xen::Result<Vec<DomainInfo>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .domains
            .range(first..)
            .take(max as usize)
            .map(|(_, d)| d.clone())
            .collect())
    }
    fn hypercall_init(&self, _: DomId, _: u64) -> spore_xen::Result<()> {
        Ok(())
    }
    fn set_memory_map(&self, _: DomId, _: &[MemoryRegion]) -> spore_xen::Result<()> {
        Ok(())
    }
    fn pin_l4_table(&self, _: DomId, _: u64) -> spore_xen::Result<()> {
        Ok(())
    }
    fn set_vcpu_context(&self, _: DomId, _: u32, _: &VcpuGuestContext) -> spore_xen::Result<()> {
        Ok(())
    }
    fn unpause(&self, domid: DomId) -> spore_xen::Result<()> {
        self.journal.push(Event::Unpause(domid));
        Ok(())
    }
    fn pause(&self, _: DomId) -> spore_xen::Result<()> {
        Ok(())
    }
    fn destroy(&self, domid: DomId) -> spore_xen::Result<()> {
        self.journal.push(Event::Destroy(domid));
        match self.state.lock().unwrap().domains.remove(&domid) {
            Some(_) => Ok(()),
            None => Err(XenError::NoSuchDomain(domid)),
        }
    }
}

// ---------------------------------------------------------------- xenstored

#[derive(Debug, Clone, Default)]
struct Tree {
    nodes: BTreeMap<String, Vec<u8>>,
    perms: BTreeMap<String, Vec<u8>>,
}

impl Tree {
    fn exists(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.nodes
            .keys()
            .any(|k| k == path || k.starts_with(&prefix))
    }
    fn write(&mut self, path: &str, value: &[u8]) {
        // xenstored makes missing parents.
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            at += 1 + i;
            self.nodes.entry(path[..at].to_string()).or_default();
        }
        self.nodes.insert(path.to_string(), value.to_vec());
    }
    fn rm(&mut self, path: &str) -> bool {
        let existed = self.exists(path);
        let prefix = format!("{path}/");
        self.nodes
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        self.perms
            .retain(|k, _| k != path && !k.starts_with(&prefix));
        existed
    }
    fn children(&self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        let mut kids: Vec<String> = self
            .nodes
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|r| r.split('/').next().unwrap_or_default().to_string())
            .collect();
        kids.dedup();
        kids
    }
}

#[derive(Debug, Default)]
struct StoreState {
    tree: Tree,
    /// Open transactions: a copy of the tree each, committed whole or dropped.
    transactions: BTreeMap<u32, Tree>,
    next_tx: u32,
    /// Writes under these prefixes fail with EACCES.
    deny: Vec<String>,
}

/// A xenstored in memory, reached through the real blocking client and wire format.
#[derive(Debug, Clone)]
struct MemXs {
    state: Arc<Mutex<StoreState>>,
    journal: Journal,
}

impl MemXs {
    fn new(journal: &Journal) -> MemXs {
        MemXs {
            state: Arc::default(),
            journal: journal.clone(),
        }
    }

    fn deny_writes_under(&self, prefix: &str) {
        self.state.lock().unwrap().deny.push(prefix.to_string());
    }

    /// Every node path, for "nothing is left" checks.
    fn paths(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .tree
            .nodes
            .keys()
            .cloned()
            .collect()
    }

    fn handle(&self, m: &Message) -> Vec<u8> {
        let mut st = self.state.lock().unwrap();
        let parts: Vec<&[u8]> = m.payload.split(|&b| b == 0).collect();
        let path = String::from_utf8_lossy(parts[0]).into_owned();
        let reply = |ty: MsgType, payload: &[u8]| wire::encode(ty, m.req_id, m.tx_id, payload);
        let error = |errno: &str| reply(MsgType::Error, format!("{errno}\0").as_bytes());
        let ok = |ty: MsgType| reply(ty, b"OK\0");
        let st = &mut *st;
        let tree = match m.tx_id {
            0 => &mut st.tree,
            tx => match st.transactions.get_mut(&tx) {
                Some(t) => t,
                None => return error("ENOENT"),
            },
        };
        match m.ty {
            MsgType::Read => match tree.nodes.get(&path) {
                Some(v) => reply(MsgType::Read, v),
                None => error("ENOENT"),
            },
            MsgType::Write => {
                if st.deny.iter().any(|d| path.starts_with(d.as_str())) {
                    return error("EACCES");
                }
                let value = &m.payload[path.len() + 1..];
                tree.write(&path, value);
                if m.tx_id == 0 {
                    let value = String::from_utf8_lossy(value).into_owned();
                    self.journal.push(Event::XsWrite(path, value));
                }
                ok(MsgType::Write)
            }
            MsgType::Mkdir => {
                tree.nodes.entry(path).or_default();
                ok(MsgType::Mkdir)
            }
            MsgType::Rm => {
                if !tree.rm(&path) {
                    return error("ENOENT");
                }
                if m.tx_id == 0 {
                    self.journal.push(Event::XsRm(path));
                }
                ok(MsgType::Rm)
            }
            MsgType::Directory if !tree.exists(&path) => error("ENOENT"),
            MsgType::Directory => {
                let mut p = Vec::new();
                for k in tree.children(&path) {
                    p.extend_from_slice(k.as_bytes());
                    p.push(0);
                }
                reply(MsgType::Directory, &p)
            }
            MsgType::SetPerms => {
                let perms = m.payload[path.len() + 1..].to_vec();
                tree.perms.insert(path, perms);
                ok(MsgType::SetPerms)
            }
            MsgType::GetPerms => {
                let p = tree.perms.get(&path).cloned();
                reply(MsgType::GetPerms, &p.unwrap_or_else(|| b"n0\0".to_vec()))
            }
            MsgType::TransactionStart => {
                st.next_tx += 1;
                let tx = st.next_tx;
                let copy = st.tree.clone();
                st.transactions.insert(tx, copy);
                reply(MsgType::TransactionStart, format!("{tx}\0").as_bytes())
            }
            MsgType::TransactionEnd => {
                let Some(copy) = st.transactions.remove(&m.tx_id) else {
                    return error("ENOENT");
                };
                if parts[0] == b"T" {
                    st.tree = copy;
                }
                ok(MsgType::TransactionEnd)
            }
            MsgType::Introduce => {
                let domid = path.parse().expect("introduce names a domid");
                self.journal.push(Event::Introduce(domid));
                ok(MsgType::Introduce)
            }
            other => panic!("the xenstored double does not serve {other:?}"),
        }
    }
}

/// One client connection: requests are served as they are written, replies wait to be read.
struct MemXsConn {
    xs: MemXs,
    decoder: Decoder,
    replies: VecDeque<u8>,
}

impl Write for MemXsConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.decoder.push(buf);
        while let Some(m) = self.decoder.next_message().map_err(std::io::Error::other)? {
            let reply = self.xs.handle(&m);
            self.replies.extend(reply);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for MemXsConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.replies.read(buf)
    }
}

impl XsConnect for MemXs {
    type Io = MemXsConn;
    fn connect(&self) -> spore_xen::Result<XsClient<MemXsConn>> {
        Ok(XsClient::new(MemXsConn {
            xs: self.clone(),
            decoder: Decoder::new(),
            replies: VecDeque::new(),
        }))
    }
}

// ---------------------------------------------------------------- disks and rings

#[derive(Debug, Clone)]
struct FakeDisks {
    attached: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicU32>,
    journal: Journal,
}

impl FakeDisks {
    fn new(journal: &Journal) -> FakeDisks {
        FakeDisks {
            attached: Arc::default(),
            next: Arc::default(),
            journal: journal.clone(),
        }
    }
    fn attached(&self) -> Vec<String> {
        self.attached.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct FakeDisk {
    device: String,
    disks: FakeDisks,
}

impl Disk for FakeDisk {
    fn physical_device(&self) -> String {
        "7:0".into()
    }
    fn device_path(&self) -> String {
        self.device.clone()
    }
}

impl Drop for FakeDisk {
    fn drop(&mut self) {
        self.disks
            .attached
            .lock()
            .unwrap()
            .retain(|d| *d != self.device);
        self.disks
            .journal
            .push(Event::DiskDropped(self.device.clone()));
    }
}

impl AttachDisk for FakeDisks {
    fn attach_read_only(&self, image: &Path) -> spore_xen::Result<Box<dyn Disk>> {
        assert!(image.is_file(), "{} is attached", image.display());
        let device = format!("/dev/loop{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.attached.lock().unwrap().push(device.clone());
        Ok(Box::new(FakeDisk {
            device,
            disks: self.clone(),
        }))
    }
}

/// Console rings: console 0 either maps (a stream whose pump runs until stopped) or fails
/// as a grant mapping of a ring the guest never set up would; the IDM console never shows.
#[derive(Debug)]
struct FakeRings {
    primary_fails: bool,
}

#[async_trait]
impl ServeRings for FakeRings {
    fn primary(&self, domid: DomId, _port: u32) -> spore_xen::Result<Connected> {
        if self.primary_fails {
            return Err(XenError::MapGrant {
                domid,
                gref: 0,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let (stream, _guest) = tokio::io::duplex(64);
        let pump = tokio::spawn(std::future::pending());
        Ok((stream, pump))
    }

    async fn secondary(
        &self,
        _: &AsyncXs,
        _: DomId,
        _: u32,
        _: Duration,
    ) -> spore_xen::Result<Connected> {
        std::future::pending().await
    }
}

#[derive(Debug)]
struct Doubles;

impl Platform for Doubles {
    type Hv = FakeHv;
    type Xs = MemXs;
    type Disks = FakeDisks;
    type Rings = FakeRings;
}

// ---------------------------------------------------------------- the lab

const KBASE: u64 = 0xffff_ffff_8000_0000;

/// A backend over fresh doubles, the handles to inspect them, and the files a launch needs.
struct Lab {
    dir: tempfile::TempDir,
    journal: Journal,
    hv: FakeHv,
    xs: MemXs,
    disks: FakeDisks,
    backend: XenBackend<Doubles>,
}

impl Lab {
    fn new(primary_fails: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::default();
        let (hv, xs, disks) = (
            FakeHv::new(&journal),
            MemXs::new(&journal),
            FakeDisks::new(&journal),
        );
        let config = XenConfig {
            // A running guest that never closes its devices holds a destroy this long.
            device_timeout: Duration::from_millis(100),
            release_timeout: Duration::from_secs(1),
            ..XenConfig::new(dir.path().join("zones"))
        };
        let parts = Parts::<Doubles> {
            hv: hv.clone(),
            xs: xs.clone(),
            disks: disks.clone(),
            rings: FakeRings { primary_fails },
        };
        let backend = XenBackend::with_parts(config, parts, "4.17".into()).unwrap();
        Lab {
            dir,
            journal,
            hv,
            xs,
            disks,
            backend,
        }
    }

    /// A spec whose files exist: a small PV kernel, an initrd, a root image, a config block.
    fn spec(&self) -> LaunchSpec {
        let zone_id = Uuid::new_v4();
        let zone_dir = self.dir.path().join("zones").join(zone_id.to_string());
        std::fs::create_dir_all(&zone_dir).unwrap();
        let file = |name: &str, bytes: &[u8]| -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let text: Vec<u8> = (0..0x3000u32).map(|i| (i % 253) as u8).collect();
        let kernel = build_elf(
            0,
            &linux_notes(KBASE + 0x100_0040, KBASE + 0x100_1000),
            &[Seg {
                paddr: 0x100_0000,
                data: text,
                memsz: 0x3000,
            }],
        );
        LaunchSpec {
            zone_id,
            name: "web".into(),
            kernel: file("vmlinux", &kernel),
            initrd: file("initrd", &[0x5a; 8192]),
            kernel_cmdline: "console=hvc0".into(),
            root_image: file("root.squashfs", &[0; 4096]),
            config_block: file("config.blk", &[0; 512]),
            vcpus: 1,
            memory_mib: 64,
            zone_dir,
            nic: None,
        }
    }

    /// Asserts that nothing of `zone` is left: no domain, no xenstore node, no disk.
    async fn assert_nothing_left(&self, zone: Uuid) {
        assert_eq!(self.hv.domids(), Vec::<DomId>::new(), "domains left");
        let left: Vec<String> = self
            .xs
            .paths()
            .into_iter()
            .filter(|p| p.starts_with("/local/domain/") || p.starts_with("/vm/"))
            .filter(|p| !matches!(p.as_str(), "/local/domain/0" | "/local/domain/0/backend"))
            .filter(|p| {
                !["vbd", "vif", "console"]
                    .iter()
                    .any(|k| *p == format!("/local/domain/0/backend/{k}"))
            })
            .collect();
        assert_eq!(left, Vec::<String>::new(), "xenstore nodes left");
        assert_eq!(self.disks.attached(), Vec::<String>::new(), "disks left");
        let listed = self.backend.list().await.unwrap();
        assert!(listed.iter().all(|d| d.zone_id != zone), "{listed:?}");
    }
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn wiring_that_fails_after_the_domain_exists_tears_down_domain_and_disks() {
    let lab = Lab::new(false);
    // The vbds are written, then the IDM console's nodes are refused.
    lab.xs.deny_writes_under("/local/domain/0/backend/console/");
    let spec = lab.spec();
    let e = lab.backend.create(&spec).await.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Backend { context, .. } if context.starts_with("wiring domain 1")),
        "{e:?}"
    );
    // The domain existed and was introduced before the failure, then went.
    let introduced = lab
        .journal
        .position("introduce", |e| *e == Event::Introduce(1));
    let destroyed = lab.journal.position("destroy", |e| *e == Event::Destroy(1));
    assert!(introduced < destroyed);
    // The vbds it had were closed before the domain was destroyed, and the disks were
    // released after it.
    let vbd_gone = lab.journal.position("vbd removal", |e| {
        *e == Event::XsRm("/local/domain/0/backend/vbd/1/51712".into())
    });
    assert!(vbd_gone < destroyed);
    let dropped = lab
        .journal
        .position("disk release", |e| matches!(e, Event::DiskDropped(_)));
    assert!(destroyed < dropped);
    assert!(!lab.journal.events().contains(&Event::Unpause(1)));
    lab.assert_nothing_left(spec.zone_id).await;
}

#[tokio::test]
async fn a_console_that_never_connects_abandons_the_domain_cleanly() {
    let lab = Lab::new(true);
    let spec = lab.spec();
    let e = lab.backend.create(&spec).await.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Backend { context, source }
            if context.contains("console (hvc0)") && matches!(source.downcast_ref::<XenError>(), Some(XenError::MapGrant { .. }))),
        "{e:?}"
    );
    let events = lab.journal.events();
    assert!(events.contains(&Event::Introduce(1)), "{events:#?}");
    assert!(events.contains(&Event::Destroy(1)), "{events:#?}");
    assert!(!events.contains(&Event::Unpause(1)), "never unpaused");
    lab.assert_nothing_left(spec.zone_id).await;
    // Nothing is held for the zone either: a second create starts from scratch.
    assert!(matches!(
        lab.backend.open_console(spec.zone_id).await,
        Err(RuntimeError::NoSuchZone(_))
    ));
}

#[tokio::test]
async fn teardown_closes_devices_then_destroys_then_removes_nodes_then_disks() {
    let lab = Lab::new(false);
    let spec = lab.spec();
    let info = lab.backend.create(&spec).await.unwrap();
    assert_eq!(info.handle, "domid 1");
    assert!(lab.journal.events().contains(&Event::Unpause(1)));
    assert_eq!(lab.disks.attached().len(), 2);
    let from = lab.journal.events().len();

    lab.backend.destroy(spec.zone_id).await.unwrap();

    let events: Vec<Event> = lab.journal.events().split_off(from);
    let at = |what: &str, f: &dyn Fn(&Event) -> bool| {
        events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {events:#?}"))
    };
    let last = |f: &dyn Fn(&Event) -> bool| events.iter().rposition(f).unwrap();
    let backends = [
        "/local/domain/0/backend/vbd/1/51712",
        "/local/domain/0/backend/vbd/1/51728",
        "/local/domain/0/backend/console/1/1",
    ];
    // 1. Every device's backend goes to Closing before any is removed: the guest closes its
    //    frontends in parallel.
    let removed = |e: &Event| matches!(e, Event::XsRm(p) if backends.contains(&p.as_str()));
    assert_eq!(
        events.iter().filter(|e| removed(e)).count(),
        3,
        "{events:#?}"
    );
    let first_removal = at("a backend removal", &removed);
    for b in backends {
        let state = format!("{b}/state");
        let closing = at("Closing", &|e| {
            *e == Event::XsWrite(state.clone(), "5".into())
        });
        assert!(closing < first_removal, "{b} closed late: {events:#?}");
    }
    // 2. The backends are released (Closed, nodes gone) before the domain is destroyed.
    let destroyed = at("destroy", &|e| *e == Event::Destroy(1));
    assert!(last(&removed) < destroyed);
    // 3. Then the domain's home and /vm entry go.
    let home = at("home removal", &|e| {
        *e == Event::XsRm("/local/domain/1".into())
    });
    let vm = at("vm removal", &|e| {
        *e == Event::XsRm(format!("/vm/{}", spec.zone_id))
    });
    assert!(destroyed < home && destroyed < vm);
    // 4. Last, the disks.
    let first_disk = at("disk release", &|e| matches!(e, Event::DiskDropped(_)));
    assert!(home < first_disk && vm < first_disk);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::DiskDropped(_)))
            .count(),
        2
    );
    lab.assert_nothing_left(spec.zone_id).await;
    // Idempotent.
    lab.backend.destroy(spec.zone_id).await.unwrap();
}

#[tokio::test]
async fn a_readopted_half_built_domain_is_listed_as_not_running_and_destroyed() {
    let lab = Lab::new(false);
    // A daemon died between createdomain and introduce: the domain carries the zone's UUID
    // and the zone directory exists, but xenstore has no home for it.
    let zone = Uuid::new_v4();
    std::fs::create_dir_all(lab.dir.path().join("zones").join(zone.to_string())).unwrap();
    let domid = lab.hv.add_domain(zone);
    // A domain of someone else's (no zone directory of ours) is never listed.
    let stranger = lab.hv.add_domain(Uuid::new_v4());

    let listed = lab.backend.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].zone_id, zone);
    assert!(!listed[0].running);
    assert_eq!(listed[0].handle, format!("domid {domid} (half-built)"));
    // Not adopted as a running zone.
    assert!(matches!(
        lab.backend.open_console(zone).await,
        Err(RuntimeError::NoSuchZone(_))
    ));

    lab.backend.destroy(zone).await.unwrap();
    assert!(lab.journal.events().contains(&Event::Destroy(domid)));
    assert_eq!(lab.hv.domids(), vec![stranger]);
    assert!(lab.backend.list().await.unwrap().is_empty());
}
