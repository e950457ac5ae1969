//! A test double of spored's API (only what sporenet calls: GetHostStatus, ListZones, GetZone,
//! WatchEvents with replay from a sequence), served on a Unix socket. The test scripts zones
//! and events; "restarting" it keeps the event log, as spored's durable log does.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use spore_api::v1;
use spore_api::v1::control_server::{Control, ControlServer};
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct State {
    pub zones: Vec<v1::Zone>,
    pub events: Vec<v1::Event>,
}

#[derive(Clone)]
pub struct Double {
    pub state: Arc<Mutex<State>>,
    pub state_dir: PathBuf,
    live: broadcast::Sender<v1::Event>,
}

/// A zone as spored reports it, with the reservation of index `index`.
pub fn zone(id: &str, name: &str, index: u8, state: v1::ZoneState) -> v1::Zone {
    v1::Zone {
        id: id.into(),
        name: name.into(),
        spec: Some(v1::ZoneSpec::default()),
        status: Some(v1::ZoneStatus {
            state: state as i32,
            backend: v1::BackendKind::Qemu as i32,
            network: Some(v1::ZoneNetworkStatus {
                ipv4: format!("10.75.0.{index}/16"),
                ipv6: format!("fdd4:1476:6c7e::{index}/48"),
                mac: format!("02:73:70:00:00:{index:02x}"),
                gateway_ipv4: "10.75.0.1".into(),
                gateway_ipv6: "fdd4:1476:6c7e::1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

impl Double {
    pub fn new(state_dir: &Path) -> Double {
        Double {
            state: Arc::default(),
            state_dir: state_dir.to_path_buf(),
            live: broadcast::channel(1024).0,
        }
    }

    /// Sets zone `id`'s state (adding the zone if new) and emits the event.
    pub fn transition(&self, zone: &v1::Zone, to: v1::ZoneState) {
        let mut st = self.state.lock().unwrap();
        let mut z = zone.clone();
        z.status.as_mut().unwrap().state = to as i32;
        let from = match st.zones.iter_mut().find(|x| x.id == z.id) {
            Some(existing) => {
                let from = existing.status.as_ref().unwrap().state;
                *existing = z.clone();
                from
            }
            None => {
                st.zones.push(z.clone());
                v1::ZoneState::Pending as i32
            }
        };
        if to == v1::ZoneState::Destroyed {
            st.zones.retain(|x| x.id != z.id);
        }
        let event = v1::Event {
            sequence: st.events.len() as u64 + 1,
            time: None,
            kind: Some(v1::event::Kind::ZoneStateChanged(v1::ZoneStateChanged {
                zone_id: z.id.clone(),
                zone_name: z.name.clone(),
                transition: Some(v1::StateTransition {
                    from,
                    to: to as i32,
                    time: None,
                    reason: String::new(),
                }),
                exit: None,
            })),
        };
        st.events.push(event.clone());
        let _ = self.live.send(event);
    }

    /// Serves the API on `socket` from a runtime of its own, until the server is dropped
    /// (which ends every connection and stream, as a stopped spored does).
    pub fn serve(&self, socket: &Path) -> Server {
        let _ = std::fs::remove_file(socket);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(socket).unwrap()
        };
        let svc = ControlServer::new(self.clone());
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
        });
        Server {
            rt: Some(rt),
            socket: socket.to_path_buf(),
        }
    }
}

/// A running double; dropping it stops it.
pub struct Server {
    rt: Option<tokio::runtime::Runtime>,
    socket: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of the test double"))
}

#[tonic::async_trait]
impl Control for Double {
    async fn get_host_status(
        &self,
        _: Request<v1::GetHostStatusRequest>,
    ) -> Result<Response<v1::GetHostStatusResponse>, Status> {
        let st = self.state.lock().unwrap();
        Ok(Response::new(v1::GetHostStatusResponse {
            state_dir: self.state_dir.display().to_string(),
            last_event_sequence: st.events.len() as u64,
            backend: v1::BackendKind::Qemu as i32,
            ..Default::default()
        }))
    }

    async fn list_zones(
        &self,
        r: Request<v1::ListZonesRequest>,
    ) -> Result<Response<v1::ListZonesResponse>, Status> {
        // One zone a page (the token is the index of the next one), so sporenet's paging
        // is exercised whenever more than one zone matches.
        let request = r.into_inner();
        let from: usize = request.page_token.parse().unwrap_or(0);
        let st = self.state.lock().unwrap();
        let matching: Vec<v1::Zone> = st
            .zones
            .iter()
            .filter(|z| {
                request.states.is_empty()
                    || request.states.contains(&z.status.as_ref().unwrap().state)
            })
            .cloned()
            .collect();
        let zones: Vec<v1::Zone> = matching.iter().skip(from).take(1).cloned().collect();
        let next_page_token = if from + 1 < matching.len() {
            (from + 1).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListZonesResponse {
            zones,
            next_page_token,
        }))
    }

    async fn get_zone(
        &self,
        r: Request<v1::GetZoneRequest>,
    ) -> Result<Response<v1::GetZoneResponse>, Status> {
        let id = r.into_inner().zone;
        let st = self.state.lock().unwrap();
        match st.zones.iter().find(|z| z.id == id) {
            Some(z) => Ok(Response::new(v1::GetZoneResponse {
                zone: Some(z.clone()),
            })),
            None => Err(Status::not_found(format!("zone {id} not found"))),
        }
    }

    type WatchEventsStream = Stream_<v1::Event>;

    async fn watch_events(
        &self,
        r: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let from = r.into_inner().from_sequence;
        let mut live = self.live.subscribe();
        let backlog: Vec<v1::Event> = {
            let st = self.state.lock().unwrap();
            match from {
                Some(n) => st
                    .events
                    .iter()
                    .filter(|e| e.sequence >= n)
                    .cloned()
                    .collect(),
                None => Vec::new(),
            }
        };
        let mut last = backlog.last().map_or(0, |e| e.sequence);
        let stream = async_stream(backlog, move |tx| async move {
            while let Ok(e) = live.recv().await {
                if e.sequence > last {
                    last = e.sequence;
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn create_zone(
        &self,
        _: Request<v1::CreateZoneRequest>,
    ) -> Result<Response<v1::CreateZoneResponse>, Status> {
        unimplemented()
    }
    async fn destroy_zone(
        &self,
        _: Request<v1::DestroyZoneRequest>,
    ) -> Result<Response<v1::DestroyZoneResponse>, Status> {
        unimplemented()
    }
    async fn resolve_zone(
        &self,
        _: Request<v1::ResolveZoneRequest>,
    ) -> Result<Response<v1::ResolveZoneResponse>, Status> {
        unimplemented()
    }
    type AttachZoneConsoleStream = Stream_<v1::AttachZoneConsoleResponse>;
    async fn attach_zone_console(
        &self,
        _: Request<tonic::Streaming<v1::AttachZoneConsoleRequest>>,
    ) -> Result<Response<Self::AttachZoneConsoleStream>, Status> {
        unimplemented()
    }
    type ReadZoneLogsStream = Stream_<v1::ReadZoneLogsResponse>;
    async fn read_zone_logs(
        &self,
        _: Request<v1::ReadZoneLogsRequest>,
    ) -> Result<Response<Self::ReadZoneLogsStream>, Status> {
        unimplemented()
    }
    type ExecInZoneStream = Stream_<v1::ExecInZoneResponse>;
    async fn exec_in_zone(
        &self,
        _: Request<tonic::Streaming<v1::ExecInZoneRequest>>,
    ) -> Result<Response<Self::ExecInZoneStream>, Status> {
        unimplemented()
    }
    async fn read_zone_metrics(
        &self,
        _: Request<v1::ReadZoneMetricsRequest>,
    ) -> Result<Response<v1::ReadZoneMetricsResponse>, Status> {
        unimplemented()
    }
    async fn update_zone_resources(
        &self,
        _: Request<v1::UpdateZoneResourcesRequest>,
    ) -> Result<Response<v1::UpdateZoneResourcesResponse>, Status> {
        unimplemented()
    }
    type PullImageStream = Stream_<v1::PullImageResponse>;
    async fn pull_image(
        &self,
        _: Request<v1::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        unimplemented()
    }
    type ImportImageStream = Stream_<v1::PullImageResponse>;
    async fn import_image(
        &self,
        _: Request<v1::ImportImageRequest>,
    ) -> Result<Response<Self::ImportImageStream>, Status> {
        unimplemented()
    }
    async fn list_images(
        &self,
        _: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        unimplemented()
    }
    async fn remove_image(
        &self,
        _: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        unimplemented()
    }
    async fn prune_images(
        &self,
        _: Request<v1::PruneImagesRequest>,
    ) -> Result<Response<v1::PruneImagesResponse>, Status> {
        unimplemented()
    }
    async fn list_network_reservations(
        &self,
        _: Request<v1::ListNetworkReservationsRequest>,
    ) -> Result<Response<v1::ListNetworkReservationsResponse>, Status> {
        unimplemented()
    }
}

/// A stream of `first`, then whatever `rest` sends.
fn async_stream<T: Send + 'static, F, Fut>(first: Vec<T>, rest: F) -> Stream_<T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let feeder = tx.clone();
    let tail = rest(tx);
    tokio::spawn(async move {
        for item in first {
            if feeder.send(Ok(item)).await.is_err() {
                return;
            }
        }
        drop(feeder);
        tail.await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
