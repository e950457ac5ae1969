//! `sporectl ps [-a] [-q]`: the zones that have not ended (docker's running containers);
//! `-a` every stored zone, as `zone list` shows them.

use anyhow::Result;
use clap::Args;
use spore_api::v1::ZoneState;

use crate::commands::zone::list;
use crate::context::Ctx;

/// The states `ps` shows without `-a`: the zone is on its way up, running, or stopping.
const LIVE: [ZoneState; 6] = [
    ZoneState::Pending,
    ZoneState::Preparing,
    ZoneState::Creating,
    ZoneState::Starting,
    ZoneState::Running,
    ZoneState::Stopping,
];

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every zone, exited and failed ones too.
    #[arg(short, long)]
    pub all: bool,

    /// Print only the full zone ids, one per line.
    #[arg(short, long)]
    pub quiet: bool,
}

impl PsArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let states = if self.all {
            Vec::new()
        } else {
            LIVE.iter().map(|s| *s as i32).collect()
        };
        list::list(ctx, states, None, self.quiet).await
    }
}
