//! Records to API messages.

use spore_api::v1;

use crate::images::{Images, format_to_api};
use crate::store::ImageRecord;

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn image(images: &Images, record: &ImageRecord) -> v1::Image {
    v1::Image {
        references: record.image.references.clone(),
        manifest_digest: record.image.manifest_digest.to_string(),
        config_digest: record.image.config_digest.to_string(),
        format: format_to_api(record.image.format) as i32,
        size_bytes: record.image.size_bytes,
        platform: record.image.platform.to_string(),
        created_at: Some(timestamp(record.created_at_ms)),
        last_used_at: Some(timestamp(record.last_used_ms)),
        used_by: images.users(&record.key()),
    }
}

pub fn progress(p: &spore_oci::Progress) -> v1::PullProgress {
    v1::PullProgress {
        phase: phase(p.phase) as i32,
        layers: p
            .layers
            .iter()
            .map(|l| v1::LayerProgress {
                digest: l.digest.to_string(),
                phase: phase(l.phase) as i32,
                current_bytes: l.current_bytes,
                total_bytes: l.total_bytes,
            })
            .collect(),
        message: p.message.clone(),
    }
}

fn phase(p: spore_oci::Phase) -> v1::pull_progress::Phase {
    use spore_oci::Phase as P;
    use v1::pull_progress::Phase as A;
    match p {
        P::Resolving => A::Resolving,
        P::Downloading => A::Downloading,
        P::Verifying => A::Verifying,
        P::Packing => A::Packing,
        P::Done => A::Done,
    }
}

/// What a guest reported (its own ids and names bounded: the guest is untrusted).
pub fn metrics(
    zone: &v1::Zone,
    m: spore_idm::proto::MetricsResponse,
) -> v1::ReadZoneMetricsResponse {
    const MAX_PROCESSES: usize = 4096;
    let text = |t: String, max: usize| {
        if t.len() <= max {
            return t;
        }
        let mut end = max;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t[..end].to_string()
    };
    let truncated = m.processes_truncated || m.processes.len() > MAX_PROCESSES;
    v1::ReadZoneMetricsResponse {
        time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        memory_total_bytes: m.memory_total_bytes,
        memory_used_bytes: m.memory_used_bytes.min(m.memory_total_bytes),
        cpu_busy_ns: m.cpu_busy_ns,
        uptime_ns: m.uptime_ns,
        processes: m
            .processes
            .into_iter()
            .take(MAX_PROCESSES)
            .map(|p| v1::ProcessMetrics {
                pid: p.pid,
                ppid: p.ppid,
                command: text(p.command, 64),
                rss_bytes: p.rss_bytes,
                cpu_ns: p.cpu_ns,
                cmdline: text(p.cmdline, 256),
                uid: p.uid,
                state: text(p.state, 4),
            })
            .collect(),
        cpu_count: m.cpu_count,
        memory_available_bytes: m.memory_available_bytes,
        cpu_idle_ns: m.cpu_idle_ns,
        processes_truncated: truncated,
        process_count: m.process_count,
        zone_id: zone.id.clone(),
        zone_name: zone.name.clone(),
    }
}
