//! The records the store keeps. Zones and reservations are protobuf messages (the public
//! `spore.v1` types embedded in a few private fields); image records are JSON because they
//! wrap `spore_oci::PackedImage`, which is serde.

use serde::{Deserialize, Serialize};
use spore_api::v1;
use uuid::Uuid;

/// A zone as stored: the API view plus what only the daemon needs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ZoneRecord {
    /// Id, name, spec as given, status with history.
    #[prost(message, optional, tag = "1")]
    pub zone: Option<v1::Zone>,
    /// The image record the zone boots (`<manifest digest>/<format>`), once resolved.
    #[prost(string, tag = "2")]
    pub image_key: String,
    /// The packed root image the zone boots from, once resolved.
    #[prost(string, tag = "3")]
    pub root_image: String,
    /// The vCPUs and memory the VM was created with: UpdateZoneResources stays within them.
    #[prost(uint32, tag = "4")]
    pub max_vcpus: u32,
    #[prost(uint64, tag = "5")]
    pub max_memory_mib: u64,
    /// The spec's image, resolved once at CreateZone (unset in records of older daemons).
    #[prost(oneof = "ZoneImage", tags = "6, 7")]
    pub image: Option<ZoneImage>,
}

/// What a zone boots, as CreateZone resolved its spec's image.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ZoneImage {
    /// A normalised reference: the image recorded under it, else a pull.
    #[prost(string, tag = "6")]
    Reference(String),
    /// A cached image named by its id: the manifest digest (`image_key` names the record).
    #[prost(string, tag = "7")]
    Id(String),
}

impl ZoneRecord {
    pub fn new(zone: v1::Zone) -> Self {
        ZoneRecord {
            zone: Some(zone),
            image_key: String::new(),
            root_image: String::new(),
            max_vcpus: 0,
            max_memory_mib: 0,
            image: None,
        }
    }

    /// The zone's id (nil for a record without one, which the daemon never writes).
    pub fn uuid(&self) -> Uuid {
        Uuid::try_parse(&self.zone().id).unwrap_or(Uuid::nil())
    }

    pub fn zone(&self) -> &v1::Zone {
        const EMPTY: &v1::Zone = &v1::Zone {
            id: String::new(),
            name: String::new(),
            spec: None,
            status: None,
        };
        self.zone.as_ref().unwrap_or(EMPTY)
    }

    pub fn zone_mut(&mut self) -> &mut v1::Zone {
        self.zone.get_or_insert_with(Default::default)
    }

    pub fn status(&self) -> v1::ZoneStatus {
        self.zone().status.clone().unwrap_or_default()
    }

    pub fn status_mut(&mut self) -> &mut v1::ZoneStatus {
        self.zone_mut().status.get_or_insert_with(Default::default)
    }

    pub fn spec(&self) -> v1::ZoneSpec {
        self.zone().spec.clone().unwrap_or_default()
    }

    pub fn state(&self) -> v1::ZoneState {
        self.zone()
            .status
            .as_ref()
            .map(|s| s.state())
            .unwrap_or(v1::ZoneState::Unspecified)
    }
}

/// A zone's network addresses, reserved by spored and handed to the guest and sporenet.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reservation {
    #[prost(message, optional, tag = "1")]
    pub reservation: Option<v1::NetworkReservation>,
}

impl Reservation {
    pub fn uuid(&self) -> Uuid {
        self.reservation
            .as_ref()
            .and_then(|r| Uuid::try_parse(&r.zone_id).ok())
            .unwrap_or(Uuid::nil())
    }
}

/// A packed image in the cache, with when it was added and last used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub image: spore_oci::PackedImage,
    /// Unix time, milliseconds.
    pub created_at_ms: i64,
    pub last_used_ms: i64,
}

impl ImageRecord {
    /// The record's key: one root image per (manifest digest, format).
    pub fn key(&self) -> String {
        image_key(&self.image.manifest_digest.to_string(), self.image.format)
    }
}

/// `<manifest digest>/<format>`.
pub fn image_key(manifest_digest: &str, format: spore_oci::ImageFormat) -> String {
    format!("{manifest_digest}/{}", format.name())
}
