//! The scripted stand-in for spored (test code only): the real gRPC contract on a Unix socket,
//! playing zone lives chosen by the image name (`scenario/exit7`, `scenario/signal`,
//! `scenario/fail`, `scenario/quick`, `scenario/echo`, `scenario/flaky`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use spore_api::v1;
use spore_api::v1::control_server::{Control, ControlServer};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Reply<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone, Debug)]
enum ConsoleMsg {
    Output(Vec<u8>),
    Exited(v1::ExitStatus),
}

struct ZoneRec {
    name: String,
    image: String,
    state: v1::ZoneState,
    console_log: Vec<u8>,
    exit: Option<v1::ExitStatus>,
    console: broadcast::Sender<ConsoleMsg>,
    input: mpsc::UnboundedSender<Vec<u8>>,
    attaches: u32,
}

#[derive(Default)]
struct World {
    sequence: u64,
    log: Vec<v1::Event>,
    zones: HashMap<String, ZoneRec>,
    next_zone: u32,
}

#[derive(Clone)]
struct Double {
    world: Arc<Mutex<World>>,
    events: broadcast::Sender<v1::Event>,
    /// Unfiltered watches so far: the first is cut off after two events, as spored cuts
    /// off a client that is too slow.
    watches: Arc<std::sync::atomic::AtomicU32>,
}

impl Double {
    fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        let double = Double {
            world: Arc::new(Mutex::new(World::default())),
            events,
            watches: Arc::default(),
        };
        // Unrelated history: a watch must start after it, not replay it.
        for _ in 0..5 {
            double.emit(v1::event::Kind::ImageChanged(v1::ImageChanged {
                change: v1::image_changed::Change::Added as i32,
                manifest_digest: "sha256:00".into(),
                references: vec!["old".into()],
            }));
        }
        double
    }

    fn emit(&self, kind: v1::event::Kind) {
        let mut world = self.world.lock().unwrap();
        world.sequence += 1;
        let event = v1::Event {
            sequence: world.sequence,
            time: None,
            kind: Some(kind),
        };
        world.log.push(event.clone());
        let _ = self.events.send(event);
    }

    fn transition(&self, id: &str, to: v1::ZoneState, reason: &str, exit: Option<v1::ExitStatus>) {
        let (name, from) = {
            let mut world = self.world.lock().unwrap();
            let zone = world.zones.get_mut(id).unwrap();
            let from = zone.state;
            zone.state = to;
            if exit.is_some() {
                zone.exit = exit;
            }
            (zone.name.clone(), from)
        };
        self.emit(v1::event::Kind::ZoneStateChanged(v1::ZoneStateChanged {
            zone_id: id.into(),
            zone_name: name,
            transition: Some(v1::StateTransition {
                from: from as i32,
                to: to as i32,
                time: None,
                reason: reason.into(),
            }),
            exit,
        }));
    }

    fn console(&self, id: &str, msg: ConsoleMsg) {
        let mut world = self.world.lock().unwrap();
        let zone = world.zones.get_mut(id).unwrap();
        if let ConsoleMsg::Output(bytes) = &msg {
            zone.console_log.extend_from_slice(bytes);
        }
        let _ = zone.console.send(msg);
    }

    /// Drives a zone through the life its image name asks for.
    async fn play(self, id: String, image: String, mut input: mpsc::UnboundedReceiver<Vec<u8>>) {
        use v1::ZoneState::*;
        let step = || tokio::time::sleep(Duration::from_millis(60));
        let code = |c| v1::ExitStatus {
            status: Some(v1::exit_status::Status::Code(c)),
        };
        step().await;
        self.transition(&id, Preparing, "pulling image", None);
        step().await;
        if image == "scenario/fail" {
            self.transition(
                &id,
                Failed,
                "image \"scenario/fail\" not found in registry",
                None,
            );
            return;
        }
        self.transition(&id, Creating, "image ready", None);
        step().await;
        self.transition(&id, Starting, "domain created", None);
        // Output before anyone could have attached: only a replay shows it.
        self.console(&id, ConsoleMsg::Output(b"booting\n".to_vec()));
        if image != "scenario/quick" {
            step().await;
        }
        self.transition(&id, Running, "guest started the workload", None);
        let exit = match image.as_str() {
            "scenario/exit7" | "scenario/flaky" => {
                step().await;
                self.console(&id, ConsoleMsg::Output(b"hello from zone\n".to_vec()));
                code(7)
            }
            "scenario/signal" => v1::ExitStatus {
                status: Some(v1::exit_status::Status::Signal(9)),
            },
            "scenario/quick" => {
                self.console(&id, ConsoleMsg::Output(b"quick output\n".to_vec()));
                code(3)
            }
            "scenario/echo" => {
                let mut pending = Vec::new();
                'outer: while let Some(bytes) = input.recv().await {
                    pending.extend_from_slice(&bytes);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let line = String::from_utf8_lossy(&line).trim().to_string();
                        if line == "quit" {
                            break 'outer;
                        }
                        self.console(
                            &id,
                            ConsoleMsg::Output(format!("got: {line}\n").into_bytes()),
                        );
                    }
                }
                code(0)
            }
            _ => code(0),
        };
        // The console's last words come before the exit, as spored sends them.
        step().await;
        self.console(&id, ConsoleMsg::Exited(exit));
        self.transition(&id, Exited, "guest reported exit", Some(exit));
    }

    fn zone(&self, query: &str) -> Result<String, Status> {
        let world = self.world.lock().unwrap();
        world
            .zones
            .iter()
            .find(|(id, z)| id.as_str() == query || z.name == query)
            .map(|(id, _)| id.clone())
            .ok_or_else(|| Status::not_found(format!("zone \"{query}\" not found")))
    }
}

#[tonic::async_trait]
impl Control for Double {
    async fn get_host_status(
        &self,
        _: Request<v1::GetHostStatusRequest>,
    ) -> Reply<v1::GetHostStatusResponse> {
        let world = self.world.lock().unwrap();
        Ok(Response::new(v1::GetHostStatusResponse {
            last_event_sequence: world.sequence,
            ..Default::default()
        }))
    }

    async fn create_zone(
        &self,
        request: Request<v1::CreateZoneRequest>,
    ) -> Reply<v1::CreateZoneResponse> {
        let spec = request.into_inner().spec.unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut world = self.world.lock().unwrap();
            world.next_zone += 1;
            let id = format!("{:08x}-0000-4000-8000-000000000000", world.next_zone);
            let name = if spec.name.is_empty() {
                format!("zone{}", world.next_zone)
            } else {
                spec.name.clone()
            };
            world.zones.insert(
                id.clone(),
                ZoneRec {
                    name,
                    image: spec.image.clone(),
                    state: v1::ZoneState::Pending,
                    console_log: Vec::new(),
                    exit: None,
                    console: broadcast::channel(64).0,
                    input: tx,
                    attaches: 0,
                },
            );
            id
        };
        let name = self.world.lock().unwrap().zones[&id].name.clone();
        tokio::spawn(self.clone().play(id.clone(), spec.image, rx));
        Ok(Response::new(v1::CreateZoneResponse { zone_id: id, name }))
    }

    async fn destroy_zone(
        &self,
        _: Request<v1::DestroyZoneRequest>,
    ) -> Reply<v1::DestroyZoneResponse> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_zone(&self, request: Request<v1::GetZoneRequest>) -> Reply<v1::GetZoneResponse> {
        let id = self.zone(&request.into_inner().zone)?;
        let world = self.world.lock().unwrap();
        let zone = &world.zones[&id];
        Ok(Response::new(v1::GetZoneResponse {
            zone: Some(v1::Zone {
                id: id.clone(),
                name: zone.name.clone(),
                spec: Some(v1::ZoneSpec {
                    image: zone.image.clone(),
                    ..Default::default()
                }),
                status: Some(v1::ZoneStatus {
                    state: zone.state as i32,
                    exit: zone.exit,
                    ..Default::default()
                }),
            }),
        }))
    }

    async fn list_zones(&self, _: Request<v1::ListZonesRequest>) -> Reply<v1::ListZonesResponse> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn resolve_zone(
        &self,
        request: Request<v1::ResolveZoneRequest>,
    ) -> Reply<v1::ResolveZoneResponse> {
        let zone_id = self.zone(&request.into_inner().zone)?;
        Ok(Response::new(v1::ResolveZoneResponse { zone_id }))
    }

    type WatchEventsStream = BoxStream<v1::Event>;

    async fn watch_events(
        &self,
        request: Request<v1::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let request = request.into_inner();
        // Subscribe first, then read the backlog, then skip live duplicates.
        let mut live = self.events.subscribe();
        let backlog: Vec<v1::Event> = {
            let world = self.world.lock().unwrap();
            let from = request.from_sequence.unwrap_or(world.sequence + 1);
            world
                .log
                .iter()
                .filter(|e| e.sequence >= from)
                .cloned()
                .collect()
        };
        let (tx, rx) = mpsc::channel(256);
        let zone_id = request.zone_id;
        let cut_after = (zone_id.is_empty()
            && self
                .watches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 0)
            .then_some(2);
        tokio::spawn(async move {
            let wanted = |e: &v1::Event| match &e.kind {
                Some(v1::event::Kind::ZoneStateChanged(c)) => {
                    zone_id.is_empty() || c.zone_id == zone_id
                }
                _ => zone_id.is_empty(),
            };
            let mut last = 0;
            for (index, event) in backlog.into_iter().enumerate() {
                if cut_after == Some(index) {
                    let slow = Status::resource_exhausted("client too slow; resume from 3");
                    let _ = tx.send(Err(slow)).await;
                    return;
                }
                last = event.sequence;
                if wanted(&event) && tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            while let Ok(event) = live.recv().await {
                if event.sequence > last && wanted(&event) && tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type AttachZoneConsoleStream = BoxStream<v1::AttachZoneConsoleResponse>;

    async fn attach_zone_console(
        &self,
        request: Request<Streaming<v1::AttachZoneConsoleRequest>>,
    ) -> Reply<Self::AttachZoneConsoleStream> {
        let mut requests = request.into_inner();
        let first = requests
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no first message"))?;
        let id = self.zone(&first.zone)?;
        let (mut console, backlog, exit, input, cut) = {
            let mut world = self.world.lock().unwrap();
            let zone = world.zones.get_mut(&id).unwrap();
            let ready = matches!(
                zone.state,
                v1::ZoneState::Starting | v1::ZoneState::Running | v1::ZoneState::Exited
            );
            if !ready || zone.image == "scenario/quick" {
                return Err(Status::failed_precondition(format!(
                    "zone {} has no console yet",
                    zone.name
                )));
            }
            let backlog = if first.replay {
                zone.console_log.clone()
            } else {
                Vec::new()
            };
            zone.attaches += 1;
            // `flaky`: the first console stream breaks right after the replay, as when
            // spored restarts.
            let cut = zone.image == "scenario/flaky" && zone.attaches == 1;
            (
                zone.console.subscribe(),
                backlog,
                zone.exit,
                zone.input.clone(),
                cut,
            )
        };
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let _ = input.send(request.input);
            }
        });
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            use v1::attach_zone_console_response::Kind;
            let send = |kind| v1::AttachZoneConsoleResponse { kind: Some(kind) };
            if !backlog.is_empty() && tx.send(Ok(send(Kind::Output(backlog)))).await.is_err() {
                return;
            }
            if cut {
                let _ = tx
                    .send(Err(Status::unavailable("console hub restarting")))
                    .await;
                return;
            }
            if let Some(exit) = exit {
                let _ = tx.send(Ok(send(Kind::Exited(exit)))).await;
                return;
            }
            while let Ok(msg) = console.recv().await {
                match msg {
                    ConsoleMsg::Output(bytes) => {
                        if tx.send(Ok(send(Kind::Output(bytes)))).await.is_err() {
                            return;
                        }
                    }
                    ConsoleMsg::Exited(exit) => {
                        let _ = tx.send(Ok(send(Kind::Exited(exit)))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadZoneLogsStream = BoxStream<v1::ReadZoneLogsResponse>;

    async fn read_zone_logs(
        &self,
        request: Request<v1::ReadZoneLogsRequest>,
    ) -> Reply<Self::ReadZoneLogsStream> {
        let id = self.zone(&request.into_inner().zone)?;
        let data = self.world.lock().unwrap().zones[&id].console_log.clone();
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(
            v1::ReadZoneLogsResponse { data },
        )]))))
    }

    type ExecInZoneStream = BoxStream<v1::ExecInZoneResponse>;

    /// `upper`: uppercases stdin to stdout until stdin closes, says "done" on stderr, exits 5.
    async fn exec_in_zone(
        &self,
        request: Request<Streaming<v1::ExecInZoneRequest>>,
    ) -> Reply<Self::ExecInZoneStream> {
        use v1::exec_in_zone_request::Kind as In;
        use v1::exec_in_zone_response::Kind as Out;
        let mut requests = request.into_inner();
        let Some(v1::ExecInZoneRequest {
            kind: Some(In::Start(start)),
        }) = requests.message().await?
        else {
            return Err(Status::invalid_argument("the first message must be start"));
        };
        self.zone(&start.zone)?;
        if start.command.first().map(String::as_str) != Some("upper") {
            return Err(Status::invalid_argument(
                "command: only `upper` is scripted",
            ));
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let out = |kind| Ok(v1::ExecInZoneResponse { kind: Some(kind) });
            while let Ok(Some(request)) = requests.message().await {
                match request.kind {
                    Some(In::Stdin(bytes)) => {
                        let _ = tx.send(out(Out::Stdout(bytes.to_ascii_uppercase()))).await;
                    }
                    Some(In::StdinClosed(_)) => break,
                    _ => {}
                }
            }
            let _ = tx.send(out(Out::Stderr(b"done\n".to_vec()))).await;
            let exit = v1::ExitStatus {
                status: Some(v1::exit_status::Status::Code(5)),
            };
            let _ = tx.send(out(Out::Exited(exit))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn read_zone_metrics(
        &self,
        _: Request<v1::ReadZoneMetricsRequest>,
    ) -> Reply<v1::ReadZoneMetricsResponse> {
        Err(Status::unimplemented("metrics need the guest agent"))
    }

    async fn update_zone_resources(
        &self,
        _: Request<v1::UpdateZoneResourcesRequest>,
    ) -> Reply<v1::UpdateZoneResourcesResponse> {
        Err(Status::unimplemented("not scripted"))
    }

    type PullImageStream = BoxStream<v1::PullImageResponse>;

    async fn pull_image(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Reply<Self::PullImageStream> {
        use v1::pull_progress::Phase;
        let reference = request.into_inner().reference;
        let layer = |digest: &str, phase: Phase, current| v1::LayerProgress {
            digest: digest.into(),
            phase: phase as i32,
            current_bytes: current,
            total_bytes: 1000,
        };
        let progress = |phase: Phase, layers: Vec<v1::LayerProgress>| v1::PullImageResponse {
            kind: Some(v1::pull_image_response::Kind::Progress(v1::PullProgress {
                phase: phase as i32,
                layers,
                message: String::new(),
            })),
        };
        let (a, b) = ("sha256:aaaaaaaaaaaaaaaa", "sha256:bbbbbbbbbbbbbbbb");
        let messages = vec![
            progress(Phase::Resolving, vec![]),
            progress(
                Phase::Downloading,
                vec![
                    layer(a, Phase::Downloading, 10),
                    layer(b, Phase::Downloading, 0),
                ],
            ),
            progress(
                Phase::Downloading,
                vec![
                    layer(a, Phase::Downloading, 600),
                    layer(b, Phase::Downloading, 300),
                ],
            ),
            progress(
                Phase::Downloading,
                vec![layer(a, Phase::Done, 1000), layer(b, Phase::Done, 1000)],
            ),
            progress(Phase::Packing, vec![]),
            v1::PullImageResponse {
                kind: Some(v1::pull_image_response::Kind::Image(v1::Image {
                    references: vec![reference],
                    manifest_digest: "sha256:cccc".into(),
                    size_bytes: 4096,
                    ..Default::default()
                })),
            },
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(
            messages.into_iter().map(Ok),
        ))))
    }

    type ImportImageStream = BoxStream<v1::PullImageResponse>;

    async fn import_image(
        &self,
        _: Request<v1::ImportImageRequest>,
    ) -> Reply<Self::ImportImageStream> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_images(
        &self,
        _: Request<v1::ListImagesRequest>,
    ) -> Reply<v1::ListImagesResponse> {
        Err(Status::unimplemented(
            "the image pipeline has not landed (issue 3)",
        ))
    }

    async fn remove_image(
        &self,
        _: Request<v1::RemoveImageRequest>,
    ) -> Reply<v1::RemoveImageResponse> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn prune_images(
        &self,
        _: Request<v1::PruneImagesRequest>,
    ) -> Reply<v1::PruneImagesResponse> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_network_reservations(
        &self,
        _: Request<v1::ListNetworkReservationsRequest>,
    ) -> Reply<v1::ListNetworkReservationsResponse> {
        Err(Status::unimplemented("not scripted"))
    }
}

/// The stand-in serving on a temporary socket from its own runtime thread.
pub struct Server {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

pub fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("double.sock");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(async { tokio::net::UnixListener::bind(&socket).unwrap() });
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(Double::new()))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    Server {
        socket,
        _dir: dir,
        _runtime: runtime,
    }
}
