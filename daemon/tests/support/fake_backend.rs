//! A test double of the backend (tests only, never selectable by a user): each "VM" is a task
//! that plays spore-init's part over in-memory console and IDM streams. What it does comes from
//! the zone's command in the config block:
//! - `exit N`: Started, a console line, Exit code N, power off;
//! - `signal N`: Started, Exit signal N, power off;
//! - `sleep`: Started, then waits for Shutdown and exits by SIGTERM; meanwhile it answers
//!   MetricsRequest (two processes: init and `sleep`) and exec requests (below);
//! - `crash`: Started, then the VM stops without an Exit;
//! - `resend A B`: Started, Exit code A, and once that is acknowledged a duplicate Exit with
//!   code B (as a real guest's re-send can arrive after the ack); after its ack the console
//!   says `acked twice` and the VM powers off (`no ack` if one does not come within 10 s);
//! - `fail MSG`: a fatal Error, then the VM stops;
//! - `hang`: a guest stuck in its boot: says nothing, and its VM runs until destroyed.
//!
//! Exec in a `sleep` zone, by argv: `echo WORDS...` prints the words and exits 0; `wait` runs
//! until cancelled (ExecCancel: exit by SIGKILL, and the console says `cancelled N`, N the
//! stream id) or signalled (ExecSignal S: exit by S); `flood N` ignores its window and sends N
//! bytes of output at once, as a broken guest would; anything else is not found (Error, 127).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{IdmCodec, IdmPacket};
use spore_runtime::{
    Backend, BackendKind, ByteStream, LaunchSpec, Resources, Result, RuntimeError as Error,
    StopReason, VmInfo, VmLimits, VmStop,
};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;
use uuid::Uuid;

struct Vm {
    console: mpsc::Sender<DuplexStream>,
    idm: mpsc::Sender<DuplexStream>,
    stopped: watch::Receiver<Option<VmStop>>,
    stop: watch::Sender<Option<VmStop>>,
}

#[derive(Default)]
pub struct FakeBackend {
    vms: Mutex<HashMap<Uuid, Vm>>,
    pub created: Mutex<Vec<Uuid>>,
    pub destroyed: Mutex<Vec<Uuid>>,
    pub fail_create: AtomicBool,
    /// Resource changes applied, in order.
    pub resources: Mutex<Vec<(Uuid, Resources)>>,
    /// Answer resource changes as a backend that cannot make them (QEMU today).
    pub resources_unsupported: AtomicBool,
}

impl FakeBackend {
    pub fn has_vm(&self, id: Uuid) -> bool {
        self.vms.lock().unwrap().contains_key(&id)
    }

    /// Starts a VM for `id` running `command` without the daemon (for re-adoption tests).
    pub fn boot(&self, id: Uuid, command: Vec<String>) {
        let (console_tx, console_rx) = mpsc::channel(4);
        let (idm_tx, idm_rx) = mpsc::channel(4);
        let (stop, stopped) = watch::channel(None);
        tokio::spawn(guest(command, console_rx, idm_rx, stop.clone()));
        self.vms.lock().unwrap().insert(
            id,
            Vm {
                console: console_tx,
                idm: idm_tx,
                stopped,
                stop,
            },
        );
    }

    fn vm<T>(&self, id: Uuid, f: impl FnOnce(&Vm) -> T) -> Result<T> {
        self.vms
            .lock()
            .unwrap()
            .get(&id)
            .map(f)
            .ok_or(Error::NoSuchZone(id))
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn limits(&self) -> VmLimits {
        VmLimits {
            min_memory_mib: 64,
            max_vcpus: 64,
        }
    }

    async fn create(&self, spec: &LaunchSpec) -> Result<VmInfo> {
        if self.fail_create.load(Ordering::SeqCst) {
            return Err(Error::Launch {
                zone: spec.zone_id,
                detail: "the test double refuses to create VMs".into(),
            });
        }
        let block = std::fs::read(&spec.config_block).map_err(|e| Error::io("read config", e))?;
        let launch = spore_idm::config_block::decode(&block).map_err(|e| Error::Launch {
            zone: spec.zone_id,
            detail: e.to_string(),
        })?;
        let command = launch.overrides.cmd.unwrap_or_default();
        self.boot(spec.zone_id, command);
        self.created.lock().unwrap().push(spec.zone_id);
        Ok(VmInfo {
            zone_id: spec.zone_id,
            handle: "fake vm".into(),
            running: true,
        })
    }

    async fn destroy(&self, zone_id: Uuid) -> Result<()> {
        if let Some(vm) = self.vms.lock().unwrap().remove(&zone_id) {
            vm.stop.send_replace(Some(VmStop {
                reason: StopReason::Killed,
                detail: "destroyed".into(),
            }));
        }
        self.destroyed.lock().unwrap().push(zone_id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<VmInfo>> {
        Ok(self
            .vms
            .lock()
            .unwrap()
            .iter()
            .map(|(id, vm)| VmInfo {
                zone_id: *id,
                handle: "fake vm".into(),
                running: vm.stopped.borrow().is_none(),
            })
            .collect())
    }

    async fn open_console(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let tx = self.vm(zone_id, |vm| vm.console.clone())?;
        let (host, guest) = tokio::io::duplex(64 * 1024);
        let _ = tx.send(guest).await;
        Ok(Box::new(host))
    }

    async fn open_idm(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let tx = self.vm(zone_id, |vm| vm.idm.clone())?;
        let (host, guest) = tokio::io::duplex(64 * 1024);
        let _ = tx.send(guest).await;
        Ok(Box::new(host))
    }

    async fn wait_stopped(&self, zone_id: Uuid) -> Result<VmStop> {
        let mut stopped = self.vm(zone_id, |vm| vm.stopped.clone())?;
        let stop = stopped
            .wait_for(|s| s.is_some())
            .await
            .map_err(|_| Error::NoSuchZone(zone_id))?;
        Ok(stop.clone().unwrap())
    }

    async fn update_resources(&self, zone_id: Uuid, resources: Resources) -> Result<()> {
        if self.resources_unsupported.load(Ordering::SeqCst) {
            return Err(Error::Unsupported {
                kind: BackendKind::Qemu,
                what: "change a running zone's resources",
                detail: "the test double plays a backend without them".into(),
            });
        }
        self.vm(zone_id, |_| ())?;
        self.resources.lock().unwrap().push((zone_id, resources));
        Ok(())
    }
}

/// Plays spore-init. Connections (re)arrive through the channels, as after a daemon restart.
async fn guest(
    command: Vec<String>,
    mut consoles: mpsc::Receiver<DuplexStream>,
    mut idms: mpsc::Receiver<DuplexStream>,
    stop: watch::Sender<Option<VmStop>>,
) {
    let mut console = consoles.recv().await;
    let Some(idm) = idms.recv().await else { return };
    let mut idm = Framed::new(idm, IdmCodec::new());
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let poweroff = |reason| {
        stop.send_replace(Some(VmStop {
            reason,
            detail: "guest powered off".into(),
        }));
    };
    if let ["hang"] = args.as_slice() {
        let _ = stop.subscribe().wait_for(Option::is_some).await;
        return;
    }
    if let ["fail", message] = args.as_slice() {
        let _ = idm
            .send(IdmPacket::event(Body::Error(proto::Error {
                message: message.to_string(),
                fatal: true,
            })))
            .await;
        poweroff(StopReason::Poweroff);
        return;
    }
    let _ = idm
        .send(IdmPacket::event(Body::Started(proto::Started {
            workload_pid: 2,
            ..Default::default()
        })))
        .await;
    if let Some(c) = console.as_mut() {
        let _ = c
            .write_all(format!("running {}\n", command.join(" ")).as_bytes())
            .await;
    }
    if let ["resend", first, second] = args.as_slice() {
        let mut acks = 0;
        for code in [first, second] {
            let exit = IdmPacket::event(Body::Exit(proto::Exit {
                status: Some(proto::exit::Status::Code(code.parse().unwrap())),
                core_dumped: false,
            }));
            let _ = idm.send(exit).await;
            let ack = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(packet) = idm.next().await {
                    if let Ok(Ok(p)) = packet
                        && matches!(p.body, Some(Body::ExitAck(_)))
                    {
                        return true;
                    }
                }
                false
            });
            if ack.await == Ok(true) {
                acks += 1;
            }
        }
        if let Some(c) = console.as_mut() {
            let line: &[u8] = if acks == 2 {
                b"acked twice\n"
            } else {
                b"no ack\n"
            };
            let _ = c.write_all(line).await;
        }
        poweroff(StopReason::Poweroff);
        return;
    }
    let exit = match args.as_slice() {
        ["exit", code] => proto::exit::Status::Code(code.parse().unwrap()),
        ["signal", n] => proto::exit::Status::Signal(n.parse().unwrap()),
        ["crash"] => {
            poweroff(StopReason::Crash);
            return;
        }
        _ => loop {
            // "sleep": until Shutdown; a reconnecting host replaces the IDM stream.
            tokio::select! {
                packet = idm.next() => match packet {
                    Some(Ok(Ok(p))) if matches!(p.body, Some(Body::Shutdown(_))) => {
                        break proto::exit::Status::Signal(15);
                    }
                    Some(Ok(Ok(p))) => {
                        for reply in answer(p, console.as_mut()).await {
                            let _ = idm.send(reply).await;
                        }
                    }
                    Some(_) => {}
                    None => match idms.recv().await {
                        Some(next) => idm = Framed::new(next, IdmCodec::new()),
                        None => return,
                    },
                },
                Some(next) = consoles.recv() => console = Some(next),
            }
        },
    };
    if let Some(c) = console.as_mut() {
        let _ = c.write_all(b"bye\n").await;
    }
    let _ = idm
        .send(IdmPacket::event(Body::Exit(proto::Exit {
            status: Some(exit),
            core_dumped: false,
        })))
        .await;
    poweroff(StopReason::Poweroff);
}

/// A `sleep` guest's answers to metrics and exec traffic.
async fn answer(packet: IdmPacket, console: Option<&mut DuplexStream>) -> Vec<IdmPacket> {
    let (request, stream) = (packet.request_id, packet.stream_id);
    let exit = |status| {
        IdmPacket::stream(
            stream,
            Body::ExecExit(proto::ExecExit {
                status: Some(status),
            }),
        )
    };
    let started = IdmPacket::stream(
        stream,
        Body::ExecStarted(proto::ExecStarted {
            pid: 100,
            stdin_window: 64 * 1024,
            output_flow_control: true,
        }),
    );
    let output = |data: Vec<u8>| {
        IdmPacket::stream(
            stream,
            Body::ExecOutput(proto::ExecOutput {
                stream: proto::exec_output::Stream::Stdout.into(),
                data,
            }),
        )
    };
    match packet.body {
        Some(Body::MetricsRequest(req)) => {
            let process = |pid, command: &str| proto::ProcessInfo {
                pid,
                ppid: 1,
                command: command.into(),
                cmdline: command.into(),
                ..Default::default()
            };
            vec![IdmPacket::request(
                request,
                Body::MetricsResponse(proto::MetricsResponse {
                    uptime_ns: 5_000_000_000,
                    memory_total_bytes: 128 << 20,
                    memory_used_bytes: 20 << 20,
                    cpu_count: 1,
                    process_count: 2,
                    processes: if req.processes {
                        vec![process(1, "init"), process(2, "sleep")]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                }),
            )]
        }
        Some(Body::ExecStart(start)) => {
            let argv: Vec<&str> = start.argv.iter().map(String::as_str).collect();
            match argv.as_slice() {
                ["echo", words @ ..] => vec![
                    started,
                    output(format!("{}\n", words.join(" ")).into_bytes()),
                    exit(proto::exec_exit::Status::Code(0)),
                ],
                ["wait"] => vec![started],
                ["flood", n] => {
                    let n: usize = n.parse().unwrap();
                    let mut packets = vec![started];
                    packets.extend((0..n.div_ceil(65536)).map(|_| output(vec![b'x'; 65536])));
                    packets
                }
                _ => vec![
                    IdmPacket::stream(
                        stream,
                        Body::Error(proto::Error {
                            message: format!("exec: {:?}: executable file not found", argv[0]),
                            fatal: false,
                        }),
                    ),
                    exit(proto::exec_exit::Status::Code(127)),
                ],
            }
        }
        // Stream 0: the host cancels every earlier session (there are none here).
        Some(Body::ExecCancel(_)) if stream == 0 => Vec::new(),
        Some(Body::ExecCancel(_)) => {
            if let Some(c) = console {
                let _ = c
                    .write_all(format!("cancelled {stream}\n").as_bytes())
                    .await;
            }
            vec![exit(proto::exec_exit::Status::Signal(9))]
        }
        Some(Body::ExecSignal(signal)) => {
            vec![exit(proto::exec_exit::Status::Signal(signal.signal))]
        }
        _ => Vec::new(),
    }
}
