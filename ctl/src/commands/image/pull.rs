//! `sporectl image pull REF`: pull an image from a registry and pack it into a root image.

use anyhow::Result;
use clap::{Args, ValueEnum};
use spore_api::v1;

use super::progress;
use crate::context::Ctx;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Allow plain HTTP to this image's registry (as if listed as insecure in spored.toml).
    #[arg(long)]
    pub insecure: bool,

    /// Platform to pick from a multi-platform image: os/arch[/variant] (default: linux/amd64).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Root image format (default: spored's, squashfs).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Resolve the reference again even when a cached image matches it.
    #[arg(long)]
    pub refresh: bool,

    /// No progress output; print only the result.
    #[arg(short, long)]
    pub quiet: bool,

    /// Image reference: "busybox", "127.0.0.1:5000/app:1.0", "repo@sha256:...".
    #[arg(value_name = "REF")]
    pub reference: String,
}

/// Root image formats as the command line spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Squashfs,
    Erofs,
}

impl FormatArg {
    pub fn proto(format: Option<FormatArg>) -> i32 {
        (match format {
            None => v1::ImageFormat::Unspecified,
            Some(FormatArg::Squashfs) => v1::ImageFormat::Squashfs,
            Some(FormatArg::Erofs) => v1::ImageFormat::Erofs,
        }) as i32
    }
}

impl PullArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let stream = ctx
            .call(client.pull_image(v1::PullImageRequest {
                reference: self.reference.clone(),
                insecure: self.insecure,
                platform: self.platform.unwrap_or_default(),
                format: FormatArg::proto(self.format),
                refresh: self.refresh,
            }))
            .await?;
        let image = progress::follow(ctx, stream, self.quiet, "pull").await?;
        ctx.out.print(&image, progress::render_image)?;
        Ok(0)
    }
}
