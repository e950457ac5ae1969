//! `sporectl stats [ZONE...]` (also `zone stats`): CPU, memory and process counts of every
//! running zone at once, as `docker stats` shows them. Cheap: one metrics call per zone without
//! its process table, all zones at once; CPU % comes from two samples.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use futures::StreamExt;
use spore_api::{ControlClient, v1};

use crate::context::Ctx;
use crate::{human, term};

/// Metrics calls in flight at once.
const PARALLEL: usize = 16;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one table (from two samples a second apart) and exit, instead of refreshing.
    #[arg(long)]
    pub no_stream: bool,

    /// Seconds between refreshes.
    #[arg(short = 'd', long, default_value_t = 2.0, value_name = "SECONDS")]
    pub interval: f64,

    /// Only these zones (names, ids or unique id prefixes); default: every running zone.
    pub zones: Vec<String>,
}

/// One zone's row: its latest sample and the one before.
struct Row {
    id: String,
    name: String,
    sample: Option<v1::ReadZoneMetricsResponse>,
    previous: Option<v1::ReadZoneMetricsResponse>,
    error: Option<String>,
}

impl StatsArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        if !(self.interval.is_finite() && self.interval >= 0.1) {
            bail!(
                "invalid --interval {}: give at least 0.1 seconds",
                self.interval
            );
        }
        let mut client = ctx.client().await?;
        let interactive = term::stdout_is_tty() && ctx.out.is_table() && !self.no_stream;
        let mut rows: HashMap<String, Row> = HashMap::new();
        let mut round = 0u64;
        loop {
            let zones = self.zones(ctx, &mut client).await?;
            rows.retain(|id, _| zones.iter().any(|(z, _)| z == id));
            let samples = sample(&client, &zones).await;
            for ((id, name), result) in zones.iter().zip(samples) {
                let row = rows.entry(id.clone()).or_insert_with(|| Row {
                    id: id.clone(),
                    name: name.clone(),
                    sample: None,
                    previous: None,
                    error: None,
                });
                match result {
                    Ok(sample) => {
                        row.previous = row.sample.replace(sample);
                        row.error = None;
                    }
                    Err(e) => row.error = Some(e),
                }
            }
            round += 1;
            // The first table needs a second sample for CPU %.
            if round == 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let mut ordered: Vec<&Row> = zones.iter().filter_map(|(id, _)| rows.get(id)).collect();
            ordered.sort_by(|a, b| a.name.cmp(&b.name));
            if ctx.out.is_table() {
                let mut text = render(&ordered);
                if interactive {
                    text.insert_str(0, "\x1b[H\x1b[2J");
                }
                crate::output::write_stdout(&text)?;
            } else {
                for row in &ordered {
                    if let Some(sample) = &row.sample {
                        ctx.out.print_item(sample, |_| String::new())?;
                    }
                }
            }
            if self.no_stream {
                return Ok(0);
            }
            tokio::time::sleep(Duration::from_secs_f64(self.interval)).await;
        }
    }

    /// (id, name) of the zones to show: the named ones, or every running zone.
    async fn zones(&self, ctx: &Ctx, client: &mut ControlClient) -> Result<Vec<(String, String)>> {
        if !self.zones.is_empty() {
            let mut out = Vec::new();
            for zone in &self.zones {
                let found = ctx
                    .call(client.get_zone(v1::GetZoneRequest { zone: zone.clone() }))
                    .await?
                    .zone
                    .unwrap_or_default();
                out.push((found.id, found.name));
            }
            return Ok(out);
        }
        let zones = crate::commands::zone::list::all(
            ctx,
            client,
            v1::ListZonesRequest {
                states: vec![v1::ZoneState::Running as i32],
                ..Default::default()
            },
        )
        .await?;
        Ok(zones.into_iter().map(|z| (z.id, z.name)).collect())
    }
}

/// One sample of each zone, concurrently; a zone that fails (it just stopped) says why.
async fn sample(
    client: &ControlClient,
    zones: &[(String, String)],
) -> Vec<Result<v1::ReadZoneMetricsResponse, String>> {
    futures::stream::iter(zones.iter().map(|(id, _)| {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            client
                .read_zone_metrics(v1::ReadZoneMetricsRequest {
                    zone: id,
                    omit_processes: true,
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.message().to_string())
        }
    }))
    .buffered(PARALLEL)
    .collect()
    .await
}

fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        return "--".into();
    }
    format!("{:.2}%", part * 100.0 / whole)
}

fn render(rows: &[&Row]) -> String {
    let mut table = human::table([
        "ZONE ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
    ]);
    for row in rows {
        let id = human::short_id(&row.id).to_string();
        let Some(sample) = &row.sample else {
            let error = row.error.clone().unwrap_or_default();
            table.add_row(vec![id, row.name.clone(), "--".into(), error]);
            continue;
        };
        let cpu = match &row.previous {
            Some(p) => percent(
                sample.cpu_busy_ns.saturating_sub(p.cpu_busy_ns) as f64,
                sample.uptime_ns.saturating_sub(p.uptime_ns) as f64,
            ),
            None => "--".into(),
        };
        table.add_row(vec![
            id,
            row.name.clone(),
            cpu,
            format!(
                "{} / {}",
                human::bytes(sample.memory_used_bytes),
                human::bytes(sample.memory_total_bytes)
            ),
            percent(
                sample.memory_used_bytes as f64,
                sample.memory_total_bytes as f64,
            ),
            sample.process_count.to_string(),
        ]);
    }
    human::render_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(uptime_s: u64, busy_ms: u64) -> v1::ReadZoneMetricsResponse {
        v1::ReadZoneMetricsResponse {
            memory_total_bytes: 256 << 20,
            memory_used_bytes: 64 << 20,
            cpu_busy_ns: busy_ms * 1_000_000,
            uptime_ns: uptime_s * 1_000_000_000,
            process_count: 4,
            ..Default::default()
        }
    }

    #[test]
    fn a_row_per_zone_with_cpu_from_two_samples() {
        let web = Row {
            id: "0b4f7c1e-8a8e-4f5e-9d54-3f0c8e3c2a11".into(),
            name: "web".into(),
            sample: Some(sample(12, 1500)),
            previous: Some(sample(10, 1000)),
            error: None,
        };
        let gone = Row {
            id: "a3c9d2e0-41b0-4f5e-9d54-3f0c8e3c2a11".into(),
            name: "job".into(),
            sample: None,
            previous: None,
            error: Some("zone job is exited: metrics need a running zone".into()),
        };
        let text = render(&[&web, &gone]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "0b4f7c1e-8a8",
                "web",
                "25.00%",
                "64",
                "MiB",
                "/",
                "256",
                "MiB",
                "25.00%",
                "4"
            ],
            "{text}"
        );
        assert!(lines[2].contains("metrics need a running zone"), "{text}");
    }
}
