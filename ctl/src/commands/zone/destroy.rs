//! `sporectl zone destroy ZONE...`: stop zones and remove them with everything they hold.

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Zone names, ids or unique id prefixes.
    #[arg(required = true)]
    pub zones: Vec<String>,
}

impl DestroyArgs {
    /// Destroys each zone in turn; one failure does not stop the others, but makes the exit
    /// code 1.
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        if let [zone] = self.zones.as_slice() {
            destroy(ctx, &mut client, zone).await?;
            return Ok(0);
        }
        let mut code = 0;
        for zone in &self.zones {
            if let Err(err) = destroy(ctx, &mut client, zone).await {
                crate::report_error(&err);
                code = crate::EXIT_FAILURE;
            }
        }
        Ok(code)
    }
}

pub async fn destroy(ctx: &Ctx, client: &mut spore_api::ControlClient, zone: &str) -> Result<()> {
    let reply = ctx
        .call(client.destroy_zone(v1::DestroyZoneRequest {
            zone: zone.to_string(),
        }))
        .await?;
    ctx.out.print_item(&reply, |_| zone.to_string())
}
