//! Per-log settings, named after the Kafka topic configs they implement.

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before the append is acknowledged; concurrent appenders share one fsync.
    Always,
    /// fsync when `ms` have passed or `bytes` have accumulated since the last one.
    Interval { ms: u64, bytes: u64 },
    /// Leave it to the operating system's page cache (survives a process crash,
    /// not a power loss).
    Os,
}

impl FlushPolicy {
    /// The policy's config name: `always`, `interval` or `os`.
    pub fn name(&self) -> &'static str {
        match self {
            FlushPolicy::Always => "always",
            FlushPolicy::Interval { .. } => "interval",
            FlushPolicy::Os => "os",
        }
    }
}

/// Settings of one partition log; they can change while the log is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when the active one would exceed this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is this old.
    pub segment_ms: i64,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Delete sealed segments whose newest record is older than this; negative: never.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log exceeds this; negative: never.
    pub retention_bytes: i64,
    /// Largest record batch accepted, in bytes.
    pub max_message_bytes: usize,
    /// When appends reach the disk.
    pub flush: FlushPolicy,
}

/// Kafka's default segment size, 1 GiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Smallest segment size accepted; tiny segments are only useful in tests.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Seven days, Kafka's default retention and segment age.
pub const WEEK_MS: i64 = 7 * 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: WEEK_MS,
            index_interval_bytes: 4096,
            retention_ms: WEEK_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush: FlushPolicy::Interval {
                ms: 1000,
                bytes: 64 << 20,
            },
        }
    }
}
