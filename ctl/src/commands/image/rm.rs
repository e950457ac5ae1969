//! `sporectl image rm IMAGE...`: remove images from the cache (refused while a zone uses one).

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// References or image ids (manifest digests, with or without "sha256:", or unique
    /// prefixes of at least 4 hex digits).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

impl RmArgs {
    /// Removes each image in turn; one failure does not stop the others, but makes the exit
    /// code 1.
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        if let [image] = self.images.as_slice() {
            remove(ctx, &mut client, image).await?;
            return Ok(0);
        }
        let mut code = 0;
        for image in &self.images {
            if let Err(err) = remove(ctx, &mut client, image).await {
                crate::report_error(&err);
                code = crate::EXIT_FAILURE;
            }
        }
        Ok(code)
    }
}

async fn remove(ctx: &Ctx, client: &mut spore_api::ControlClient, image: &str) -> Result<()> {
    let reply = ctx
        .call(client.remove_image(v1::RemoveImageRequest {
            image: image.to_string(),
        }))
        .await?;
    ctx.out.print_item(&reply, |r| {
        format!(
            "removed {} ({}, {} reclaimed)",
            image,
            human::short_digest(&r.manifest_digest),
            human::bytes(r.reclaimed_bytes)
        )
    })
}
