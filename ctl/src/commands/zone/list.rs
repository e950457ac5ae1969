//! `sporectl zone list`: every stored zone (a destroyed zone's record is gone, so exited and
//! failed zones show until they are destroyed: their exit code or failure is the point).

use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, ValueEnum};
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only zones in this state (repeatable).
    #[arg(short, long, value_enum, value_name = "STATE")]
    pub state: Vec<StateArg>,

    /// Only the zone with this exact name.
    #[arg(long)]
    pub name: Option<String>,

    /// Print only the full zone ids, one per line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Zone states as the command line spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Pending,
    Preparing,
    Creating,
    Starting,
    Running,
    Stopping,
    Exited,
    Destroying,
    Failed,
}

impl From<StateArg> for v1::ZoneState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Pending => v1::ZoneState::Pending,
            StateArg::Preparing => v1::ZoneState::Preparing,
            StateArg::Creating => v1::ZoneState::Creating,
            StateArg::Starting => v1::ZoneState::Starting,
            StateArg::Running => v1::ZoneState::Running,
            StateArg::Stopping => v1::ZoneState::Stopping,
            StateArg::Exited => v1::ZoneState::Exited,
            StateArg::Destroying => v1::ZoneState::Destroying,
            StateArg::Failed => v1::ZoneState::Failed,
        }
    }
}

/// Zones per ListZones call while paging.
const PAGE_SIZE: u32 = 500;

/// Every zone `request` matches, oldest first, over as many pages as spored needs.
pub async fn all(
    ctx: &Ctx,
    client: &mut spore_api::ControlClient,
    mut request: v1::ListZonesRequest,
) -> Result<Vec<v1::Zone>> {
    request.page_size = PAGE_SIZE;
    request.page_token.clear();
    let mut zones = Vec::new();
    loop {
        let reply = ctx.call(client.list_zones(request.clone())).await?;
        zones.extend(reply.zones);
        if reply.next_page_token.is_empty() {
            return Ok(zones);
        }
        request.page_token = reply.next_page_token;
    }
}

impl ListArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let states = self
            .state
            .iter()
            .map(|s| v1::ZoneState::from(*s) as i32)
            .collect();
        list(ctx, states, self.name.clone(), self.quiet).await
    }
}

/// Lists the zones in `states` (all when empty) as a table, ids or the API's reply.
pub async fn list(ctx: &Ctx, states: Vec<i32>, name: Option<String>, quiet: bool) -> Result<i32> {
    let mut client = ctx.client().await?;
    let request = v1::ListZonesRequest {
        states,
        name: name.unwrap_or_default(),
        // `-o json|yaml` prints the reply as it is: keep it whole there.
        include_history: !ctx.out.is_table(),
        ..Default::default()
    };
    let mut reply = v1::ListZonesResponse {
        zones: all(ctx, &mut client, request).await?,
        ..Default::default()
    };
    reply.zones.sort_by_key(created);
    if quiet {
        let ids: String = reply.zones.iter().map(|z| format!("{}\n", z.id)).collect();
        crate::output::write_stdout(&ids)?;
    } else {
        let now = SystemTime::now();
        ctx.out.print(&reply, |r| render(r, now))?;
    }
    Ok(0)
}

fn created(zone: &v1::Zone) -> (i64, i32) {
    zone.status
        .as_ref()
        .and_then(|s| s.created_at.as_ref())
        .map_or((0, 0), |t| (t.seconds, t.nanos))
}

pub fn render(reply: &v1::ListZonesResponse, now: SystemTime) -> String {
    let mut table = human::table(["ID", "NAME", "STATE", "AGE", "IMAGE", "STATUS"]);
    for zone in &reply.zones {
        let status = zone.status.clone().unwrap_or_default();
        let image = zone
            .spec
            .as_ref()
            .map(|s| s.image.clone())
            .unwrap_or_default();
        table.add_row(vec![
            human::short_id(&zone.id).to_string(),
            zone.name.clone(),
            human::zone_state(status.state),
            human::age(status.created_at.as_ref(), now),
            image,
            outcome(&status),
        ]);
    }
    human::render_table(&table)
}

/// The exit status, or the failure reason, on one line.
fn outcome(status: &v1::ZoneStatus) -> String {
    if status.state == v1::ZoneState::Failed as i32 {
        return status.reason.lines().next().unwrap_or("").to_string();
    }
    human::exit_status(status.exit.as_ref())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn zone(
        id: &str,
        name: &str,
        state: v1::ZoneState,
        reason: &str,
        exit: Option<i32>,
    ) -> v1::Zone {
        v1::Zone {
            id: id.into(),
            name: name.into(),
            spec: Some(v1::ZoneSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            status: Some(v1::ZoneStatus {
                state: state as i32,
                reason: reason.into(),
                exit: exit.map(|c| v1::ExitStatus {
                    status: Some(v1::exit_status::Status::Code(c)),
                }),
                created_at: Some(prost_types::Timestamp {
                    seconds: 1000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn columns() {
        let reply = v1::ListZonesResponse {
            zones: vec![
                zone(
                    "11111111-2222-3333",
                    "web",
                    v1::ZoneState::Running,
                    "started",
                    None,
                ),
                zone(
                    "aaaaaaaa-bbbb-cccc",
                    "job",
                    v1::ZoneState::Exited,
                    "",
                    Some(7),
                ),
                zone(
                    "ffffffff-0000-1111",
                    "bad",
                    v1::ZoneState::Failed,
                    "image \"nope\" not found\nmore",
                    None,
                ),
            ],
            ..Default::default()
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1300);
        let text = render(&reply, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "NAME", "STATE", "AGE", "IMAGE", "STATUS"]
        );
        assert!(
            lines[1].starts_with("11111111-222   web    running   5m    busybox"),
            "{text}"
        );
        assert!(lines[2].ends_with("exited 7"), "{text}");
        assert!(lines[3].ends_with("image \"nope\" not found"), "{text}");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn empty_list_is_a_header() {
        let text = render(&v1::ListZonesResponse::default(), SystemTime::now());
        assert_eq!(text.lines().count(), 1);
    }
}
