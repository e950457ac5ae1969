//! `sporectl host status`: what spored runs on and what it can do.

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct StatusArgs {}

impl StatusArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let status = ctx
            .call(client.get_host_status(v1::GetHostStatusRequest {}))
            .await?;
        ctx.out.print(&status, render)?;
        Ok(0)
    }
}

/// Key/value summary followed by the probes.
pub fn render(status: &v1::GetHostStatusResponse) -> String {
    let zones = if status.zone_counts.is_empty() {
        "none".to_string()
    } else {
        status
            .zone_counts
            .iter()
            .map(|c| format!("{} {}", c.count, human::zone_state(c.state)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bundle = match &status.guest_bundle {
        Some(b) => {
            let mut text = format!(
                "{}\nkernel {}\ninitrd {}",
                if b.present { "present" } else { "missing" },
                b.kernel_path,
                b.initrd_path
            );
            if !b.detail.is_empty() {
                text.push('\n');
                text.push_str(&b.detail);
            }
            text
        }
        None => "unknown".to_string(),
    };
    let backend = if status.backend_reason.is_empty() {
        human::backend(status.backend)
    } else {
        format!(
            "{} ({})",
            human::backend(status.backend),
            status.backend_reason
        )
    };
    let mut text = human::key_values(&[
        ("host", status.hostname.clone()),
        ("spored", status.version.clone()),
        ("backend", backend),
        ("cpus", status.cpus.to_string()),
        (
            "memory",
            format!(
                "{} available of {}",
                human::bytes(status.memory_available_bytes),
                human::bytes(status.memory_total_bytes)
            ),
        ),
        ("zones", zones),
        ("guest bundle", bundle),
        ("state dir", status.state_dir.clone()),
        ("last event", status.last_event_sequence.to_string()),
    ]);
    if !status.probes.is_empty() {
        text.push('\n');
        let mut table = human::table(["PROBE", "USABLE", "DETAIL"]);
        for probe in &status.probes {
            table.add_row(vec![
                human::backend(probe.kind),
                if probe.usable { "yes" } else { "no" }.to_string(),
                probe.detail.clone(),
            ]);
        }
        text.push_str(&human::render_table(&table));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_backend_probes_and_counts() {
        let status = v1::GetHostStatusResponse {
            version: "0.1.0".into(),
            backend: v1::BackendKind::None as i32,
            backend_reason: "no usable backend: install qemu-system-x86".into(),
            probes: vec![
                v1::BackendProbe {
                    kind: v1::BackendKind::Xen as i32,
                    usable: false,
                    detail: "/dev/xen/privcmd missing".into(),
                },
                v1::BackendProbe {
                    kind: v1::BackendKind::Qemu as i32,
                    usable: false,
                    detail: "qemu-system-x86_64 not found".into(),
                },
            ],
            cpus: 2,
            memory_total_bytes: 4 << 30,
            memory_available_bytes: 3 << 30,
            zone_counts: vec![v1::ZoneStateCount {
                state: v1::ZoneState::Running as i32,
                count: 3,
            }],
            hostname: "box".into(),
            guest_bundle: Some(v1::GuestBundle {
                kernel_path: "/k".into(),
                initrd_path: "/i".into(),
                present: false,
                detail: "run kernel/build.sh".into(),
            }),
            ..Default::default()
        };
        let text = render(&status);
        assert!(
            text.contains("backend:      none (no usable backend: install qemu-system-x86)\n"),
            "{text}"
        );
        assert!(
            text.contains("memory:       3.0 GiB available of 4.0 GiB\n"),
            "{text}"
        );
        assert!(text.contains("zones:        3 running\n"), "{text}");
        assert!(text.contains("guest bundle: missing\n"), "{text}");
        assert!(text.contains("run kernel/build.sh"), "{text}");
        assert!(
            text.contains("xen     no       /dev/xen/privcmd missing\n"),
            "{text}"
        );
    }
}
