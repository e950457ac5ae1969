//! Pull/import progress on stderr: indicatif bars per layer when stderr is a terminal, plain
//! lines (one per phase change, never per byte) otherwise. The result goes to stdout through
//! the formatter, so `-o json` output stays parseable.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Result, anyhow};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use spore_api::v1;
use tonic::Streaming;

use crate::context::Ctx;
use crate::human;
use crate::term;

/// Reads a pull or import stream to its end, showing progress, and returns the packed image.
pub async fn follow(
    ctx: &Ctx,
    mut stream: Streaming<v1::PullImageResponse>,
    quiet: bool,
    what: &str,
) -> Result<v1::Image> {
    let mut view = if quiet {
        View::Quiet
    } else if term::stderr_is_tty() {
        View::bars()
    } else {
        View::Lines(Lines::default())
    };
    let result = loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break Err(anyhow!("spored ended the {what} without a result")),
            Err(status) => break Err(ctx.status_error(status).into()),
        };
        match message.kind {
            Some(v1::pull_image_response::Kind::Progress(progress)) => view.update(&progress),
            Some(v1::pull_image_response::Kind::Image(image)) => break Ok(image),
            None => {}
        }
    };
    view.finish();
    result
}

enum View {
    Quiet,
    Bars(Bars),
    Lines(Lines),
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    layers: HashMap<String, ProgressBar>,
    style: ProgressStyle,
}

#[derive(Default)]
struct Lines {
    phase: i32,
    message: String,
    layers: HashMap<String, i32>,
}

impl View {
    fn bars() -> Self {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            overall.set_style(style);
        }
        overall.enable_steady_tick(Duration::from_millis(120));
        let style = ProgressStyle::with_template(
            "{prefix} {msg:<11} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        View::Bars(Bars {
            multi,
            overall,
            layers: HashMap::new(),
            style,
        })
    }

    fn update(&mut self, progress: &v1::PullProgress) {
        match self {
            View::Quiet => {}
            View::Bars(bars) => bars.update(progress),
            View::Lines(lines) => {
                let text = lines.update(progress);
                if !text.is_empty() {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(text.as_bytes());
                }
            }
        }
    }

    fn finish(&mut self) {
        if let View::Bars(bars) = self {
            bars.overall.finish_and_clear();
            for bar in bars.layers.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            let _ = bars.multi.clear();
        }
    }
}

fn overall_text(progress: &v1::PullProgress) -> String {
    let phase = human::pull_phase(progress.phase);
    if progress.message.is_empty() {
        phase
    } else {
        format!("{phase}: {}", progress.message)
    }
}

impl Bars {
    fn update(&mut self, progress: &v1::PullProgress) {
        self.overall.set_message(overall_text(progress));
        for layer in &progress.layers {
            let bar = self.layers.entry(layer.digest.clone()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(layer.total_bytes));
                bar.set_style(self.style.clone());
                bar.set_prefix(human::short_digest(&layer.digest));
                bar
            });
            if bar.is_finished() {
                continue;
            }
            bar.set_length(layer.total_bytes.max(layer.current_bytes));
            bar.set_position(layer.current_bytes);
            bar.set_message(human::pull_phase(layer.phase));
            if layer.phase == v1::pull_progress::Phase::Done as i32 {
                bar.finish();
            }
        }
    }
}

impl Lines {
    /// The lines to print for this update: phase and message changes, layer phase changes.
    fn update(&mut self, progress: &v1::PullProgress) -> String {
        let mut text = String::new();
        if progress.phase != self.phase || progress.message != self.message {
            self.phase = progress.phase;
            self.message = progress.message.clone();
            text.push_str(&overall_text(progress));
            text.push('\n');
        }
        for layer in &progress.layers {
            if self.layers.get(&layer.digest) == Some(&layer.phase) {
                continue;
            }
            self.layers.insert(layer.digest.clone(), layer.phase);
            text.push_str(&format!(
                "  {} {} {}\n",
                human::short_digest(&layer.digest),
                human::pull_phase(layer.phase),
                human::bytes(layer.total_bytes)
            ));
        }
        text
    }
}

/// The summary printed after a pull or import.
pub fn render_image(image: &v1::Image) -> String {
    human::key_values(&[
        ("image", image.references.join(", ")),
        ("digest", image.manifest_digest.clone()),
        ("platform", image.platform.clone()),
        ("format", human::image_format(image.format)),
        ("size", human::bytes(image.size_bytes)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(
        phase: v1::pull_progress::Phase,
        layers: &[(&str, v1::pull_progress::Phase, u64)],
    ) -> v1::PullProgress {
        v1::PullProgress {
            phase: phase as i32,
            message: String::new(),
            layers: layers
                .iter()
                .map(|(digest, phase, current)| v1::LayerProgress {
                    digest: (*digest).into(),
                    phase: *phase as i32,
                    current_bytes: *current,
                    total_bytes: 2048,
                })
                .collect(),
        }
    }

    #[test]
    fn lines_only_on_phase_changes() {
        use v1::pull_progress::Phase::*;
        let mut lines = Lines::default();
        let a = "sha256:aaaaaaaaaaaaaaaaaaaa";
        assert_eq!(lines.update(&progress(Resolving, &[])), "resolving\n");
        assert_eq!(
            lines.update(&progress(Downloading, &[(a, Downloading, 10)])),
            "downloading\n  sha256:aaaaaaaaaaaa downloading 2.0 KiB\n"
        );
        // Bytes moved but nothing changed phase: silence.
        assert_eq!(
            lines.update(&progress(Downloading, &[(a, Downloading, 900)])),
            ""
        );
        assert_eq!(
            lines.update(&progress(Downloading, &[(a, Done, 2048)])),
            "  sha256:aaaaaaaaaaaa done 2.0 KiB\n"
        );
        let mut with_message = progress(Packing, &[]);
        with_message.message = "squashfs, zstd level 3".into();
        assert_eq!(
            lines.update(&with_message),
            "packing: squashfs, zstd level 3\n"
        );
    }

    #[test]
    fn image_summary() {
        let text = render_image(&v1::Image {
            references: vec!["docker.io/library/busybox:latest".into()],
            manifest_digest: "sha256:abc".into(),
            format: v1::ImageFormat::Squashfs as i32,
            size_bytes: 2 << 20,
            platform: "linux/amd64".into(),
            ..Default::default()
        });
        assert!(
            text.contains("image:    docker.io/library/busybox:latest\n"),
            "{text}"
        );
        assert!(text.contains("size:     2.0 MiB\n"), "{text}");
    }
}
