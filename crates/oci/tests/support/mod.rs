//! Test support (tests only): a throwaway registry, an OCI image writer that can produce any
//! layer (whiteouts, hard links, device nodes, path escapes), and tree comparison helpers.
#![allow(dead_code)]

pub mod fstree;
pub mod ociwriter;
pub mod registry;

use std::path::Path;
use std::process::Command;

/// Runs a command, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo copy oci:LAYOUT:TAG docker://REGISTRY/REPO:TAG` (plain HTTP), with extra args.
pub fn skopeo_push(layout: &Path, tag: &str, registry: &str, repo: &str, extra: &[&str]) {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{registry}/{repo}:{tag}");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(&src)
        .arg(&dst);
    run(&mut cmd);
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Tests that compare against `umoci unpack` or extract with owners need root (CI runs as
/// root). Elsewhere they say so and stop.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::support::is_root() {
            eprintln!("skipped: this test needs root (owners, device nodes)");
            return;
        }
    };
}

pub fn store(root: &Path, insecure: &str) -> spore_oci::ImageStore {
    let options = spore_oci::StoreOptions {
        insecure_registries: vec![insecure.to_owned()],
        docker_config: root.join("no-docker-config.json"),
        ..Default::default()
    };
    spore_oci::ImageStore::open(&root.join("store"), options).expect("open store")
}
