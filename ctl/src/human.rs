//! Human renderings shared by the table views: states, exit statuses, sizes, ages, ids and the
//! table/key-value layouts.

use std::time::{Duration, SystemTime};

use comfy_table::{Table, presets};
use spore_api::v1;

/// A borderless, unwrapped table in the style of `docker ps`/`kubectl get`.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    table
}

/// Renders a table made by [`table`], without trailing blanks.
pub fn render_table(table: &Table) -> String {
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `key:   value` lines with the values aligned.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        text.push_str(&format!("{:<width$} {first}\n", format!("{key}:")));
        for more in lines {
            text.push_str(&format!("{:width$} {more}\n", ""));
        }
    }
    text
}

/// "running", "exited", ... (the enum name without its prefix, lower case).
pub fn zone_state(state: i32) -> String {
    match v1::ZoneState::try_from(state) {
        Ok(v1::ZoneState::Unspecified) => "unknown".into(),
        Ok(s) => s
            .as_str_name()
            .trim_start_matches("ZONE_STATE_")
            .to_ascii_lowercase(),
        Err(_) => format!("state {state}"),
    }
}

pub fn backend(kind: i32) -> String {
    match v1::BackendKind::try_from(kind) {
        Ok(v1::BackendKind::Unspecified) => "unknown".into(),
        Ok(v1::BackendKind::None) => "none".into(),
        Ok(v1::BackendKind::Xen) => "xen".into(),
        Ok(v1::BackendKind::Qemu) => "qemu".into(),
        Err(_) => format!("backend {kind}"),
    }
}

pub fn image_format(format: i32) -> String {
    match v1::ImageFormat::try_from(format) {
        Ok(v1::ImageFormat::Squashfs) => "squashfs".into(),
        Ok(v1::ImageFormat::Erofs) => "erofs".into(),
        Ok(v1::ImageFormat::Unspecified) => "default".into(),
        Err(_) => format!("format {format}"),
    }
}

pub fn pull_phase(phase: i32) -> String {
    match v1::pull_progress::Phase::try_from(phase) {
        Ok(v1::pull_progress::Phase::Unspecified) => "waiting".into(),
        Ok(p) => p
            .as_str_name()
            .trim_start_matches("PHASE_")
            .to_ascii_lowercase(),
        Err(_) => format!("phase {phase}"),
    }
}

/// "exited 0", "killed by signal 9 (SIGKILL)", or "" when unknown.
pub fn exit_status(exit: Option<&v1::ExitStatus>) -> String {
    match exit.and_then(|e| e.status) {
        Some(v1::exit_status::Status::Code(code)) => format!("exited {code}"),
        Some(v1::exit_status::Status::Signal(signal)) => match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        },
        None => String::new(),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// The process exit code that stands for a workload's exit status, as a shell computes it: the
/// code itself (0-255), or 128 + the signal number.
pub fn exit_code(exit: &v1::ExitStatus) -> Option<i32> {
    match exit.status? {
        v1::exit_status::Status::Code(code) => Some(code & 0xff),
        v1::exit_status::Status::Signal(signal) => Some(128 + (signal & 0x7f)),
    }
}

/// The first 12 characters of a zone id, as `zone list` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// "sha256:0123456789ab" (12 hex digits).
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.get(..19).unwrap_or(digest).to_string(),
    }
}

/// IEC sizes: "512 B", "1.5 KiB", "3.2 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

pub fn mib(n: u64) -> String {
    bytes(n.saturating_mul(1024 * 1024))
}

pub fn to_system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// RFC 3339 in UTC, to the second; "" when unset.
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(to_system_time)
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

/// "5s", "3m", "2h", "4d": how long ago `ts` was; "" when unset.
pub fn age(ts: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let Some(then) = ts.and_then(to_system_time) else {
        return String::new();
    };
    duration(now.duration_since(then).unwrap_or_default())
}

/// A short duration: "45s", "12m", "3h", "9d".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(status: v1::exit_status::Status) -> v1::ExitStatus {
        v1::ExitStatus {
            status: Some(status),
        }
    }

    #[test]
    fn exit_codes_map_like_a_shell() {
        use v1::exit_status::Status::{Code, Signal};
        assert_eq!(exit_code(&exit(Code(0))), Some(0));
        assert_eq!(exit_code(&exit(Code(7))), Some(7));
        assert_eq!(exit_code(&exit(Code(255))), Some(255));
        assert_eq!(exit_code(&exit(Signal(9))), Some(137));
        assert_eq!(exit_code(&exit(Signal(15))), Some(143));
        assert_eq!(exit_code(&v1::ExitStatus { status: None }), None);
        assert_eq!(
            exit_status(Some(&exit(Signal(9)))),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(exit_status(Some(&exit(Code(3)))), "exited 3");
        assert_eq!(exit_status(None), "");
    }

    #[test]
    fn names() {
        assert_eq!(zone_state(v1::ZoneState::Running as i32), "running");
        assert_eq!(zone_state(99), "state 99");
        assert_eq!(backend(v1::BackendKind::Qemu as i32), "qemu");
        assert_eq!(
            pull_phase(v1::pull_progress::Phase::Downloading as i32),
            "downloading"
        );
        assert_eq!(image_format(v1::ImageFormat::Erofs as i32), "erofs");
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(300 * 1024 * 1024), "300 MiB");
        assert_eq!(mib(2048), "2.0 GiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(600)), "10m");
        assert_eq!(duration(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(duration(Duration::from_secs(9 * 86_400)), "9d");
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&ts)), "2023-11-14T22:13:20Z");
        let now = to_system_time(&ts).unwrap() + Duration::from_secs(90);
        assert_eq!(age(Some(&ts), now), "90s");
        // A timestamp from the future (clock skew) is "0s", a negative one is empty.
        assert_eq!(age(Some(&ts), SystemTime::UNIX_EPOCH), "0s");
        let bad = prost_types::Timestamp {
            seconds: -5,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&bad)), "");
    }

    #[test]
    fn ids() {
        assert_eq!(short_id("0b4f7c1e-8a8e-4f5e"), "0b4f7c1e-8a8");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("sha256:01"), "sha256:01");
    }

    #[test]
    fn layouts() {
        let text = key_values(&[("id", "x".into()), ("long key", "a\nb".into())]);
        assert_eq!(text, "id:       x\nlong key: a\n          b\n");
        let mut t = table(["A", "BB"]);
        t.add_row(vec!["1".to_string(), "2".to_string()]);
        assert_eq!(render_table(&t), "A   BB\n1   2\n");
    }
}
