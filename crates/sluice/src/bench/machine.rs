//! What the bench knows about the machine and the broker process: CPU, memory, the
//! limits measured by `bench/limits.sh`, the broker's resident memory, and a way to
//! push the broker's files out of the page cache.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The machine the bench runs on, read from /proc.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// Total memory in MiB.
    pub memory_mib: Option<u64>,
    /// Kernel release.
    pub kernel: Option<String>,
}

impl Machine {
    /// Reads the description of this machine.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: kib_field(&meminfo, "MemTotal:").map(|kib| kib / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
        }
    }
}

/// The machine's limits as `bench/limits.sh` measured them (MB = 10^6 bytes).
#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    /// One TCP stream over loopback (iperf3).
    pub loopback_tcp_mb_s: f64,
    /// Sequential buffered write of the data disk, including the final fsync (fio).
    pub disk_seq_write_mb_s: f64,
    /// Sequential direct read of the data disk (fio).
    pub disk_seq_read_mb_s: f64,
    /// The whole file, kept verbatim in the report.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl Limits {
    /// Reads the JSON file `bench/limits.sh` wrote.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let mut limits: Limits = serde_json::from_value(raw.clone())
            .with_context(|| format!("{} lacks a limit", path.display()))?;
        limits.raw = raw;
        Ok(limits)
    }
}

/// Resident and peak resident memory of a process, in MiB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rss {
    /// Current resident set size.
    pub rss_mib: f64,
    /// Highest resident set size since the process started.
    pub peak_mib: f64,
}

/// Reads the resident memory of process `pid`, if it is still running.
pub fn rss_of(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Rss {
        rss_mib: kib_field(&status, "VmRSS:")? as f64 / 1024.0,
        peak_mib: kib_field(&status, "VmHWM:")? as f64 / 1024.0,
    })
}

/// CPU time (user + system) this process has used, in seconds.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU time (user + system) process `pid` has used, in seconds, if it is running.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// How the cold-read scenario emptied the page cache.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    /// `sync` then `echo 1 > /proc/sys/vm/drop_caches`: the whole page cache.
    DropCaches,
    /// fdatasync then `posix_fadvise(DONTNEED)` on every file of the data directory.
    Fadvise,
}

/// Evicts the broker's data from the page cache so the next read comes from the disk.
///
/// Writes back dirty pages first: a dirty page cannot be dropped.
pub fn evict_page_cache(data_dir: Option<&Path>) -> anyhow::Result<Eviction> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if std::fs::write("/proc/sys/vm/drop_caches", "1\n").is_ok() {
        return Ok(Eviction::DropCaches);
    }
    let dir = data_dir.context(
        "/proc/sys/vm/drop_caches is not writable; pass --data-dir so the bench can evict \
         the broker's files one by one",
    )?;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else {
                evict_file(&path)?;
            }
        }
    }
    Ok(Eviction::Fadvise)
}

fn evict_file(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        // Retention or a topic deletion may remove files while we walk.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    file.sync_data()
        .with_context(|| format!("fdatasync {}", path.display()))?;
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        anyhow::bail!(
            "posix_fadvise({}): {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01, after Howard Hinnant's method.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_parse_as_kib() {
        let text = "MemTotal:       24592432 kB\nMemFree:  100 kB\n";
        assert_eq!(kib_field(text, "MemTotal:"), Some(24_592_432));
        assert_eq!(kib_field(text, "MemFree:"), Some(100));
        assert_eq!(kib_field(text, "VmRSS:"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        let rss = rss_of(std::process::id()).expect("own /proc status");
        assert!(rss.rss_mib > 0.0 && rss.peak_mib >= rss.rss_mib);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = own_cpu_seconds();
        let proc_before = cpu_seconds_of(std::process::id()).expect("own /proc stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(own_cpu_seconds() > before);
        assert!(cpu_seconds_of(std::process::id()).expect("own /proc stat") >= proc_before);
    }

    #[test]
    fn utc_now_is_iso8601() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
