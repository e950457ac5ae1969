//! `sporectl zone resources ZONE [--cpus N] [--memory SIZE]`: change a running zone's vCPUs or
//! memory within the limits it was created with.

use anyhow::{Result, bail};
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::{human, parse};

#[derive(Debug, Args)]
pub struct ResourcesArgs {
    /// New number of virtual CPUs.
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,

    /// New memory: MiB, or with suffix M or G.
    #[arg(long, value_name = "SIZE", value_parser = parse::memory_mib)]
    pub memory: Option<u64>,

    /// Zone name, id or unique id prefix.
    pub zone: String,
}

impl ResourcesArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        if self.cpus.is_none() && self.memory.is_none() {
            bail!("nothing to change: give --cpus N and/or --memory SIZE");
        }
        if self.cpus == Some(0) {
            bail!("invalid --cpus 0: a zone needs at least one virtual CPU");
        }
        let mut client = ctx.client().await?;
        let reply = ctx
            .call(
                client.update_zone_resources(v1::UpdateZoneResourcesRequest {
                    zone: self.zone,
                    vcpus: self.cpus,
                    memory_mib: self.memory,
                }),
            )
            .await?;
        ctx.out.print(&reply, render)?;
        Ok(0)
    }
}

fn render(reply: &v1::UpdateZoneResourcesResponse) -> String {
    let zone = reply.zone.clone().unwrap_or_default();
    let status = zone.status.unwrap_or_default();
    human::key_values(&[
        ("zone", zone.name),
        ("vcpus", status.vcpus.to_string()),
        ("memory", human::mib(status.memory_mib)),
    ])
}
