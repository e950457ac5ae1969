//! The gRPC service: thin handlers that validate, call the core and map results back.

mod console;
mod convert;
mod events;
mod images;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use spore_api::v1::{self, control_server::Control};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::daemon::Daemon;

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `spore.v1.Control` service.
#[derive(Clone)]
pub struct ControlService {
    daemon: Arc<Daemon>,
    /// Flips to true when the daemon shuts down: long-lived streams end so shutdown can finish.
    shutdown: watch::Receiver<bool>,
}

impl ControlService {
    pub fn new(daemon: Arc<Daemon>, shutdown: watch::Receiver<bool>) -> Self {
        ControlService { daemon, shutdown }
    }

    fn resolve(&self, zone: &str) -> Result<Uuid, Status> {
        if zone.is_empty() {
            return Err(Status::invalid_argument(
                "zone: a zone id, id prefix or name is required",
            ));
        }
        self.daemon.zones.resolve(zone).map_err(status::from_zone)
    }

    fn zone(&self, id: Uuid) -> Result<v1::Zone, Status> {
        self.daemon
            .zones
            .get(id)
            .and_then(|r| r.zone)
            .ok_or_else(|| Status::not_found(format!("zone {id} not found")))
    }
}

/// A stream that ends with UNAVAILABLE when the daemon shuts down.
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_host_status(
        &self,
        _: Request<v1::GetHostStatusRequest>,
    ) -> Result<Response<v1::GetHostStatusResponse>, Status> {
        let status = self
            .daemon
            .host_status()
            .await
            .map_err(status::from_store)?;
        Ok(Response::new(status))
    }

    async fn create_zone(
        &self,
        request: Request<v1::CreateZoneRequest>,
    ) -> Result<Response<v1::CreateZoneResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: a zone spec is required"))?;
        let (id, name) = self
            .daemon
            .create_zone(spec)
            .await
            .map_err(status::from_daemon)?;
        Ok(Response::new(v1::CreateZoneResponse {
            zone_id: id.to_string(),
            name,
        }))
    }

    async fn destroy_zone(
        &self,
        request: Request<v1::DestroyZoneRequest>,
    ) -> Result<Response<v1::DestroyZoneResponse>, Status> {
        let id = self.resolve(&request.into_inner().zone)?;
        self.daemon
            .destroy_zone(id)
            .await
            .map_err(status::from_daemon)?;
        Ok(Response::new(v1::DestroyZoneResponse {}))
    }

    async fn get_zone(
        &self,
        request: Request<v1::GetZoneRequest>,
    ) -> Result<Response<v1::GetZoneResponse>, Status> {
        let id = self.resolve(&request.into_inner().zone)?;
        Ok(Response::new(v1::GetZoneResponse {
            zone: Some(self.zone(id)?),
        }))
    }

    async fn list_zones(
        &self,
        request: Request<v1::ListZonesRequest>,
    ) -> Result<Response<v1::ListZonesResponse>, Status> {
        let request = request.into_inner();
        let zones = self
            .daemon
            .zones
            .list_matching(|r| {
                (request.states.is_empty() || request.states.contains(&(r.state() as i32)))
                    && (request.name.is_empty() || r.zone().name == request.name)
            })
            .into_iter()
            .filter_map(|r| r.zone)
            .map(|mut zone| {
                if !request.include_history
                    && let Some(status) = zone.status.as_mut()
                {
                    status.history.clear();
                }
                zone
            })
            .collect();
        let reply = v1::ListZonesResponse { zones };
        crate::limits::check_reply(&reply, "list fewer zones at once (filter by state or name)")?;
        Ok(Response::new(reply))
    }

    async fn resolve_zone(
        &self,
        request: Request<v1::ResolveZoneRequest>,
    ) -> Result<Response<v1::ResolveZoneResponse>, Status> {
        let id = self.resolve(&request.into_inner().zone)?;
        Ok(Response::new(v1::ResolveZoneResponse {
            zone_id: id.to_string(),
        }))
    }

    type WatchEventsStream = Stream_<v1::Event>;

    async fn watch_events(
        &self,
        request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Ok(Response::new(events::watch(
            &self.daemon,
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }

    type AttachZoneConsoleStream = Stream_<v1::AttachZoneConsoleResponse>;

    async fn attach_zone_console(
        &self,
        request: Request<Streaming<v1::AttachZoneConsoleRequest>>,
    ) -> Result<Response<Self::AttachZoneConsoleStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the first message must name the zone"))?;
        let id = self.resolve(&first.zone)?;
        console::attach(&self.daemon, id, first, inbound, self.shutdown.clone())
            .await
            .map(Response::new)
    }

    type ReadZoneLogsStream = Stream_<v1::ReadZoneLogsResponse>;

    async fn read_zone_logs(
        &self,
        request: Request<v1::ReadZoneLogsRequest>,
    ) -> Result<Response<Self::ReadZoneLogsStream>, Status> {
        let request = request.into_inner();
        let id = self.resolve(&request.zone)?;
        console::logs(&self.daemon, id, request, self.shutdown.clone())
            .await
            .map(Response::new)
    }

    type ExecInZoneStream = Stream_<v1::ExecInZoneResponse>;

    async fn exec_in_zone(
        &self,
        _: Request<Streaming<v1::ExecInZoneRequest>>,
    ) -> Result<Response<Self::ExecInZoneStream>, Status> {
        Err(Status::unimplemented(
            "exec in a zone is not available yet: it needs the exec/metrics work on the IDM channel (a later spore release)",
        ))
    }

    async fn read_zone_metrics(
        &self,
        _: Request<v1::ReadZoneMetricsRequest>,
    ) -> Result<Response<v1::ReadZoneMetricsResponse>, Status> {
        Err(Status::unimplemented(
            "zone metrics are not available yet: they need the exec/metrics work on the IDM channel (a later spore release)",
        ))
    }

    async fn update_zone_resources(
        &self,
        request: Request<v1::UpdateZoneResourcesRequest>,
    ) -> Result<Response<v1::UpdateZoneResourcesResponse>, Status> {
        let request = request.into_inner();
        let id = self.resolve(&request.zone)?;
        if request.vcpus.is_none() && request.memory_mib.is_none() {
            return Err(Status::invalid_argument(
                "nothing to change: set vcpus and/or memory_mib",
            ));
        }
        let record = self
            .daemon
            .update_resources(id, request.vcpus, request.memory_mib)
            .await
            .map_err(status::from_daemon)?;
        Ok(Response::new(v1::UpdateZoneResourcesResponse {
            zone: record.zone,
        }))
    }

    type PullImageStream = Stream_<v1::PullImageResponse>;

    async fn pull_image(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        images::pull(&self.daemon, request.into_inner()).map(Response::new)
    }

    type ImportImageStream = Stream_<v1::PullImageResponse>;

    async fn import_image(
        &self,
        request: Request<v1::ImportImageRequest>,
    ) -> Result<Response<Self::ImportImageStream>, Status> {
        images::import(&self.daemon, request.into_inner()).map(Response::new)
    }

    async fn list_images(
        &self,
        _: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let d = &self.daemon;
        let records = d.images.list().await.map_err(status::from_image)?;
        Ok(Response::new(v1::ListImagesResponse {
            images: records
                .iter()
                .map(|r| convert::image(&d.images, r))
                .collect(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let query = request.into_inner().image;
        if query.is_empty() {
            return Err(Status::invalid_argument(
                "image: a reference or digest is required",
            ));
        }
        let images = &self.daemon.images;
        let record = images.find(&query).await.map_err(status::from_image)?;
        let reclaimed = images.remove(&record).await.map_err(status::from_image)?;
        Ok(Response::new(v1::RemoveImageResponse {
            manifest_digest: record.image.manifest_digest.to_string(),
            reclaimed_bytes: reclaimed,
        }))
    }

    async fn prune_images(
        &self,
        _: Request<v1::PruneImagesRequest>,
    ) -> Result<Response<v1::PruneImagesResponse>, Status> {
        let (removed, reclaimed) = self
            .daemon
            .images
            .prune()
            .await
            .map_err(status::from_image)?;
        Ok(Response::new(v1::PruneImagesResponse {
            removed_digests: removed
                .iter()
                .map(|r| r.image.manifest_digest.to_string())
                .collect(),
            reclaimed_bytes: reclaimed,
        }))
    }

    async fn list_network_reservations(
        &self,
        _: Request<v1::ListNetworkReservationsRequest>,
    ) -> Result<Response<v1::ListNetworkReservationsResponse>, Status> {
        let reservations = self
            .daemon
            .zones
            .store()
            .run(|s| s.reservations())
            .await
            .map_err(status::from_store)?;
        Ok(Response::new(v1::ListNetworkReservationsResponse {
            reservations: reservations
                .into_iter()
                .filter_map(|r| r.reservation)
                .collect(),
        }))
    }
}
