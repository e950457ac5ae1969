//! `sporectl zone watch [--from SEQ] [ZONE]`: the daemon's events, one line each, resuming
//! where it left off when the stream is cut.

use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use futures::StreamExt;
use spore_api::v1;
use tonic::Code;

use crate::context::Ctx;
use crate::human;

/// Reconnect attempts after the stream breaks before giving up.
const RECONNECTS: u32 = 10;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Replay retained events from this sequence on (0: everything retained), then follow.
    /// Default: only new events.
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,

    /// Only events about this zone (name, id or unique id prefix).
    pub zone: Option<String>,
}

impl WatchArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let zone_id = match &self.zone {
            Some(zone) => ctx.resolve_zone(&mut client, zone).await?,
            None => String::new(),
        };
        let mut from = self.from;
        let mut attempts = 0;
        loop {
            let request = v1::WatchEventsRequest {
                from_sequence: from,
                zone_id: zone_id.clone(),
            };
            let mut stream = match client.watch_events(request).await {
                Ok(response) => response.into_inner(),
                Err(status) if attempts > 0 && retryable(&status) && attempts < RECONNECTS => {
                    attempts += 1;
                    tokio::time::sleep(backoff(attempts)).await;
                    continue;
                }
                Err(status) => return Err(ctx.status_error(status).into()),
            };
            let ended = loop {
                match stream.next().await {
                    Some(Ok(event)) => {
                        attempts = 0;
                        if let Some(expected) = from
                            && event.sequence > expected
                            && expected > 0
                            && ctx.out.is_table()
                        {
                            eprintln!(
                                "sporectl: events {expected}..{} are no longer retained",
                                event.sequence - 1
                            );
                        }
                        from = Some(event.sequence + 1);
                        ctx.out.print_item(&event, render)?;
                    }
                    Some(Err(status)) => break Some(status),
                    None => break None,
                }
            };
            // Cut off for being slow, or the daemon went away: resume after the last event.
            attempts += 1;
            if attempts > RECONNECTS {
                let why = ended.map_or_else(
                    || anyhow!("spored ended the event stream"),
                    |s| ctx.status_error(s).into(),
                );
                return Err(why.context("event stream lost"));
            }
            if let Some(status) = &ended
                && !retryable(status)
            {
                return Err(ctx.status_error(status.clone()).into());
            }
            tokio::time::sleep(backoff(attempts)).await;
            if let Ok(fresh) = spore_api::connect(&ctx.socket).await {
                client = fresh;
            }
        }
    }
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::ResourceExhausted | Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * u64::from(attempt.min(8)))
}

/// `SEQ TIME zone NAME (ID) FROM -> TO: REASON [exit]` or `SEQ TIME image added DIGEST REFS`.
pub fn render(event: &v1::Event) -> String {
    let time = human::timestamp(event.time.as_ref());
    let what = match &event.kind {
        Some(v1::event::Kind::ZoneStateChanged(change)) => {
            let t = change.transition.clone().unwrap_or_default();
            let mut text = format!(
                "zone {} ({}) {} -> {}",
                change.zone_name,
                human::short_id(&change.zone_id),
                human::zone_state(t.from),
                human::zone_state(t.to),
            );
            if !t.reason.is_empty() {
                text.push_str(": ");
                text.push_str(&t.reason);
            }
            let exit = human::exit_status(change.exit.as_ref());
            if !exit.is_empty() {
                text.push_str(&format!(" [{exit}]"));
            }
            text
        }
        Some(v1::event::Kind::ImageChanged(change)) => {
            let verb = match v1::image_changed::Change::try_from(change.change) {
                Ok(v1::image_changed::Change::Added) => "added",
                Ok(v1::image_changed::Change::Removed) => "removed",
                _ => "changed",
            };
            format!(
                "image {verb} {} {}",
                human::short_digest(&change.manifest_digest),
                change.references.join(" ")
            )
        }
        Some(v1::event::Kind::ZoneResourcesChanged(change)) => format!(
            "zone {} ({}) resources: {} vCPUs, {} (was {} vCPUs, {})",
            change.zone_name,
            human::short_id(&change.zone_id),
            change.vcpus,
            human::mib(change.memory_mib),
            change.previous_vcpus,
            human::mib(change.previous_memory_mib),
        ),
        None => "(an event kind this sporectl does not know)".to_string(),
    };
    format!("{} {time} {}", event.sequence, what.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_event() {
        let event = v1::Event {
            sequence: 42,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kind: Some(v1::event::Kind::ZoneStateChanged(v1::ZoneStateChanged {
                zone_id: "0b4f7c1e-8a8e-4f5e-9d54-3f0c8e3c2a11".into(),
                zone_name: "job".into(),
                transition: Some(v1::StateTransition {
                    from: v1::ZoneState::Running as i32,
                    to: v1::ZoneState::Exited as i32,
                    time: None,
                    reason: "guest reported exit".into(),
                }),
                exit: Some(v1::ExitStatus {
                    status: Some(v1::exit_status::Status::Signal(9)),
                }),
            })),
        };
        assert_eq!(
            render(&event),
            "42 2023-11-14T22:13:20Z zone job (0b4f7c1e-8a8) running -> exited: \
             guest reported exit [killed by signal 9 (SIGKILL)]"
        );
        let image = v1::Event {
            sequence: 43,
            time: None,
            kind: Some(v1::event::Kind::ImageChanged(v1::ImageChanged {
                change: v1::image_changed::Change::Added as i32,
                manifest_digest: "sha256:0123456789abcdef".into(),
                references: vec!["docker.io/library/busybox:latest".into()],
            })),
        };
        assert_eq!(
            render(&image),
            "43  image added sha256:0123456789ab docker.io/library/busybox:latest"
        );
        let resized = v1::Event {
            sequence: 44,
            time: None,
            kind: Some(v1::event::Kind::ZoneResourcesChanged(
                v1::ZoneResourcesChanged {
                    zone_id: "0b4f7c1e-8a8e-4f5e-9d54-3f0c8e3c2a11".into(),
                    zone_name: "web".into(),
                    vcpus: 1,
                    memory_mib: 512,
                    previous_vcpus: 2,
                    previous_memory_mib: 1024,
                },
            )),
        };
        assert_eq!(
            render(&resized),
            "44  zone web (0b4f7c1e-8a8) resources: 1 vCPUs, 512 MiB (was 2 vCPUs, 1.0 GiB)"
        );
    }

    #[test]
    fn json_lines() {
        let event = v1::Event {
            sequence: 7,
            ..Default::default()
        };
        let json = crate::output::to_json(&event).unwrap();
        assert_eq!(json["sequence"], 7);
        assert!(!serde_json::to_string(&json).unwrap().contains('\n'));
    }
}
