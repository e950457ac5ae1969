//! The gRPC service: thin handlers that validate, call the core and map results back.

mod console;
mod convert;
mod events;
mod exec;
mod images;
pub mod pages;
pub mod status;

use std::ops::ControlFlow;
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
        let after = pages::parse_zone_token(&request.page_token)?;
        let mut page = pages::Page::new(request.page_size);
        let mut last = None;
        self.daemon.zones.scan(after, |r| {
            let wanted = (request.states.is_empty()
                || request.states.contains(&(r.state() as i32)))
                && (request.name.is_empty() || r.zone().name == request.name);
            if !wanted {
                return ControlFlow::Continue(());
            }
            if !page.wants_more() {
                return ControlFlow::Break(());
            }
            let Some(mut zone) = r.zone.clone() else {
                return ControlFlow::Continue(());
            };
            if !request.include_history
                && let Some(status) = zone.status.as_mut()
            {
                status.history.clear();
            }
            let flow = page.offer(zone);
            if flow.is_continue() {
                last = Some(crate::zones::ZoneKey::of(r));
            }
            flow
        });
        let (zones, more) = page.finish();
        let next_page_token = match (more, last) {
            (true, Some(last)) => pages::zone_token(&last),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListZonesResponse {
            zones,
            next_page_token,
        }))
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
        request: Request<Streaming<v1::ExecInZoneRequest>>,
    ) -> Result<Response<Self::ExecInZoneStream>, Status> {
        exec::exec(
            &self.daemon,
            request.into_inner(),
            self.shutdown.clone(),
            |zone| self.resolve(zone),
        )
        .await
        .map(Response::new)
    }

    async fn read_zone_metrics(
        &self,
        request: Request<v1::ReadZoneMetricsRequest>,
    ) -> Result<Response<v1::ReadZoneMetricsResponse>, Status> {
        let request = request.into_inner();
        let id = self.resolve(&request.zone)?;
        let metrics = self
            .daemon
            .metrics(id, !request.omit_processes)
            .await
            .map_err(status::from_daemon)?;
        let zone = self.zone(id)?;
        Ok(Response::new(convert::metrics(&zone, metrics)))
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
        request: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let request = request.into_inner();
        let after = pages::parse_image_token(&request.page_token)?;
        let d = &self.daemon;
        let mut page = pages::Page::new(request.page_size);
        // One record more than a full page tells whether another page follows.
        let limit = match request.page_size as usize {
            0 => usize::MAX,
            n => n.min(pages::MAX_PAGE_SIZE) + 1,
        };
        let records = d
            .images
            .list_after(after, limit)
            .await
            .map_err(status::from_image)?;
        let mut last = None;
        for record in &records {
            if !page.wants_more() || page.offer(convert::image(&d.images, record)).is_break() {
                break;
            }
            last = Some(record.key());
        }
        let (images, more) = page.finish();
        let next_page_token = match (more, last) {
            (true, Some(last)) => pages::image_token(&last),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListImagesResponse {
            images,
            next_page_token,
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
