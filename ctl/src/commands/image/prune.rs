//! `sporectl image prune`: remove every cached image no zone uses.

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct PruneArgs {}

impl PruneArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let reply = ctx
            .call(client.prune_images(v1::PruneImagesRequest {}))
            .await?;
        ctx.out.print(&reply, render)?;
        Ok(0)
    }
}

fn render(reply: &v1::PruneImagesResponse) -> String {
    let mut text: String = reply
        .removed_digests
        .iter()
        .map(|d| format!("removed {d}\n"))
        .collect();
    text.push_str(&format!(
        "{} image(s) removed, {} reclaimed\n",
        reply.removed_digests.len(),
        human::bytes(reply.reclaimed_bytes)
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let text = render(&v1::PruneImagesResponse {
            removed_digests: vec!["sha256:aa".into()],
            reclaimed_bytes: 4096,
        });
        assert_eq!(
            text,
            "removed sha256:aa\n1 image(s) removed, 4.0 KiB reclaimed\n"
        );
    }
}
