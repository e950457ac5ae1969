//! Durable state in redb (`<state_dir>/state.db`): zones, the event log, image records and
//! network reservations, plus a schema version with a migration hook.
//!
//! Every write commits with redb's immediate durability (an fdatasync per commit), so an
//! acknowledged RPC survives a crash. All methods are blocking: callers on the async runtime
//! go through [`Store::run`], which moves the work to the blocking pool.
//!
//! Why redb and not sled: docs/state.md.

mod records;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use spore_api::v1;
use uuid::Uuid;

pub use records::{ImageRecord, Reservation, ZoneImage, ZoneRecord, image_key};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ZONES: TableDefinition<u128, &[u8]> = TableDefinition::new("zones");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const IMAGE_REFS: TableDefinition<&str, &str> = TableDefinition::new("image_refs");
const RESERVATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("reservations");

const SCHEMA_VERSION_KEY: &str = "schema_version";
const NEXT_SEQUENCE_KEY: &str = "next_event_sequence";

/// The schema this build writes. Bump it with a migration in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 1;

/// Upgrades from version `n` to `n + 1`, indexed by `n - 1`. Empty while only v1 exists.
type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;
const MIGRATIONS: &[Migration] = &[];

/// Why the state database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "the state database {path} has schema version {found}, newer than this spored understands ({SCHEMA_VERSION}): run a newer spored"
    )]
    TooNew { path: PathBuf, found: u64 },
    #[error("state database operation failed")]
    Db(#[source] Box<redb::Error>),
    #[error("stored record {what} is corrupt")]
    Corrupt {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the state database task panicked or was cancelled")]
    Task,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A zone change and the events it produces, committed together.
#[derive(Debug, Default)]
pub struct ZoneWrite {
    /// Store this record (insert or replace).
    pub put: Option<ZoneRecord>,
    /// Remove this zone's record.
    pub delete: Option<Uuid>,
    /// Events to append; their sequence numbers are assigned at commit.
    pub events: Vec<v1::Event>,
    /// Reserve addresses for a zone.
    pub reserve: Option<Reservation>,
    /// Release a zone's reservation.
    pub release: Option<Uuid>,
}

/// The state database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    retained_events: u64,
}

impl Store {
    /// Opens (or creates) the database, checks its schema version and migrates it.
    pub fn open(path: &Path, retained_events: u64) -> Result<Store> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let store = Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            retained_events: retained_events.max(1),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                    meta.insert(NEXT_SEQUENCE_KEY, 1)?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::TooNew {
                        path: self.path.clone(),
                        found: v,
                    });
                }
                Some(mut v) => {
                    drop(meta);
                    while v < SCHEMA_VERSION {
                        MIGRATIONS[(v - 1) as usize](&txn)?;
                        v += 1;
                    }
                    txn.open_table(META)?.insert(SCHEMA_VERSION_KEY, v)?;
                }
            }
            // Create every table so readers never meet a missing one.
            txn.open_table(ZONES)?;
            txn.open_table(EVENTS)?;
            txn.open_table(IMAGES)?;
            txn.open_table(IMAGE_REFS)?;
            txn.open_table(RESERVATIONS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A write transaction that is on disk when its commit returns: redb's immediate
    /// durability (fdatasync of the file, not sync_file_range). It is redb's default; it is
    /// set here so no caller can weaken it by accident.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Db(Box::new(redb::Error::from(e))))?;
        Ok(txn)
    }

    /// Runs blocking database work on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| StoreError::Task)?
    }

    pub fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta
            .get(SCHEMA_VERSION_KEY)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    // ------------------------------------------------------------------ zones

    pub fn load_zones(&self) -> Result<Vec<ZoneRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ZONES)?;
        let mut zones = Vec::new();
        for item in table.iter()? {
            let (key, value) = item?;
            let id = Uuid::from_u128(key.value());
            zones.push(decode::<ZoneRecord>(value.value(), || {
                format!("zone {id}")
            })?);
        }
        Ok(zones)
    }

    /// Commits a zone change with its events; returns the events with their sequences.
    pub fn commit(&self, write: ZoneWrite) -> Result<Vec<v1::Event>> {
        let txn = self.begin_write()?;
        let mut events = write.events;
        {
            let mut zones = txn.open_table(ZONES)?;
            if let Some(record) = &write.put {
                zones.insert(record.uuid().as_u128(), record.encode_to_vec().as_slice())?;
            }
            if let Some(id) = write.delete {
                zones.remove(id.as_u128())?;
            }
            let mut reservations = txn.open_table(RESERVATIONS)?;
            if let Some(r) = &write.reserve {
                reservations.insert(r.uuid().as_u128(), r.encode_to_vec().as_slice())?;
            }
            if let Some(id) = write.release {
                reservations.remove(id.as_u128())?;
            }
            if !events.is_empty() {
                let mut meta = txn.open_table(META)?;
                let mut next = meta.get(NEXT_SEQUENCE_KEY)?.map(|v| v.value()).unwrap_or(1);
                let mut log = txn.open_table(EVENTS)?;
                for event in &mut events {
                    event.sequence = next;
                    log.insert(next, event.encode_to_vec().as_slice())?;
                    next += 1;
                }
                meta.insert(NEXT_SEQUENCE_KEY, next)?;
                // Keep the log bounded: drop everything older than the last `retained`.
                let keep_from = next.saturating_sub(self.retained_events);
                if keep_from > 1 {
                    log.retain_in(..keep_from, |_, _| false)?;
                }
            }
        }
        txn.commit()?;
        Ok(events)
    }

    // ----------------------------------------------------------------- events

    /// The sequence the next event will get (1 on a fresh database).
    pub fn next_sequence(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(NEXT_SEQUENCE_KEY)?.map(|v| v.value()).unwrap_or(1))
    }

    /// Retained events with sequence >= `from`, oldest first, at most `limit`.
    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<v1::Event>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for item in table.range(from..)?.take(limit) {
            let (seq, value) = item?;
            let seq = seq.value();
            out.push(decode::<v1::Event>(value.value(), || {
                format!("event {seq}")
            })?);
        }
        Ok(out)
    }

    pub fn event_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(EVENTS)?.len()?)
    }

    // ----------------------------------------------------------------- images

    /// Stores an image record and points each of its references at it.
    pub fn put_image(&self, record: &ImageRecord) -> Result<()> {
        let key = record.key();
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            what: format!("image {key}"),
            source: Box::new(e),
        })?;
        let txn = self.begin_write()?;
        {
            let mut images = txn.open_table(IMAGES)?;
            images.insert(key.as_str(), bytes.as_slice())?;
            let mut refs = txn.open_table(IMAGE_REFS)?;
            for reference in &record.image.references {
                let previous = refs
                    .insert(reference.as_str(), key.as_str())?
                    .map(|v| v.value().to_string());
                // A reference names one image (docker's tag): it leaves the one it named.
                let Some(old_key) = previous.filter(|k| *k != key) else {
                    continue;
                };
                let old = images.get(old_key.as_str())?.map(|v| v.value().to_vec());
                let Some(old) = old else { continue };
                let mut old: ImageRecord = decode_json(&old, &old_key)?;
                if old.image.manifest_digest != record.image.manifest_digest {
                    old.image.references.retain(|r| r != reference);
                    let bytes = serde_json::to_vec(&old).map_err(|e| StoreError::Corrupt {
                        what: format!("image {old_key}"),
                        source: Box::new(e),
                    })?;
                    images.insert(old_key.as_str(), bytes.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn image(&self, key: &str) -> Result<Option<ImageRecord>> {
        let txn = self.db.begin_read()?;
        let images = txn.open_table(IMAGES)?;
        match images.get(key)? {
            Some(v) => Ok(Some(decode_json(v.value(), key)?)),
            None => Ok(None),
        }
    }

    /// The image a reference points at, if any.
    pub fn image_by_reference(&self, reference: &str) -> Result<Option<ImageRecord>> {
        let key = {
            let txn = self.db.begin_read()?;
            let refs = txn.open_table(IMAGE_REFS)?;
            refs.get(reference)?.map(|v| v.value().to_string())
        };
        match key {
            Some(key) => self.image(&key),
            None => Ok(None),
        }
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let txn = self.db.begin_read()?;
        let images = txn.open_table(IMAGES)?;
        let mut out = Vec::new();
        for item in images.iter()? {
            let (key, value) = item?;
            out.push(decode_json(value.value(), key.value())?);
        }
        Ok(out)
    }

    /// Up to `limit` image records in key order (manifest digest, then format), after `after`.
    pub fn images_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<ImageRecord>> {
        let txn = self.db.begin_read()?;
        let images = txn.open_table(IMAGES)?;
        let range = match after {
            Some(key) => {
                let bounds: (Bound<&str>, Bound<&str>) = (Bound::Excluded(key), Bound::Unbounded);
                images.range::<&str>(bounds)?
            }
            None => images.iter()?,
        };
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (key, value) = item?;
            out.push(decode_json(value.value(), key.value())?);
        }
        Ok(out)
    }

    /// Removes an image record and every reference that points at it.
    pub fn delete_image(&self, key: &str) -> Result<()> {
        let txn = self.begin_write()?;
        {
            txn.open_table(IMAGES)?.remove(key)?;
            let mut refs = txn.open_table(IMAGE_REFS)?;
            refs.retain(|_, target| target != key)?;
        }
        txn.commit()?;
        Ok(())
    }

    // ----------------------------------------------------------- reservations

    /// Removes reservations whose zone is not stored (there should be none: a zone and its
    /// reservation come and go in one commit) and returns their zone ids.
    pub fn release_orphans(&self) -> Result<Vec<Uuid>> {
        let txn = self.begin_write()?;
        let mut orphans = Vec::new();
        {
            let zones = txn.open_table(ZONES)?;
            let mut reservations = txn.open_table(RESERVATIONS)?;
            for item in reservations.iter()? {
                let (key, _) = item?;
                if zones.get(key.value())?.is_none() {
                    orphans.push(key.value());
                }
            }
            for key in &orphans {
                reservations.remove(*key)?;
            }
        }
        txn.commit()?;
        Ok(orphans.into_iter().map(Uuid::from_u128).collect())
    }

    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RESERVATIONS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (key, value) = item?;
            let id = Uuid::from_u128(key.value());
            out.push(decode::<Reservation>(value.value(), || {
                format!("reservation {id}")
            })?);
        }
        Ok(out)
    }
}

fn decode<M: Message + Default>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<M> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        what: what(),
        source: Box::new(e),
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8], key: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: format!("image {key}"),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests;
