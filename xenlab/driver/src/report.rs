//! What the driver prints: result lines, and this process's memory from `/proc/self/status`.

/// One `XENLAB-RESULT` line (the lab test greps them).
pub fn result(line: impl std::fmt::Display) {
    println!("XENLAB-RESULT {line}");
}

/// A `/proc/self/status` field in KiB (0 if absent).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Resident memory in words: total, anonymous (the process's own), file and shmem (mapped
/// files, e.g. the kernel: page cache shared with every other mapping of the file; shmem when
/// the file is on tmpfs).
pub fn rss_breakdown() -> String {
    format!(
        "rss_kib={} rss_anon_kib={} rss_file_kib={} rss_shmem_kib={}",
        status_kib("VmRSS:"),
        status_kib("RssAnon:"),
        status_kib("RssFile:"),
        status_kib("RssShmem:")
    )
}
