//! `sporectl zone top ZONE`: the zone's memory, CPU and processes as its guest sees them,
//! refreshed until Ctrl+C. CPU percentages come from the difference between two samples.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::{human, term};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(short = 'd', long, default_value_t = 2.0, value_name = "SECONDS")]
    pub interval: f64,

    /// Stop after this many samples (default: forever on a terminal, 1 otherwise).
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,

    /// Also list the guest kernel's own threads.
    #[arg(short, long)]
    pub all: bool,

    /// Zone name, id or unique id prefix.
    pub zone: String,
}

impl TopArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        if !(self.interval.is_finite() && self.interval >= 0.1) {
            bail!(
                "invalid --interval {}: give at least 0.1 seconds",
                self.interval
            );
        }
        let interactive = term::stdout_is_tty() && ctx.out.is_table();
        let count = self.count.unwrap_or(if interactive { 0 } else { 1 });
        let mut client = ctx.client().await?;
        let zone = ctx.resolve_zone(&mut client, &self.zone).await?;
        let mut previous: Option<v1::ReadZoneMetricsResponse> = None;
        let mut taken = 0u64;
        loop {
            let sample = ctx
                .call(client.read_zone_metrics(v1::ReadZoneMetricsRequest {
                    zone: zone.clone(),
                    omit_processes: false,
                }))
                .await?;
            if ctx.out.is_table() {
                let mut text = render(&self.zone, &sample, previous.as_ref(), self.all);
                if interactive {
                    // Home the cursor and clear the screen, then draw the new frame.
                    text.insert_str(0, "\x1b[H\x1b[2J");
                } else if taken > 0 {
                    text.insert(0, '\n');
                }
                crate::output::write_stdout(&text)?;
            } else {
                ctx.out.print_item(&sample, |_| String::new())?;
            }
            previous = Some(sample);
            taken += 1;
            if count != 0 && taken >= count {
                return Ok(0);
            }
            tokio::time::sleep(Duration::from_secs_f64(self.interval)).await;
        }
    }
}

fn percent(busy: u64, wall: u64) -> String {
    if wall == 0 {
        return "-".into();
    }
    format!("{:.1}%", busy as f64 * 100.0 / wall as f64)
}

fn processes_line(sample: &v1::ReadZoneMetricsResponse) -> String {
    let mut line = format!("{} processes", sample.process_count);
    if sample.processes_truncated {
        line.push_str(&format!(" ({} listed)", sample.processes.len()));
    }
    line
}

/// A guest kernel thread: kthreadd (pid 2) and its children, none with a command line.
fn kernel_thread(p: &v1::ProcessMetrics) -> bool {
    (p.pid == 2 || p.ppid == 2) && p.cmdline.is_empty()
}

fn render(
    zone: &str,
    sample: &v1::ReadZoneMetricsResponse,
    previous: Option<&v1::ReadZoneMetricsResponse>,
    all: bool,
) -> String {
    let wall = previous.map(|p| sample.uptime_ns.saturating_sub(p.uptime_ns));
    let cpu = match (previous, wall) {
        (Some(p), Some(wall)) => percent(sample.cpu_busy_ns.saturating_sub(p.cpu_busy_ns), wall),
        _ => "-".into(),
    };
    let mut text = human::key_values(&[
        ("zone", zone.to_string()),
        (
            "uptime",
            human::duration(Duration::from_nanos(sample.uptime_ns)),
        ),
        (
            "memory",
            format!(
                "{} used of {}",
                human::bytes(sample.memory_used_bytes),
                human::bytes(sample.memory_total_bytes)
            ),
        ),
        ("cpu", format!("{cpu} of {} vCPU", sample.cpu_count.max(1))),
        ("tasks", processes_line(sample)),
    ]);
    text.push('\n');
    let before: HashMap<u32, u64> = previous
        .map(|p| p.processes.iter().map(|q| (q.pid, q.cpu_ns)).collect())
        .unwrap_or_default();
    let mut processes: Vec<v1::ProcessMetrics> = sample
        .processes
        .iter()
        .filter(|p| all || !kernel_thread(p))
        .cloned()
        .collect();
    processes.sort_by(|a, b| b.cpu_ns.cmp(&a.cpu_ns).then(a.pid.cmp(&b.pid)));
    let mut table = human::table([
        "PID", "PPID", "UID", "S", "CPU", "CPU TIME", "RSS", "COMMAND",
    ]);
    for p in &processes {
        let cpu = match (before.get(&p.pid), wall) {
            (Some(&then), Some(wall)) => percent(p.cpu_ns.saturating_sub(then), wall),
            _ => "-".into(),
        };
        let command = if p.cmdline.is_empty() {
            // Kernel threads have no command line.
            format!("[{}]", p.command)
        } else {
            p.cmdline.clone()
        };
        table.add_row(vec![
            p.pid.to_string(),
            p.ppid.to_string(),
            p.uid.to_string(),
            p.state.clone(),
            cpu,
            format!("{:.2}s", p.cpu_ns as f64 / 1e9),
            human::bytes(p.rss_bytes),
            command,
        ]);
    }
    text.push_str(&human::render_table(&table));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(uptime_s: u64, busy_s: u64, proc_cpu_s: u64) -> v1::ReadZoneMetricsResponse {
        v1::ReadZoneMetricsResponse {
            memory_total_bytes: 128 << 20,
            memory_used_bytes: 32 << 20,
            cpu_busy_ns: busy_s * 1_000_000_000,
            uptime_ns: uptime_s * 1_000_000_000,
            cpu_count: 1,
            process_count: 1,
            processes: vec![v1::ProcessMetrics {
                pid: 1,
                ppid: 0,
                command: "httpd".into(),
                cmdline: "httpd -f".into(),
                rss_bytes: 2 << 20,
                cpu_ns: proc_cpu_s * 1_000_000_000,
                uid: 0,
                state: "S".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn cpu_from_two_samples() {
        let first = render("web", &sample(10, 2, 1), None, false);
        assert!(first.contains("cpu:    - of 1 vCPU\n"), "{first}");
        assert!(first.contains("tasks:  1 processes\n"), "{first}");
        assert!(
            first.contains("memory: 32 MiB used of 128 MiB\n"),
            "{first}"
        );
        let second = render("web", &sample(20, 7, 6), Some(&sample(10, 2, 1)), false);
        assert!(second.contains("cpu:    50.0% of 1 vCPU\n"), "{second}");
        let row = second.lines().last().unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "1", "0", "0", "S", "50.0%", "6.00s", "2.0", "MiB", "httpd", "-f"
            ],
            "{second}"
        );
    }
}
