//! Picks the backend zones run on: `auto` takes Xen when it is usable, else QEMU; an
//! explicit choice is used only if usable. With none usable the daemon still serves the API
//! and says why.

use std::sync::Arc;

use spore_api::v1;
use spore_runtime::qemu::{AccelChoice, QemuBackend, QemuConfig};
use spore_runtime::xen::{XenBackend, XenConfig};
use spore_runtime::{Backend, BackendKind, HostProbe};

use crate::config::{BackendChoice, Config};
use crate::shared::Selection;

/// Probes the host and builds the chosen backend.
pub async fn select(config: &Config) -> (Option<Arc<dyn Backend>>, Selection) {
    let host = HostProbe {
        qemu_binary: config.qemu.binary.clone(),
        ..HostProbe::default()
    };
    let mut probes = tokio::task::spawn_blocking(move || host.probe_all())
        .await
        .unwrap_or_default();
    let wanted: Vec<BackendKind> = match config.backend {
        BackendChoice::Auto => vec![BackendKind::Xen, BackendKind::Qemu],
        BackendChoice::Xen => vec![BackendKind::Xen],
        BackendChoice::Qemu => vec![BackendKind::Qemu],
    };
    for kind in &wanted {
        let Some(probe) = probes.iter_mut().find(|p| p.kind == *kind) else {
            continue;
        };
        if !probe.usable {
            continue;
        }
        match build(*kind, config).await {
            Ok((backend, how)) => {
                let reason = match config.backend {
                    BackendChoice::Auto => format!("auto: {}; {how}", probe.detail),
                    _ => format!("configured: {}; {how}", probe.detail),
                };
                return (
                    Some(backend),
                    Selection {
                        kind: api_kind(*kind),
                        reason,
                        probes,
                    },
                );
            }
            Err(why) => {
                probe.usable = false;
                probe.detail = format!("{}; but {why}", probe.detail);
            }
        }
    }
    let tried = probes
        .iter()
        .filter(|p| wanted.contains(&p.kind))
        .map(|p| format!("{}: {}", p.kind, p.detail))
        .collect::<Vec<_>>()
        .join("; ");
    let reason = match config.backend {
        BackendChoice::Auto => format!("no backend is usable ({tried})"),
        choice => format!(
            "backend {} was configured but is not usable ({tried})",
            format!("{choice:?}").to_lowercase()
        ),
    };
    (
        None,
        Selection {
            kind: v1::BackendKind::None,
            reason,
            probes,
        },
    )
}

/// Builds a backend the probe found usable; also says how it runs zones.
async fn build(kind: BackendKind, config: &Config) -> Result<(Arc<dyn Backend>, String), String> {
    match kind {
        BackendKind::Xen => {
            let xen = XenConfig {
                guest_kernel: Some(config.guest_kernel()),
                guest_initrd: Some(config.guest_initrd()),
                ..XenConfig::new(config.state_dir.join("zones"))
            };
            // Blocking: opens the Xen devices and reads the hypervisor version.
            let backend = tokio::task::spawn_blocking(move || XenBackend::new(xen))
                .await
                .map_err(|e| format!("the Xen backend's start panicked: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok((Arc::new(backend), "PV domains built by spore".into()))
        }
        BackendKind::Qemu => {
            let accel = match config.qemu.accel.as_str() {
                "kvm" => AccelChoice::Kvm,
                "tcg" => AccelChoice::Tcg,
                _ => AccelChoice::Auto,
            };
            let qemu = QemuConfig {
                binary: config.qemu.binary.clone(),
                guest_kernel: Some(config.guest_kernel()),
                accel,
                tcg_tb_size_mib: Some(config.qemu.tcg_tb_size_mib).filter(|&m| m > 0),
                ..QemuConfig::new(config.state_dir.join("zones"))
            };
            // Blocking: the KVM probe boots the guest kernel (once; its verdict is cached).
            let backend = tokio::task::spawn_blocking(move || QemuBackend::new(qemu))
                .await
                .map_err(|e| format!("the QEMU backend's start panicked: {e}"))?
                .map_err(|e| e.to_string())?;
            let accel = backend.accel();
            let how = format!("accelerator {}: {}", accel.accel.as_str(), accel.reason);
            Ok((Arc::new(backend), how))
        }
    }
}

/// The API's name for a runtime backend kind.
pub fn api_kind(kind: BackendKind) -> v1::BackendKind {
    match kind {
        BackendKind::Xen => v1::BackendKind::Xen,
        BackendKind::Qemu => v1::BackendKind::Qemu,
    }
}
