//! `sporectl zone get ZONE`: one zone in full, with its state history.

use std::time::SystemTime;

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Zone name, id or unique id prefix.
    pub zone: String,
}

impl GetArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let reply = ctx
            .call(client.get_zone(v1::GetZoneRequest { zone: self.zone }))
            .await?;
        let zone = reply.zone.unwrap_or_default();
        let now = SystemTime::now();
        ctx.out.print(&zone, |z| render(z, now))?;
        Ok(0)
    }
}

fn list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| {
            if v.is_empty() || v.contains(char::is_whitespace) {
                format!("{v:?}")
            } else {
                v.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn or(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value.to_string()
    }
}

fn when(ts: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let at = human::timestamp(ts);
    if at.is_empty() {
        return "-".into();
    }
    format!("{at} ({} ago)", human::age(ts, now))
}

pub fn render(zone: &v1::Zone, now: SystemTime) -> String {
    let spec = zone.spec.clone().unwrap_or_default();
    let status = zone.status.clone().unwrap_or_default();
    let mut state = human::zone_state(status.state);
    if !status.reason.is_empty() {
        state = format!("{state} ({})", status.reason);
    }
    let network = match &status.network {
        Some(n) if n.attached => [n.ipv4.as_str(), n.ipv6.as_str(), n.mac.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        Some(n) => format!("none ({})", or(&n.detail, "no interface")),
        None if spec.network_disabled => "none (disabled in spec)".into(),
        None => "-".into(),
    };
    let ports = spec
        .ports
        .iter()
        .map(|p| {
            let proto = if p.protocol == v1::Protocol::Udp as i32 {
                "udp"
            } else {
                "tcp"
            };
            let addr = if p.host_address.is_empty() {
                String::new()
            } else if p.host_address.contains(':') {
                format!("[{}]:", p.host_address)
            } else {
                format!("{}:", p.host_address)
            };
            format!("{addr}{}->{}/{proto}", p.host_port, p.zone_port)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut rows = vec![
        ("id", zone.id.clone()),
        ("name", zone.name.clone()),
        ("state", state),
    ];
    let exit = human::exit_status(status.exit.as_ref());
    if !exit.is_empty() {
        rows.push(("exit", exit));
    }
    rows.extend([
        ("image", spec.image.clone()),
        ("image digest", or(&status.image_digest, "-")),
        (
            "entrypoint",
            spec.entrypoint
                .as_ref()
                .map_or("(image's)".into(), |l| list(&l.values)),
        ),
        (
            "command",
            spec.cmd
                .as_ref()
                .map_or("(image's)".into(), |l| list(&l.values)),
        ),
        ("env", or(&spec.env.join("\n"), "-")),
        ("workdir", or(&spec.working_dir, "(image's)")),
        ("user", or(&spec.user, "(image's)")),
        ("tty", if spec.tty { "yes" } else { "no" }.into()),
        ("backend", human::backend(status.backend)),
        ("domain", or(&status.domain, "-")),
        ("vcpus", status.vcpus.to_string()),
        ("memory", human::mib(status.memory_mib)),
        ("network", network),
        ("ports", or(&ports, "-")),
        (
            "auto-remove",
            if spec.auto_remove { "yes" } else { "no" }.into(),
        ),
    ]);
    if !spec.kernel_path.is_empty() || !spec.initrd_path.is_empty() {
        rows.push(("kernel", or(&spec.kernel_path, "(bundle's)")));
        rows.push(("initrd", or(&spec.initrd_path, "(bundle's)")));
    }
    if !spec.kernel_args.is_empty() {
        rows.push(("kernel args", list(&spec.kernel_args)));
    }
    rows.extend([
        ("created", when(status.created_at.as_ref(), now)),
        ("started", when(status.started_at.as_ref(), now)),
        ("exited", when(status.exited_at.as_ref(), now)),
    ]);
    let mut text = human::key_values(&rows);
    if !status.history.is_empty() {
        text.push('\n');
        let mut table = human::table(["TIME", "FROM", "TO", "REASON"]);
        for t in &status.history {
            table.add_row(vec![
                human::timestamp(t.time.as_ref()),
                human::zone_state(t.from),
                human::zone_state(t.to),
                t.reason.clone(),
            ]);
        }
        text.push_str(&human::render_table(&table));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn detail_with_history() {
        let ts = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        let zone = v1::Zone {
            id: "0b4f7c1e-8a8e-4f5e-9d54-3f0c8e3c2a11".into(),
            name: "job".into(),
            spec: Some(v1::ZoneSpec {
                image: "busybox".into(),
                cmd: Some(v1::StringList {
                    values: vec!["sh".into(), "-c".into(), "exit 7".into()],
                }),
                env: vec!["A=1".into(), "B=2".into()],
                ports: vec![v1::PortMapping {
                    host_port: 8080,
                    zone_port: 80,
                    protocol: v1::Protocol::Tcp as i32,
                    host_address: "::1".into(),
                }],
                ..Default::default()
            }),
            status: Some(v1::ZoneStatus {
                state: v1::ZoneState::Exited as i32,
                reason: "guest reported exit".into(),
                exit: Some(v1::ExitStatus {
                    status: Some(v1::exit_status::Status::Code(7)),
                }),
                memory_mib: 128,
                created_at: Some(ts(1000)),
                history: vec![v1::StateTransition {
                    from: v1::ZoneState::Running as i32,
                    to: v1::ZoneState::Exited as i32,
                    time: Some(ts(1010)),
                    reason: "guest reported exit".into(),
                }],
                ..Default::default()
            }),
        };
        let text = render(&zone, SystemTime::UNIX_EPOCH + Duration::from_secs(1060));
        assert!(
            text.contains("state:        exited (guest reported exit)\n"),
            "{text}"
        );
        assert!(text.contains("exit:         exited 7\n"), "{text}");
        assert!(text.contains("command:      sh -c \"exit 7\"\n"), "{text}");
        assert!(text.contains("entrypoint:   (image's)\n"), "{text}");
        assert!(
            text.contains("env:          A=1\n              B=2\n"),
            "{text}"
        );
        assert!(
            text.contains("ports:        [::1]:8080->80/tcp\n"),
            "{text}"
        );
        assert!(text.contains("memory:       128 MiB\n"), "{text}");
        assert!(
            text.contains("created:      1970-01-01T00:16:40Z (60s ago)\n"),
            "{text}"
        );
        assert!(text.contains("started:      -\n"), "{text}");
        assert!(
            text.contains("1970-01-01T00:16:50Z   running   exited   guest reported exit\n"),
            "{text}"
        );
    }
}
