//! `sporectl zone attach ZONE`: the console of a running zone; Ctrl+] detaches.

use anyhow::{Result, bail};
use clap::Args;
use spore_api::v1;

use crate::console::{self, Target};
use crate::context::Ctx;
use crate::{human, term};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Print the stored console log before live output.
    #[arg(long)]
    pub replay: bool,

    /// Zone name, id or unique id prefix.
    pub zone: String,
}

impl AttachArgs {
    /// Exits with the workload's exit code when it ends while attached, 0 on detach.
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        ctx.out.require_raw("zone attach")?;
        let mut client = ctx.client().await?;
        // The sequence is taken before the state is read, so no later change is missed.
        let from_sequence = ctx
            .call(client.get_host_status(v1::GetHostStatusRequest {}))
            .await?
            .last_event_sequence
            + 1;
        let zone = ctx
            .call(client.get_zone(v1::GetZoneRequest { zone: self.zone }))
            .await?
            .zone
            .unwrap_or_default();
        let status = zone.status.clone().unwrap_or_default();
        let label = if zone.name.is_empty() {
            zone.id.clone()
        } else {
            zone.name.clone()
        };
        match v1::ZoneState::try_from(status.state) {
            Ok(v1::ZoneState::Exited) => bail!(
                "zone {label} is not running ({}); read its output with: sporectl zone logs {label}",
                human::exit_status(status.exit.as_ref())
            ),
            Ok(v1::ZoneState::Failed) => bail!("zone {label} failed: {}", status.reason),
            Ok(v1::ZoneState::Destroying | v1::ZoneState::Destroyed) => {
                bail!("zone {label} is being destroyed")
            }
            _ => {}
        }
        let tty = zone.spec.as_ref().is_some_and(|s| s.tty);
        let target = Target {
            id: zone.id.clone(),
            name: label.clone(),
            from_sequence,
            replay: self.replay,
            raw: tty && term::stdin_is_tty(),
            stdin: true,
        };
        let outcome = console::run(ctx, &mut client, &target).await?;
        Ok(console::finish(outcome, &label))
    }
}
