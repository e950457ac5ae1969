//! The daemon core driven through the zone state machine with a test double of the backend
//! (tests only): launch, exit codes and signals, destroy while running, auto-remove, image
//! failures, VM crashes, re-adoption and cleanup after a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use spore_api::v1::{self, ZoneState};
use spored::daemon::DaemonError;
use spored::store::ZoneRecord;
use support::fake_backend::FakeBackend;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    daemon: Arc<spored::daemon::Daemon>,
    backend: Arc<FakeBackend>,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tune: impl FnOnce(&mut spored::config::Config)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    tune(&mut config);
    let backend = Arc::new(FakeBackend::default());
    let daemon = support::core(config, backend.clone()).await;
    let layout = support::demo_image(dir.path(), "demo");
    let opts = spore_oci::ImportOptions {
        tag: Some(spore_oci::Reference::parse("demo").unwrap()),
        ..Default::default()
    };
    daemon
        .images
        .import(&layout, &opts, spore_oci::NoProgress)
        .await
        .unwrap();
    Setup {
        _dir: dir,
        daemon,
        backend,
    }
}

fn spec(cmd: &[&str]) -> v1::ZoneSpec {
    v1::ZoneSpec {
        image: "demo".into(),
        cmd: Some(v1::StringList {
            values: cmd.iter().map(|s| s.to_string()).collect(),
        }),
        ..Default::default()
    }
}

fn state(s: &Setup, id: Uuid) -> Option<ZoneState> {
    s.daemon.zones.get(id).map(|r| r.state())
}

async fn wait_state(s: &Setup, id: Uuid, want: ZoneState) -> ZoneRecord {
    support::until(&format!("zone {id} to be {want:?}"), WAIT, || {
        state(s, id) == Some(want)
    })
    .await;
    s.daemon.zones.get(id).unwrap()
}

fn history(record: &ZoneRecord) -> Vec<ZoneState> {
    record.status().history.iter().map(|t| t.to()).collect()
}

#[tokio::test]
async fn launched_zone_runs_and_exit_code_is_recorded() {
    let s = setup().await;
    let mut events = s.daemon.zones.bus().subscribe();
    let (id, name) = s.daemon.create_zone(spec(&["exit", "7"])).await.unwrap();
    assert!(name.starts_with("zone-"), "{name}");
    let record = wait_state(&s, id, ZoneState::Exited).await;
    use ZoneState::*;
    assert_eq!(
        history(&record),
        vec![Pending, Preparing, Creating, Starting, Running, Exited]
    );
    let status = record.status();
    assert_eq!(
        status.exit,
        Some(v1::ExitStatus {
            status: Some(v1::exit_status::Status::Code(7))
        })
    );
    assert_eq!(status.reason, "workload exited with code 7");
    assert!(status.image_digest.starts_with("sha256:"));
    let started = &status.history[3];
    assert_eq!(started.reason, "VM started (fake vm)");
    // The handle names the VM only while it exists: the exited zone's VM is released.
    support::until("the VM handle to be cleared", WAIT, || {
        s.daemon
            .zones
            .get(id)
            .is_some_and(|r| r.status().domain.is_empty())
    })
    .await;
    // Every transition was published, in order, with increasing sequences.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let e = events.next().await.unwrap().unwrap();
        if let Some(v1::event::Kind::ZoneStateChanged(c)) = &e.kind {
            seen.push((e.sequence, c.transition.as_ref().unwrap().to()));
        }
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.last().unwrap().1, Exited);
    // The VM was released once the workload ended; the console log kept its output.
    support::until("VM release", WAIT, || {
        s.backend.destroyed.lock().unwrap().contains(&id)
    })
    .await;
    let log = s.daemon.console(id).unwrap().read_log();
    assert_eq!(String::from_utf8_lossy(&log), "running exit 7\nbye\n");
    // The config block (the zone's environment) goes with the VM; the console log stays.
    let zone_dir = s.daemon.config.state_dir.join("zones").join(id.to_string());
    support::until("the config block to be removed", WAIT, || {
        !zone_dir.join("config.blk").exists()
    })
    .await;
    assert!(zone_dir.join("console.log").exists());
}

#[tokio::test]
async fn exit_is_acknowledged_and_a_duplicate_only_acknowledged() {
    let s = setup().await;
    let (id, _) = s
        .daemon
        .create_zone(spec(&["resend", "5", "9"]))
        .await
        .unwrap();
    let record = wait_state(&s, id, ZoneState::Exited).await;
    // The guest sends its second Exit only after the first ack, so the ack follows the
    // committed transition; the duplicate (with another code) is acked and changes nothing.
    support::until("the guest to report both acks", WAIT, || {
        String::from_utf8_lossy(&s.daemon.console(id).unwrap().read_log()).contains("acked")
    })
    .await;
    let log = s.daemon.console(id).unwrap().read_log();
    assert_eq!(
        String::from_utf8_lossy(&log),
        "running resend 5 9\nacked twice\n"
    );
    support::until("VM release", WAIT, || {
        s.backend.destroyed.lock().unwrap().contains(&id)
    })
    .await;
    let record = s.daemon.zones.get(id).unwrap_or(record);
    use ZoneState::*;
    assert_eq!(
        history(&record),
        vec![Pending, Preparing, Creating, Starting, Running, Exited]
    );
    assert_eq!(
        record.status().exit,
        Some(v1::ExitStatus {
            status: Some(v1::exit_status::Status::Code(5))
        })
    );
    assert_eq!(record.status().reason, "workload exited with code 5");
}

#[tokio::test]
async fn signal_death_is_reported_as_a_signal() {
    let s = setup().await;
    let (id, _) = s.daemon.create_zone(spec(&["signal", "9"])).await.unwrap();
    let record = wait_state(&s, id, ZoneState::Exited).await;
    assert_eq!(
        record.status().exit.unwrap().status,
        Some(v1::exit_status::Status::Signal(9))
    );
    assert_eq!(record.status().reason, "workload was killed by signal 9");
}

#[tokio::test]
async fn destroy_while_running_stops_the_workload_and_removes_everything() {
    let s = setup().await;
    let (id, _) = s.daemon.create_zone(spec(&["sleep"])).await.unwrap();
    wait_state(&s, id, ZoneState::Running).await;
    let zone_dir = s.daemon.config.state_dir.join("zones").join(id.to_string());
    assert!(zone_dir.join("config.blk").exists());
    let mut events = s.daemon.zones.bus().subscribe();
    s.daemon.destroy_zone(id).await.unwrap();
    assert!(s.daemon.zones.get(id).is_none());
    assert!(!s.backend.has_vm(id));
    assert!(!zone_dir.exists(), "{} left behind", zone_dir.display());
    assert!(s.daemon.zones.store().load_zones().unwrap().is_empty());
    let mut states = Vec::new();
    while states.last() != Some(&ZoneState::Destroyed) {
        if let Some(v1::event::Kind::ZoneStateChanged(c)) =
            events.next().await.unwrap().unwrap().kind.clone()
        {
            states.push(c.transition.unwrap().to());
        }
    }
    use ZoneState::*;
    assert_eq!(states, vec![Stopping, Exited, Destroying, Destroyed]);
    // Destroying it again: it is gone.
    let err = s.daemon.destroy_zone(id).await.unwrap_err();
    assert!(matches!(err, DaemonError::Zone(_)), "{err}");
}

#[tokio::test]
async fn auto_remove_deletes_the_zone_after_exit() {
    let s = setup().await;
    let mut spec = spec(&["exit", "0"]);
    spec.auto_remove = true;
    let (id, _) = s.daemon.create_zone(spec).await.unwrap();
    support::until("auto-removal", WAIT, || state(&s, id).is_none()).await;
    assert!(
        !s.daemon
            .config
            .state_dir
            .join("zones")
            .join(id.to_string())
            .exists()
    );
}

#[tokio::test]
async fn missing_image_fails_with_the_image_named_and_leaks_nothing() {
    let s = setup().await;
    let mut spec = spec(&["exit", "0"]);
    spec.image = "127.0.0.1:1/nope/missing:1".into();
    let (id, _) = s.daemon.create_zone(spec).await.unwrap();
    let record = wait_state(&s, id, ZoneState::Failed).await;
    let reason = record.status().reason;
    assert!(reason.contains("127.0.0.1:1/nope/missing:1"), "{reason}");
    assert!(s.backend.created.lock().unwrap().is_empty());
    s.daemon.destroy_zone(id).await.unwrap();
    assert!(
        !s.daemon
            .config
            .state_dir
            .join("zones")
            .join(id.to_string())
            .exists()
    );
}

#[tokio::test]
async fn vm_that_stops_without_an_exit_fails_the_zone() {
    let s = setup().await;
    let (id, _) = s.daemon.create_zone(spec(&["crash"])).await.unwrap();
    let record = wait_state(&s, id, ZoneState::Failed).await;
    assert!(
        record
            .status()
            .reason
            .contains("stopped before the workload reported an exit"),
        "{}",
        record.status().reason
    );
    let (id, _) = s
        .daemon
        .create_zone(spec(&["fail", "no such executable"]))
        .await
        .unwrap();
    let record = wait_state(&s, id, ZoneState::Failed).await;
    assert_eq!(
        record.status().reason,
        "spore-init failed: no such executable"
    );
}

#[tokio::test]
async fn every_accepted_name_shape_reaches_the_guest() {
    // The guest double decodes and validates the launch config, hostname included, as
    // spore-init does: a name CreateZone accepts must not fail at Creating.
    let s = setup().await;
    let long = "x".repeat(63);
    let dotted = format!("{}.{}", "a".repeat(31), "b".repeat(31));
    for name in ["a", "0", "web-1", "a.b-c", "1a.2b", "x--y", &long, &dotted] {
        let (id, _) = s
            .daemon
            .create_zone(v1::ZoneSpec {
                name: name.into(),
                ..spec(&["exit", "0"])
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let record = wait_state(&s, id, ZoneState::Exited).await;
        assert_eq!(
            record.status().exit.unwrap().status,
            Some(v1::exit_status::Status::Code(0)),
            "{name}"
        );
    }
    for name in ["web_1", "db.", "a..b", "a-", "-a", "Web"] {
        let err = s
            .daemon
            .create_zone(v1::ZoneSpec {
                name: name.into(),
                ..spec(&["exit", "0"])
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("spec.name"), "{name}: {err}");
    }
}

#[tokio::test]
async fn a_guest_that_never_starts_fails_within_the_start_timeout_and_its_vm_goes() {
    let s = setup_with(|c| c.zones.start_timeout_secs = 2).await;
    let started = std::time::Instant::now();
    let (id, _) = s.daemon.create_zone(spec(&["hang"])).await.unwrap();
    let record = wait_state(&s, id, ZoneState::Failed).await;
    let took = started.elapsed();
    assert_eq!(
        record.status().reason,
        "the guest did not start within 2 s (zones.start_timeout_secs); see the zone's console log"
    );
    assert!(took >= Duration::from_secs(2), "failed after {took:?}");
    assert!(
        history(&record).ends_with(&[ZoneState::Starting, ZoneState::Failed]),
        "{:?}",
        history(&record)
    );
    support::until("the VM to be destroyed", WAIT, || !s.backend.has_vm(id)).await;
    assert!(s.backend.destroyed.lock().unwrap().contains(&id));
    // A guest that starts in time is not touched by the timer.
    let (id, _) = s.daemon.create_zone(spec(&["sleep"])).await.unwrap();
    wait_state(&s, id, ZoneState::Running).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state(&s, id), Some(ZoneState::Running));
}

#[tokio::test]
async fn backend_create_failure_fails_the_zone_with_its_message() {
    let s = setup().await;
    s.backend
        .fail_create
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (id, _) = s.daemon.create_zone(spec(&["exit", "0"])).await.unwrap();
    let record = wait_state(&s, id, ZoneState::Failed).await;
    assert!(record.status().reason.contains("refuses to create VMs"));
}

#[tokio::test]
async fn five_zones_at_once() {
    let s = setup().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut spec = spec(&["exit", &i.to_string()]);
        spec.name = format!("five-{i}");
        ids.push(s.daemon.create_zone(spec).await.unwrap().0);
    }
    for (i, id) in ids.iter().enumerate() {
        let record = wait_state(&s, *id, ZoneState::Exited).await;
        assert_eq!(
            record.status().exit.unwrap().status,
            Some(v1::exit_status::Status::Code(i as i32))
        );
    }
    let mut dup = spec(&["exit", "0"]);
    dup.name = "five-0".into();
    let err = s.daemon.create_zone(dup).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the name \"five-0\" is already used by another zone"
    );
}

/// The launch limit bounds concurrent prepares and creates, not running zones.
#[tokio::test]
async fn running_zones_do_not_hold_launch_slots() {
    let s = setup_with(|c| c.zones.max_parallel_launches = 1).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.daemon.create_zone(spec(&["sleep"])).await.unwrap().0);
    }
    for id in &ids {
        wait_state(&s, *id, ZoneState::Running).await;
    }
}

#[tokio::test]
async fn restart_readopts_running_zones_and_fails_half_built_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config(dir.path());
    let backend = Arc::new(FakeBackend::default());
    // State as a previous daemon left it: one zone running, one caught in Creating, one whose
    // VM vanished, and a VM nobody owns.
    let running = Uuid::new_v4();
    let half_built = Uuid::new_v4();
    let vanished = Uuid::new_v4();
    let orphan = Uuid::new_v4();
    {
        let store = spored::store::Store::open(&config.state_dir.join("state.db"), 100).unwrap();
        for (id, state) in [
            (running, ZoneState::Running),
            (half_built, ZoneState::Creating),
            (vanished, ZoneState::Running),
        ] {
            let record = ZoneRecord::new(v1::Zone {
                id: id.to_string(),
                name: format!("z-{}", &id.to_string()[..8]),
                spec: Some(spec(&["sleep"])),
                status: Some(v1::ZoneStatus {
                    state: state as i32,
                    ..Default::default()
                }),
            });
            store
                .commit(spored::store::ZoneWrite {
                    put: Some(record),
                    ..Default::default()
                })
                .unwrap();
        }
    }
    backend.boot(running, vec!["sleep".into()]);
    backend.boot(orphan, vec!["sleep".into()]);
    let daemon = support::core(config, backend.clone()).await;
    let get = |id| daemon.zones.get(id).unwrap();
    assert_eq!(get(running).state(), ZoneState::Running);
    assert_eq!(get(half_built).state(), ZoneState::Failed);
    assert!(get(half_built).status().reason.contains("spored restarted"));
    assert_eq!(get(vanished).state(), ZoneState::Failed);
    assert!(
        get(vanished)
            .status()
            .reason
            .contains("exit status is unknown")
    );
    assert!(!backend.has_vm(orphan), "an unowned VM was left running");
    // The re-adopted zone is still supervised: its exit is recorded.
    daemon.destroy_zone(running).await.unwrap();
    assert!(daemon.zones.get(running).is_none());
}

#[tokio::test]
async fn resources_change_within_the_zone_bounds_and_only_while_running() {
    let s = setup().await;
    let mut big = spec(&["sleep"]);
    big.vcpus = Some(2);
    big.memory_mib = Some(256);
    let (id, _) = s.daemon.create_zone(big).await.unwrap();
    wait_state(&s, id, ZoneState::Running).await;

    // Memory only: the vCPUs stay; the backend got both, the status records both.
    let record = s
        .daemon
        .update_resources(id, None, Some(160))
        .await
        .unwrap();
    assert_eq!(
        (record.status().vcpus, record.status().memory_mib),
        (2, 160)
    );
    let record = s.daemon.update_resources(id, Some(1), None).await.unwrap();
    assert_eq!(
        (record.status().vcpus, record.status().memory_mib),
        (1, 160)
    );
    let applied: Vec<_> = s.backend.resources.lock().unwrap().clone();
    let want = |vcpus, memory_mib| (id, spore_runtime::Resources { vcpus, memory_mib });
    assert_eq!(applied, vec![want(2, 160), want(1, 160)]);
    // Stored: a fresh read of the table has it.
    let stored = s.daemon.zones.store().load_zones().unwrap();
    assert_eq!(stored[0].status().memory_mib, 160);

    // Past the creation bounds: refused before the backend, naming the bound.
    let err = s
        .daemon
        .update_resources(id, Some(3), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vcpus: 3 vCPUs: the zone was created with 2, so 1 to 2 can be online"
    );
    let err = s
        .daemon
        .update_resources(id, None, Some(512))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "memory_mib: 512 MiB: the zone was created with 256 MiB and cannot grow past it"
    );
    assert_eq!(s.backend.resources.lock().unwrap().len(), 2);

    // A backend that cannot: FAILED_PRECONDITION with its reason, nothing recorded.
    s.backend
        .resources_unsupported
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = s
        .daemon
        .update_resources(id, Some(2), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::BackendCannot { .. }), "{err}");
    assert!(
        spored::daemon::chain(&err).contains("the test double plays a backend without them"),
        "{}",
        spored::daemon::chain(&err)
    );
    assert_eq!(s.daemon.zones.get(id).unwrap().status().vcpus, 1);

    // Not running: refused with the state named.
    s.daemon.destroy_zone(id).await.unwrap();
    let (done, name) = s.daemon.create_zone(spec(&["exit", "0"])).await.unwrap();
    wait_state(&s, done, ZoneState::Exited).await;
    let err = s
        .daemon
        .update_resources(done, Some(1), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("zone {name} is exited: only a running zone's resources can change")
    );
}

/// A record for a made-up image whose id starts with `hex` (no root image on disk).
fn fake_image(hex: &str, references: &[&str]) -> spored::store::ImageRecord {
    let digest = |h: &str| {
        let hex = format!("{h}{}", "0".repeat(64 - h.len()));
        spore_oci::Digest::parse(&format!("sha256:{hex}")).unwrap()
    };
    spored::store::ImageRecord {
        image: spore_oci::PackedImage {
            references: references.iter().map(|r| r.to_string()).collect(),
            manifest_digest: digest(hex),
            index_digest: None,
            config_digest: digest("c"),
            platform: spore_oci::Platform::default(),
            format: spore_oci::ImageFormat::Squashfs,
            path: "/nonexistent.squashfs".into(),
            size_bytes: 4096,
            layers: Vec::new(),
            config: Default::default(),
        },
        created_at_ms: 0,
        last_used_ms: 0,
    }
}

#[tokio::test]
async fn an_image_id_is_taken_wherever_an_image_is() {
    use spored::images::ImageError;
    use spored::store::ZoneImage;
    let s = setup().await;
    let demo = s.daemon.images.find("demo").await.unwrap();
    let digest = demo.image.manifest_digest.to_string();
    let hex = digest.strip_prefix("sha256:").unwrap().to_owned();

    // The whole id, the bare hex, and unique prefixes with and without the algorithm: each
    // launches the cached image (never a pull: the fake host has no registry), pinned at
    // CreateZone, and holds it against removal from then on.
    for image in [
        digest.clone(),
        hex.clone(),
        hex[..12].to_owned(),
        format!("sha256:{}", &hex[..8]),
    ] {
        let spec = v1::ZoneSpec {
            image: image.clone(),
            ..spec(&["exit", "0"])
        };
        let (id, _) = s.daemon.create_zone(spec).await.unwrap();
        let created = s.daemon.zones.get(id).unwrap();
        assert_eq!(
            created.image,
            Some(ZoneImage::Id(digest.clone())),
            "{image}"
        );
        assert_eq!(created.image_key, demo.key(), "{image}");
        let e = s.daemon.images.remove(&demo).await.unwrap_err();
        assert!(matches!(e, ImageError::InUse { .. }), "{image}: {e}");
        let record = wait_state(&s, id, ZoneState::Exited).await;
        assert_eq!(record.status().image_digest, digest, "{image}");
        assert_eq!(
            record.status().history[0].reason,
            format!("requested image {digest}")
        );
        s.daemon.destroy_zone(id).await.unwrap();
    }

    // A name is resolved to its normalised reference, which the driver looks up at launch.
    let (id, _) = s.daemon.create_zone(spec(&["exit", "0"])).await.unwrap();
    assert_eq!(
        s.daemon.zones.get(id).unwrap().image,
        Some(ZoneImage::Reference("docker.io/library/demo:latest".into()))
    );
    wait_state(&s, id, ZoneState::Exited).await;

    // An id not in the cache is refused at once (it used to be sent to Docker Hub as
    // docker.io/library/sha256), and nothing is stored.
    let zones = s.daemon.zones.list().len();
    let missing = format!("sha256:{}", "0".repeat(64));
    let err = s
        .daemon
        .create_zone(v1::ZoneSpec {
            image: missing.clone(),
            ..spec(&[])
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DaemonError::Image(ImageError::NoSuchId(i)) if *i == missing),
        "{err}"
    );
    let status = spored::api::status::from_daemon(err);
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status
            .message()
            .starts_with("spec.image: no image in the cache has the id sha256:000"),
        "{}",
        status.message()
    );
    assert_eq!(s.daemon.zones.list().len(), zones);

    // A prefix two ids share is ambiguous, naming both; a longer one picks one. A name wins
    // over an id prefix that reads the same (docker's order).
    let store = s.daemon.zones.store();
    let a = fake_image("abcd1", &["docker.io/library/a:1"]);
    let b = fake_image("abcd2", &[]);
    let cafe_id = fake_image("cafe", &[]);
    for record in [a.clone(), b.clone(), cafe_id] {
        store.run(move |st| st.put_image(&record)).await.unwrap();
    }
    let err = s
        .daemon
        .create_zone(v1::ZoneSpec {
            image: "abcd".into(),
            ..spec(&[])
        })
        .await
        .unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        matches!(&err, DaemonError::Image(ImageError::Ambiguous { .. })),
        "{text}"
    );
    assert!(
        text.contains(&a.image.manifest_digest.to_string())
            && text.contains(&b.image.manifest_digest.to_string())
            && text.contains("(docker.io/library/a:1)"),
        "{text}"
    );
    assert_eq!(s.daemon.images.find("abcd2").await.unwrap().key(), b.key());
    assert_eq!(
        s.daemon.images.find("sha256:abcd1").await.unwrap().key(),
        a.key()
    );
    let opts = spore_oci::ImportOptions {
        tag: Some(spore_oci::Reference::parse("cafe").unwrap()),
        ..Default::default()
    };
    let layout = support::demo_image(s._dir.path(), "demo2");
    s.daemon
        .images
        .import(&layout, &opts, spore_oci::NoProgress)
        .await
        .unwrap();
    let (id, _) = s
        .daemon
        .create_zone(v1::ZoneSpec {
            image: "cafe".into(),
            ..spec(&["exit", "0"])
        })
        .await
        .unwrap();
    assert_eq!(
        s.daemon.zones.get(id).unwrap().image,
        Some(ZoneImage::Reference("docker.io/library/cafe:latest".into()))
    );
    wait_state(&s, id, ZoneState::Exited).await;
}

/// Collects an exec session's events until it exits (bounded).
async fn exec_events(
    session: &mut spored::idm::exec::ExecSession,
) -> Result<Vec<spored::idm::exec::ExecEvent>, spored::idm::LinkError> {
    let mut events = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(event) = session.next().await? {
            events.push(event);
        }
        Ok(events)
    })
    .await
    .expect("the exec ends in time")
}

fn exec_start(argv: &[&str]) -> spore_idm::proto::ExecStart {
    spore_idm::proto::ExecStart {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_and_metrics_reach_a_running_zones_guest_within_the_per_zone_limit() {
    use spored::idm::LinkError;
    use spored::idm::exec::ExecEvent;
    let s = setup_with(|c| c.zones.max_execs_per_zone = 2).await;
    let (id, name) = s.daemon.create_zone(spec(&["sleep"])).await.unwrap();
    wait_state(&s, id, ZoneState::Running).await;

    let mut session = s
        .daemon
        .exec(id, exec_start(&["echo", "hi", "there"]))
        .await
        .unwrap();
    assert_eq!(
        exec_events(&mut session).await.unwrap(),
        vec![
            ExecEvent::Started { pid: 100 },
            ExecEvent::Stdout("hi there\n".into()),
            ExecEvent::Exited(spore_idm::ExitStatus::Code(0)),
        ]
    );
    let mut missing = s.daemon.exec(id, exec_start(&["nope"])).await.unwrap();
    let events = exec_events(&mut missing).await.unwrap();
    assert!(
        matches!(&events[0], ExecEvent::Error(m) if m.contains("not found")),
        "{events:?}"
    );
    assert_eq!(
        events[1],
        ExecEvent::Exited(spore_idm::ExitStatus::Code(127))
    );

    let metrics = s.daemon.metrics(id, true).await.unwrap();
    assert_eq!(metrics.process_count, 2);
    assert_eq!(metrics.processes[1].command, "sleep");
    assert!(
        s.daemon
            .metrics(id, false)
            .await
            .unwrap()
            .processes
            .is_empty()
    );

    // Two sessions at once is the limit here; a dropped one (its client went away) is
    // cancelled in the guest and frees its place.
    let mut first = s.daemon.exec(id, exec_start(&["wait"])).await.unwrap();
    let second = s.daemon.exec(id, exec_start(&["wait"])).await.unwrap();
    assert_eq!(
        first.next().await.unwrap(),
        Some(ExecEvent::Started { pid: 100 })
    );
    let err = s
        .daemon
        .exec(id, exec_start(&["wait"]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &err,
            DaemonError::Guest {
                source: LinkError::TooManyExecs(2),
                ..
            }
        ),
        "{err}"
    );
    drop(second);
    support::until("the guest to see the cancel", WAIT, || {
        String::from_utf8_lossy(&s.daemon.console(id).unwrap().read_log()).contains("cancelled")
    })
    .await;
    let mut third = s.daemon.exec(id, exec_start(&["echo", "3"])).await.unwrap();
    assert!(
        exec_events(&mut third)
            .await
            .unwrap()
            .contains(&ExecEvent::Stdout("3\n".into()))
    );
    // A signal reaches the process; it ends by it.
    first.input().signal(2).await.unwrap();
    assert_eq!(
        exec_events(&mut first).await.unwrap(),
        vec![ExecEvent::Exited(spore_idm::ExitStatus::Signal {
            signal: 2,
            core_dumped: false
        })]
    );

    // A guest that ignores its window: the session ends with the reason, the zone goes on.
    let mut flood = s
        .daemon
        .exec(id, exec_start(&["flood", "1048576"]))
        .await
        .unwrap();
    let err = exec_events(&mut flood).await.unwrap_err();
    assert!(
        matches!(&err, LinkError::Violation(m) if m.contains("window")),
        "{err}"
    );
    assert!(flood.buffered() <= spored::idm::exec::OUTPUT_WINDOW as usize);
    assert!(s.daemon.metrics(id, false).await.is_ok());

    // Not running: refused naming the state.
    let (ended, _) = s.daemon.create_zone(spec(&["exit", "0"])).await.unwrap();
    wait_state(&s, ended, ZoneState::Exited).await;
    let err = s
        .daemon
        .exec(ended, exec_start(&["echo"]))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .ends_with("is exited: exec needs a running zone"),
        "{err}"
    );
    let err = s.daemon.metrics(ended, false).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("is exited: metrics need a running zone"),
        "{err}"
    );
    s.daemon.destroy_zone(id).await.unwrap();
    let _ = name;
}

#[tokio::test]
async fn resource_changes_are_events() {
    let s = setup().await;
    let mut big = spec(&["sleep"]);
    big.vcpus = Some(2);
    big.memory_mib = Some(256);
    let (id, name) = s.daemon.create_zone(big).await.unwrap();
    wait_state(&s, id, ZoneState::Running).await;
    let mut events = s.daemon.zones.bus().subscribe();
    s.daemon
        .update_resources(id, Some(1), Some(192))
        .await
        .unwrap();
    let event = events.next().await.unwrap().unwrap();
    let Some(v1::event::Kind::ZoneResourcesChanged(change)) = &event.kind else {
        panic!("{event:?}")
    };
    assert_eq!(
        (change.zone_id.as_str(), change.zone_name.as_str()),
        (id.to_string().as_str(), name.as_str())
    );
    assert_eq!((change.vcpus, change.memory_mib), (1, 192));
    assert_eq!(
        (change.previous_vcpus, change.previous_memory_mib),
        (2, 256)
    );
    // Durable with its sequence: a watcher filtering on the zone replays it.
    let stored = s
        .daemon
        .zones
        .store()
        .events_from(event.sequence, 10)
        .unwrap();
    assert_eq!(stored[0], *event);
    assert_eq!(
        spored::events::zone_of(&event),
        Some(id.to_string().as_str())
    );
}

/// The API's ListZones over the core: pages in creation order whose tokens survive creates
/// and destroys between calls (nothing skipped, nothing repeated), and replies under the
/// message limit however much there is to list.
#[tokio::test]
async fn list_zones_pages_are_stable_and_every_reply_fits_the_limit() {
    use spore_api::v1::control_server::Control;
    let s = setup().await;
    let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let api = spored::api::ControlService::new(s.daemon.clone(), shutdown_rx);
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut zone = spec(&["sleep"]);
        zone.name = format!("z{i:02}");
        ids.push(s.daemon.create_zone(zone).await.unwrap().0);
    }
    let page = |token: String, size: u32| {
        let api = &api;
        async move {
            api.list_zones(tonic::Request::new(v1::ListZonesRequest {
                page_size: size,
                page_token: token,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let first = page(String::new(), 5).await;
    let names = |r: &v1::ListZonesResponse| -> Vec<String> {
        r.zones.iter().map(|z| z.name.clone()).collect()
    };
    assert_eq!(names(&first), ["z00", "z01", "z02", "z03", "z04"]);
    assert!(!first.next_page_token.is_empty());
    // Between pages: the last zone listed and one not yet listed go, one is created.
    s.daemon.destroy_zone(ids[4]).await.unwrap();
    s.daemon.destroy_zone(ids[6]).await.unwrap();
    let mut late = spec(&["sleep"]);
    late.name = "late".into();
    s.daemon.create_zone(late).await.unwrap();
    let second = page(first.next_page_token.clone(), 5).await;
    assert_eq!(names(&second), ["z05", "z07", "z08", "z09", "z10"]);
    let third = page(second.next_page_token.clone(), 5).await;
    assert_eq!(names(&third), ["z11", "late"]);
    assert!(third.next_page_token.is_empty());
    // A token from elsewhere is refused.
    let err = api
        .list_zones(tonic::Request::new(v1::ListZonesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Zones whose records together pass the 4 MiB limit (large environments): an unpaged
    // call returns what fits and a token, never RESOURCE_EXHAUSTED; paging returns them all.
    let records: Vec<_> = (0..40)
        .map(|i| {
            let mut record = ZoneRecord::new(v1::Zone {
                id: Uuid::new_v4().to_string(),
                name: format!("big-{i:02}"),
                spec: Some(v1::ZoneSpec {
                    image: "demo".into(),
                    env: vec![format!("BLOB={}", "x".repeat(200 * 1024))],
                    ..Default::default()
                }),
                status: Some(Default::default()),
            });
            record.max_vcpus = 1;
            record
        })
        .collect();
    for record in records {
        s.daemon.zones.insert(record, "bulk", None).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let reply = page(token, 0).await;
        assert!(prost::Message::encoded_len(&reply) <= spore_api::MAX_MESSAGE_BYTES);
        seen.extend(names(&reply));
        pages += 1;
        if reply.next_page_token.is_empty() {
            break;
        }
        token = reply.next_page_token;
    }
    // 8 MiB of zones: at least two replies.
    assert!(pages >= 2, "{pages} pages");
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a zone was listed twice");
    assert_eq!(seen.len(), 10 + 1 + 40, "{seen:?}");
}
