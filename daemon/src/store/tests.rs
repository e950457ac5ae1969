use super::*;

fn zone(id: Uuid, name: &str, state: v1::ZoneState) -> ZoneRecord {
    ZoneRecord::new(v1::Zone {
        id: id.to_string(),
        name: name.into(),
        spec: Some(v1::ZoneSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        status: Some(v1::ZoneStatus {
            state: state as i32,
            ..Default::default()
        }),
    })
}

fn event(id: Uuid) -> v1::Event {
    v1::Event {
        sequence: 0,
        time: None,
        kind: Some(v1::event::Kind::ZoneStateChanged(v1::ZoneStateChanged {
            zone_id: id.to_string(),
            ..Default::default()
        })),
    }
}

#[test]
fn zones_and_events_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let id = Uuid::new_v4();
    {
        let store = Store::open(&path, 100).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let events = store
            .commit(ZoneWrite {
                put: Some(zone(id, "web", v1::ZoneState::Pending)),
                events: vec![event(id), event(id)],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
    let store = Store::open(&path, 100).unwrap();
    let zones = store.load_zones().unwrap();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].uuid(), id);
    assert_eq!(zones[0].zone().name, "web");
    assert_eq!(store.next_sequence().unwrap(), 3);
    // Sequences continue across reopen, never reused.
    let more = store
        .commit(ZoneWrite {
            events: vec![event(id)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(more[0].sequence, 3);
    assert_eq!(store.events_from(2, 10).unwrap().len(), 2);
}

#[test]
fn event_log_is_bounded_to_the_retained_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db"), 5).unwrap();
    let id = Uuid::new_v4();
    for _ in 0..12 {
        store
            .commit(ZoneWrite {
                events: vec![event(id)],
                ..Default::default()
            })
            .unwrap();
    }
    assert_eq!(store.event_count().unwrap(), 5);
    let kept: Vec<u64> = store
        .events_from(0, 100)
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(kept, vec![8, 9, 10, 11, 12]);
}

#[test]
fn delete_removes_the_zone_and_release_the_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db"), 10).unwrap();
    let id = Uuid::new_v4();
    let reservation = Reservation {
        reservation: Some(v1::NetworkReservation {
            zone_id: id.to_string(),
            ipv4: "10.75.0.2/16".into(),
            ..Default::default()
        }),
    };
    store
        .commit(ZoneWrite {
            put: Some(zone(id, "a", v1::ZoneState::Pending)),
            reserve: Some(reservation),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.reservations().unwrap().len(), 1);
    store
        .commit(ZoneWrite {
            delete: Some(id),
            release: Some(id),
            ..Default::default()
        })
        .unwrap();
    assert!(store.load_zones().unwrap().is_empty());
    assert!(store.reservations().unwrap().is_empty());
}

#[test]
fn newer_schema_is_refused_with_the_versions_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, 10).err().unwrap().to_string();
    assert!(
        err.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{err}"
    );
    assert!(err.contains("run a newer spored"), "{err}");
}

#[test]
fn corrupt_zone_record_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path, 10).unwrap();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(ZONES)
            .unwrap()
            .insert(7u128, [0xffu8, 0xff, 0xff].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = store.load_zones().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

fn image(hex: char, references: &[&str]) -> ImageRecord {
    let digest = |c: char| {
        spore_oci::Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    };
    ImageRecord {
        image: spore_oci::PackedImage {
            references: references.iter().map(|r| r.to_string()).collect(),
            manifest_digest: digest(hex),
            index_digest: None,
            config_digest: digest('c'),
            platform: spore_oci::Platform::default(),
            format: spore_oci::ImageFormat::Squashfs,
            path: format!("/images/{hex}.squashfs").into(),
            size_bytes: 4096,
            layers: Vec::new(),
            config: Default::default(),
        },
        created_at_ms: 0,
        last_used_ms: 0,
    }
}

#[test]
fn a_reference_moves_to_the_image_last_recorded_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db"), 100).unwrap();
    let old = image('a', &["docker.io/myorg/app:1", "docker.io/myorg/app:old"]);
    store.put_image(&old).unwrap();
    // The same manifest in another format keeps sharing its references.
    let mut erofs = old.clone();
    erofs.image.format = spore_oci::ImageFormat::Erofs;
    store.put_image(&erofs).unwrap();
    assert_eq!(
        store.image(&old.key()).unwrap().unwrap().image.references,
        ["docker.io/myorg/app:1", "docker.io/myorg/app:old"]
    );
    let new = image('b', &["docker.io/myorg/app:1"]);
    store.put_image(&new).unwrap();
    assert_eq!(
        store
            .image_by_reference("docker.io/myorg/app:1")
            .unwrap()
            .unwrap()
            .key(),
        new.key()
    );
    // The previous holder (the record the reference pointed at) no longer lists it.
    assert_eq!(
        store.image(&erofs.key()).unwrap().unwrap().image.references,
        ["docker.io/myorg/app:old"]
    );
}

#[test]
fn a_zone_keeps_its_resolved_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let id = Uuid::new_v4();
    let mut record = zone(id, "web", v1::ZoneState::Pending);
    record.image = Some(ZoneImage::Id(format!("sha256:{}", "a".repeat(64))));
    {
        let store = Store::open(&path, 100).unwrap();
        store
            .commit(ZoneWrite {
                put: Some(record.clone()),
                ..Default::default()
            })
            .unwrap();
    }
    let store = Store::open(&path, 100).unwrap();
    let zones = store.load_zones().unwrap();
    assert_eq!(zones[0].image, record.image);
}
