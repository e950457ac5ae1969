//! Outside a Xen dom0 the Xen backend refuses to start and says what is missing. (Inside one,
//! the lab test `xenlab/tests/backend.sh` exercises the backend for real.)

use spore_runtime::xen::{XenBackend, XenConfig};
use spore_runtime::{BackendKind, RuntimeError as Error};

#[test]
fn outside_dom0_the_backend_says_what_is_missing() {
    if std::path::Path::new("/dev/xen/privcmd").exists() {
        eprintln!("this host has /dev/xen/privcmd: the lab test covers it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let e = XenBackend::new(XenConfig::new(dir.path().join("zones"))).unwrap_err();
    match &e {
        Error::Unavailable { kind, detail } => {
            assert_eq!(*kind, BackendKind::Xen);
            assert!(detail.contains("/dev/xen/privcmd"), "{detail}");
            assert!(detail.contains("dom0"), "{detail}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        !dir.path().join("zones").exists(),
        "nothing is created when the backend is unusable"
    );
}
