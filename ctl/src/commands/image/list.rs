//! `sporectl image list`: the daemon's image cache, one row per reference.

use std::time::SystemTime;

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print only the manifest digests, one per line.
    #[arg(short, long)]
    pub quiet: bool,
}

impl ListArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let mut reply = v1::ListImagesResponse::default();
        let mut request = v1::ListImagesRequest {
            page_size: 500,
            ..Default::default()
        };
        loop {
            let page = ctx.call(client.list_images(request.clone())).await?;
            reply.images.extend(page.images);
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        if self.quiet {
            let digests: String = reply
                .images
                .iter()
                .map(|i| format!("{}\n", i.manifest_digest))
                .collect();
            crate::output::write_stdout(&digests)?;
        } else {
            let now = SystemTime::now();
            ctx.out.print(&reply, |r| render(r, now))?;
        }
        Ok(0)
    }
}

fn render(reply: &v1::ListImagesResponse, now: SystemTime) -> String {
    let mut table = human::table([
        "REFERENCE",
        "DIGEST",
        "FORMAT",
        "SIZE",
        "LAST USED",
        "ZONES",
    ]);
    for image in &reply.images {
        let none = ["<none>".to_string()];
        let references = if image.references.is_empty() {
            &none[..]
        } else {
            &image.references[..]
        };
        let last_used = human::age(image.last_used_at.as_ref(), now);
        for reference in references {
            table.add_row(vec![
                reference.clone(),
                human::short_digest(&image.manifest_digest),
                human::image_format(image.format),
                human::bytes(image.size_bytes),
                if last_used.is_empty() {
                    "never".into()
                } else {
                    format!("{last_used} ago")
                },
                image.used_by.len().to_string(),
            ]);
        }
    }
    human::render_table(&table)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_row_per_reference() {
        let reply = v1::ListImagesResponse {
            images: vec![
                v1::Image {
                    references: vec!["a:1".into(), "a:latest".into()],
                    manifest_digest: "sha256:0123456789abcdef".into(),
                    format: v1::ImageFormat::Squashfs as i32,
                    size_bytes: 5 << 20,
                    last_used_at: Some(prost_types::Timestamp {
                        seconds: 100,
                        nanos: 0,
                    }),
                    used_by: vec!["z1".into()],
                    ..Default::default()
                },
                v1::Image {
                    manifest_digest: "sha256:fedcba9876543210".into(),
                    format: v1::ImageFormat::Erofs as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render(&reply, SystemTime::UNIX_EPOCH + Duration::from_secs(160));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].starts_with("a:1         sha256:0123456789ab   squashfs   5.0 MiB   60s ago"),
            "{text}"
        );
        assert!(lines[2].starts_with("a:latest"), "{text}");
        assert!(
            lines[3].starts_with("<none>") && lines[3].contains("never"),
            "{text}"
        );
    }
}
