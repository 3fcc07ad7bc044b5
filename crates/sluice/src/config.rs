//! Broker settings: embedded defaults, overridden by a TOML file, then by flags and
//! `SLUICE_*` environment variables.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Deserialize;
use sluice_core::messaging::MessagingConfig;
use sluice_core::{BrokerConfig, FlushPolicy, LogConfig};

/// Flags of `sluice serve`; every one also reads a `SLUICE_*` environment variable.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Directory holding all data [default: ./sluice-data].
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Kafka listener; port 0 picks a free port [default: 127.0.0.1:9092].
    #[arg(long, env = "SLUICE_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// host:port given to Kafka clients in metadata [default: the listen address].
    #[arg(long, env = "SLUICE_KAFKA_ADVERTISED")]
    pub kafka_advertised: Option<String>,
    /// Address of the HTTP listener (admin API, metrics) [default: 127.0.0.1:8080].
    #[arg(long, env = "SLUICE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Address of the RocketMQ 5 gRPC listener [default: 127.0.0.1:8081].
    #[arg(long, env = "SLUICE_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// host:port given to RocketMQ clients in routes [default: the listen address].
    #[arg(long, env = "SLUICE_GRPC_ADVERTISED")]
    pub grpc_advertised: Option<String>,
    /// Deliveries a shared-subscription message gets before it moves to the
    /// group's dead-letter topic `%DLQ%<group>` [default: 16].
    #[arg(long, env = "SLUICE_MAX_DELIVERY_ATTEMPTS")]
    pub max_delivery_attempts: Option<u32>,
    /// Longest delay of a delayed message, in ms [default: 259200000, 3 days].
    #[arg(long, env = "SLUICE_MAX_DELAY_MS")]
    pub max_delay_ms: Option<i64>,
    /// How long a transactional half message waits for commit or rollback before
    /// the broker asks its producer, and between checks, in ms [default: 30000].
    #[arg(long, env = "SLUICE_TRANSACTION_CHECK_INTERVAL_MS")]
    pub transaction_check_interval_ms: Option<i64>,
    /// Checks of a half message before it is rolled back [default: 15].
    #[arg(long, env = "SLUICE_TRANSACTION_MAX_CHECKS")]
    pub transaction_max_checks: Option<u32>,
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Default flush policy of topics: always, interval or os [default: interval].
    #[arg(long, env = "SLUICE_FLUSH")]
    pub flush: Option<String>,
    /// fsync interval of the `interval` policy, in ms [default: 1000].
    #[arg(long, env = "SLUICE_FLUSH_MS")]
    pub flush_ms: Option<u64>,
    /// Log filter, e.g. info, debug, sluice_kafka=trace [default: info].
    #[arg(long, env = "SLUICE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Create unknown topics on first produce or metadata request [default: true].
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
    /// How often retention deletes old segments, in ms [default: 300000].
    #[arg(long, env = "SLUICE_RETENTION_CHECK_MS")]
    pub retention_check_ms: Option<u64>,
    /// How long a new consumer group waits for more members before its first
    /// rebalance, in ms [default: 3000].
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Smallest session timeout classic consumers may ask for, in ms [default: 6000].
    #[arg(long, env = "SLUICE_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout classic consumers may ask for, in ms [default: 1800000].
    #[arg(long, env = "SLUICE_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// Session timeout of consumer-protocol (KIP-848) members, in ms [default: 45000].
    #[arg(long, env = "SLUICE_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Heartbeat interval of consumer-protocol members, in ms [default: 5000].
    #[arg(long, env = "SLUICE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Most members in one group [default: 1000].
    #[arg(long, env = "SLUICE_GROUP_MAX_SIZE")]
    pub group_max_size: Option<usize>,
    /// How long committed offsets of a group without members are kept, in ms;
    /// -1 keeps them forever [default: 604800000, 7 days].
    #[arg(long, env = "SLUICE_OFFSETS_RETENTION_MS", allow_hyphen_values = true)]
    pub offsets_retention_ms: Option<i64>,
}

/// The same settings as they may appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    kafka_listen: Option<String>,
    kafka_advertised: Option<String>,
    http_listen: Option<String>,
    grpc_listen: Option<String>,
    grpc_advertised: Option<String>,
    max_delivery_attempts: Option<u32>,
    max_delay_ms: Option<i64>,
    transaction_check_interval_ms: Option<i64>,
    transaction_max_checks: Option<u32>,
    flush: Option<String>,
    flush_ms: Option<u64>,
    log_level: Option<String>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<i32>,
    retention_check_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    group_consumer_session_timeout_ms: Option<i32>,
    group_consumer_heartbeat_interval_ms: Option<i32>,
    group_max_size: Option<usize>,
    offsets_retention_ms: Option<i64>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    segment_bytes: Option<u64>,
    max_message_bytes: Option<usize>,
}

/// Fully resolved settings of one broker process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka_listen: String,
    pub kafka_advertised: Option<String>,
    pub http_listen: String,
    pub grpc_listen: String,
    pub grpc_advertised: Option<String>,
    pub log_level: String,
    pub broker: BrokerConfig,
    pub messaging: MessagingConfig,
}

fn flush_policy(name: &str, ms: u64) -> anyhow::Result<FlushPolicy> {
    Ok(match name {
        "always" => FlushPolicy::Always,
        "os" => FlushPolicy::Os,
        "interval" => FlushPolicy::Interval {
            ms,
            bytes: 64 << 20,
        },
        other => bail!("flush must be always, interval or os, not {other:?}"),
    })
}

impl ServeArgs {
    /// Merges defaults, the config file and these flags.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./sluice-data"));
        let flush_ms = self.flush_ms.or(file.flush_ms).unwrap_or(1000).max(1);
        let flush = flush_policy(
            self.flush
                .as_deref()
                .or(file.flush.as_deref())
                .unwrap_or("interval"),
            flush_ms,
        )?;
        let defaults = LogConfig::default();
        let log_defaults = LogConfig {
            flush,
            retention_ms: file.retention_ms.unwrap_or(defaults.retention_ms),
            retention_bytes: file.retention_bytes.unwrap_or(defaults.retention_bytes),
            segment_bytes: file.segment_bytes.unwrap_or(defaults.segment_bytes),
            max_message_bytes: file.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            ..defaults
        };
        if !(sluice_core::topic_config::SEGMENT_BYTES_RANGE).contains(&log_defaults.segment_bytes) {
            bail!(
                "segment_bytes must be between {} and {}",
                sluice_core::topic_config::SEGMENT_BYTES_RANGE.start(),
                sluice_core::topic_config::SEGMENT_BYTES_RANGE.end()
            );
        }
        let default_partitions = self
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(1);
        if default_partitions < 1 {
            bail!("default partitions must be at least 1");
        }
        let mut broker = BrokerConfig::new(data_dir);
        broker.auto_create_topics = self
            .auto_create_topics
            .or(file.auto_create_topics)
            .unwrap_or(true);
        broker.default_partitions = default_partitions;
        broker.log_defaults = log_defaults;
        broker.retention_check_ms = self
            .retention_check_ms
            .or(file.retention_check_ms)
            .unwrap_or(300_000);
        let g = &mut broker.groups;
        g.initial_rebalance_delay_ms = self
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
            .unwrap_or(g.initial_rebalance_delay_ms);
        g.min_session_timeout_ms = self
            .group_min_session_timeout_ms
            .or(file.group_min_session_timeout_ms)
            .unwrap_or(g.min_session_timeout_ms);
        g.max_session_timeout_ms = self
            .group_max_session_timeout_ms
            .or(file.group_max_session_timeout_ms)
            .unwrap_or(g.max_session_timeout_ms);
        g.consumer_session_timeout_ms = self
            .group_consumer_session_timeout_ms
            .or(file.group_consumer_session_timeout_ms)
            .unwrap_or(g.consumer_session_timeout_ms);
        g.consumer_heartbeat_interval_ms = self
            .group_consumer_heartbeat_interval_ms
            .or(file.group_consumer_heartbeat_interval_ms)
            .unwrap_or(g.consumer_heartbeat_interval_ms);
        g.max_size = self
            .group_max_size
            .or(file.group_max_size)
            .unwrap_or(g.max_size);
        g.offsets_retention_ms = self
            .offsets_retention_ms
            .or(file.offsets_retention_ms)
            .unwrap_or(g.offsets_retention_ms);
        if g.min_session_timeout_ms < 1 || g.min_session_timeout_ms > g.max_session_timeout_ms {
            bail!("group session timeouts need 1 <= min <= max");
        }
        if g.consumer_session_timeout_ms < 1 || g.consumer_heartbeat_interval_ms < 1 {
            bail!("consumer group session timeout and heartbeat interval must be positive");
        }
        if g.consumer_heartbeat_interval_ms >= g.consumer_session_timeout_ms {
            bail!("the consumer group heartbeat interval must be below the session timeout");
        }
        if g.max_size < 1 {
            bail!("group max size must be at least 1");
        }
        let mut messaging = MessagingConfig::default();
        messaging.max_delivery_attempts = self
            .max_delivery_attempts
            .or(file.max_delivery_attempts)
            .unwrap_or(messaging.max_delivery_attempts);
        messaging.max_delay_ms = self
            .max_delay_ms
            .or(file.max_delay_ms)
            .unwrap_or(messaging.max_delay_ms);
        messaging.transaction_check_interval_ms = self
            .transaction_check_interval_ms
            .or(file.transaction_check_interval_ms)
            .unwrap_or(messaging.transaction_check_interval_ms);
        messaging.transaction_max_checks = self
            .transaction_max_checks
            .or(file.transaction_max_checks)
            .unwrap_or(messaging.transaction_max_checks);
        if messaging.transaction_check_interval_ms < 1 {
            bail!("the transaction check interval must be positive");
        }
        if messaging.max_delivery_attempts < 1 {
            bail!("max delivery attempts must be at least 1");
        }
        if messaging.max_delay_ms < 0 {
            bail!("the maximum delay must not be negative");
        }
        Ok(Settings {
            grpc_listen: self
                .grpc_listen
                .clone()
                .or(file.grpc_listen)
                .unwrap_or_else(|| "127.0.0.1:8081".into()),
            grpc_advertised: self.grpc_advertised.clone().or(file.grpc_advertised),
            messaging,
            kafka_listen: self
                .kafka_listen
                .clone()
                .or(file.kafka_listen)
                .unwrap_or_else(|| "127.0.0.1:9092".into()),
            kafka_advertised: self.kafka_advertised.clone().or(file.kafka_advertised),
            http_listen: self
                .http_listen
                .clone()
                .or(file.http_listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            log_level: self
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            broker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "kafka_listen = \"127.0.0.1:1111\"\nflush = \"os\"\ndefault_partitions = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            flush: Some("always".into()),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.kafka_listen, "127.0.0.1:1111");
        assert_eq!(s.broker.log_defaults.flush, FlushPolicy::Always);
        assert_eq!(s.broker.default_partitions, 3);
        assert_eq!(s.broker.data_dir, PathBuf::from("./sluice-data"));
    }

    #[test]
    fn unknown_file_keys_and_bad_flush_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(args.resolve().is_err());
        let args = ServeArgs {
            flush: Some("never".into()),
            ..ServeArgs::default()
        };
        assert!(args.resolve().is_err());
    }
}
