//! `sporectl rm [-f] ZONE...`: remove ended zones, as `docker rm` does; `-f` also stops and
//! removes zones that still run (`zone destroy` does that always).

use anyhow::{Result, bail};
use clap::Args;
use spore_api::v1::{self, ZoneState};

use crate::commands::zone::destroy::destroy;
use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop zones that still run, then remove them.
    #[arg(short, long)]
    pub force: bool,

    /// Zone names, ids or unique id prefixes.
    #[arg(required = true)]
    pub zones: Vec<String>,
}

impl RmArgs {
    /// Removes each zone in turn; one failure does not stop the others, but makes the exit
    /// code 1.
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let mut code = 0;
        for zone in &self.zones {
            let result = async {
                if !self.force {
                    let found = ctx
                        .call(client.get_zone(v1::GetZoneRequest { zone: zone.clone() }))
                        .await?
                        .zone
                        .unwrap_or_default();
                    let state = found.status.as_ref().map_or(0, |s| s.state);
                    if !matches!(
                        ZoneState::try_from(state),
                        Ok(ZoneState::Exited | ZoneState::Failed)
                    ) {
                        bail!(
                            "zone {zone} is {}: use rm -f to stop and remove it",
                            human::zone_state(state)
                        );
                    }
                }
                destroy(ctx, &mut client, zone).await
            }
            .await;
            if let Err(err) = result {
                if self.zones.len() == 1 {
                    return Err(err);
                }
                crate::report_error(&err);
                code = crate::EXIT_FAILURE;
            }
        }
        Ok(code)
    }
}
