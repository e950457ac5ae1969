//! `sporectl zone logs [-f] [--tail N] ZONE`: the console log spored stored for a zone.

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the zone exits (or Ctrl+C).
    #[arg(short, long)]
    pub follow: bool,

    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<u32>,

    /// Zone name, id or unique id prefix.
    pub zone: String,
}

impl LogsArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let mut stream = ctx
            .call(client.read_zone_logs(v1::ReadZoneLogsRequest {
                zone: self.zone,
                tail_lines: self.tail,
                follow: self.follow,
            }))
            .await?;
        while let Some(chunk) = stream.message().await.map_err(|s| ctx.status_error(s))? {
            if !ctx.out.is_table() {
                // The API's chunks, one per line (json) or document (yaml), data in base64.
                ctx.out.print_item(&chunk, |_| String::new())?;
                continue;
            }
            let mut out = std::io::stdout().lock();
            match out.write_all(&chunk.data).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                other => other.context("cannot write to standard output")?,
            }
        }
        Ok(0)
    }
}
