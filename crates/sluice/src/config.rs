//! Broker settings: embedded defaults, overridden by a TOML file, then by flags and
//! `SLUICE_*` environment variables.

use std::path::PathBuf;

/// Flags of `sluice serve`; every one also reads a `SLUICE_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory holding all partition data.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Kafka listener (port 0 picks a free port).
    #[arg(long, env = "SLUICE_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// Address of the HTTP listener (admin API, metrics).
    #[arg(long, env = "SLUICE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Default flush policy of topics: always, interval or os.
    #[arg(long, env = "SLUICE_FLUSH")]
    pub flush: Option<String>,
    /// Log filter, e.g. info, debug, sluice_kafka=trace.
    #[arg(long, env = "SLUICE_LOG_LEVEL")]
    pub log_level: Option<String>,
}
