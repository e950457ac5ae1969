//! `sporectl image import PATH`: import a `docker save` tar, an oci-archive tar or an OCI
//! layout directory. The daemon opens the path, so it is made absolute here.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use spore_api::v1;

use super::progress;
use super::pull::FormatArg;
use crate::context::Ctx;
use crate::parse;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Reference to record for the imported image, besides its names in the archive (as
    /// docker load, then docker tag).
    #[arg(long, value_name = "REF")]
    pub tag: Option<String>,

    /// Which image to import from an archive holding several: its name there (an OCI
    /// layout's ref.name, a docker save RepoTag).
    #[arg(long, value_name = "NAME")]
    pub select: Option<String>,

    /// Platform to pick when the archive holds several: os/arch[/variant].
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Root image format (default: spored's, squashfs).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// No progress output; print only the result.
    #[arg(short, long)]
    pub quiet: bool,

    /// The archive or directory, on the daemon's host.
    pub path: PathBuf,
}

impl ImportArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let path = parse::absolute(&self.path)?;
        // The daemon reads the path; when it runs on this host (the usual case), say early
        // and clearly that it is missing.
        if !path.exists() {
            bail!(
                "cannot import {}: no such file or directory",
                path.display()
            );
        }
        let mut client = ctx.client().await?;
        let stream = ctx
            .call(client.import_image(v1::ImportImageRequest {
                path: path.display().to_string(),
                reference: self.tag.unwrap_or_default(),
                select: self.select.unwrap_or_default(),
                format: FormatArg::proto(self.format),
                platform: self.platform.unwrap_or_default(),
            }))
            .await?;
        let image = progress::follow(ctx, stream, self.quiet, "import").await?;
        ctx.out.print(&image, progress::render_image)?;
        Ok(0)
    }
}
