//! What the store benches share: a command on a store of their own, strace's count of what
//! reaches the store's files, and the figures' arithmetic.

#![allow(dead_code)] // each bench uses its part

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `program` (tails-server, or strace running it) on the store in `state`, quiet.
pub fn command(state: &Path, program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env("TAILS_SERVER_STATE_DIR", state)
        .env("TAILS_SERVER_RUNTIME_DIR", state.with_extension("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The syscalls counted: writes and fsync-class calls.
pub const TRACED: &str = "trace=write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync_file_range,syncfs";

/// Bytes written and fsync-class calls on files under `state` in strace's output (`-y` paths).
pub fn tally(text: &str, state: &Path) -> (u64, u32) {
    let prefix = format!("<{}/", state.display());
    let (mut bytes, mut syncs) = (0u64, 0u32);
    for line in text.lines() {
        // "1234 pwrite64(5</state/db/db>, "..."..., 24, 23735) = 24"
        let Some(call) = line.split_whitespace().nth(1) else { continue };
        if !call.contains(&prefix) {
            continue;
        }
        if call.starts_with("fsync(") || call.starts_with("fdatasync(") || call.starts_with("sync_file_range(") {
            syncs += 1;
        } else if let Some(result) = line.rsplit_once(" = ").and_then(|(_, r)| r.trim().parse::<u64>().ok()) {
            bytes += result;
        }
    }
    (bytes, syncs)
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The peak resident memory of this process so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

pub fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Blocks allocated under `path`, the way a stick fills up.
pub fn size_on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if meta.is_dir() {
        own + std::fs::read_dir(path).unwrap().map(|e| size_on_disk(&e.unwrap().path())).sum::<u64>()
    } else {
        own
    }
}
