//! `sluice bench`: drives a running broker through librdkafka and reports produce and
//! consume throughput and end-to-end latency, each figure next to the machine limit it
//! should be compared with (measured by `bench/limits.sh`).
//!
//! Every run is bounded in time: a scenario produces for `--seconds`, then waits at
//! most a fixed grace period for outstanding deliveries. A progress bar runs on
//! standard error; the JSON summary goes to standard output or `--output`.

mod admin;
mod consume;
mod latency;
mod machine;
mod produce;
mod report;
mod suite;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

pub use report::Report;

/// Options shared by every bench scenario.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Address of the broker's Kafka listener.
    #[arg(
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// JSON written by `bench/limits.sh`; figures are shown as ratios of these limits.
    #[arg(long, global = true)]
    pub limits: Option<PathBuf>,
    /// Process id of the broker, to report its resident memory after each scenario.
    #[arg(long, global = true)]
    pub broker_pid: Option<u32>,
    /// The broker's data directory; needed to evict its files from the page cache for
    /// the cold-read scenario when /proc/sys/vm/drop_caches is not writable.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Write the JSON summary here instead of standard output.
    #[arg(long, global = true)]
    pub output: Option<PathBuf>,
    /// Also write the results as a Markdown table here.
    #[arg(long, global = true)]
    pub markdown: Option<PathBuf>,
    /// Seconds each throughput or latency measurement runs.
    #[arg(long, default_value_t = 10, global = true)]
    pub seconds: u64,
    /// Hide progress bars (for logs).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// What to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The measurements `sluice bench` can run.
#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Produce throughput for one combination of settings.
    Produce(ProduceSettings),
    /// Produce a data set, then read it back from the page cache and, with `--cold`,
    /// again after evicting it.
    Consume {
        /// Settings of the data set written first.
        #[command(flatten)]
        produce: ProduceSettings,
        /// Consumer counts to read the data with, each in turn (e.g. `1,2`); the
        /// partitions are shared among the consumers of one read.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        consumers: Vec<usize>,
        /// Also measure a read after evicting the data from the page cache (with the
        /// last consumer count).
        #[arg(long)]
        cold: bool,
    },
    /// End-to-end latency at fixed offered rates.
    Latency(LatencySettings),
    /// The whole matrix published in bench/RESULTS.md.
    Suite {
        /// A shorter matrix (fewer cases) for a smoke run.
        #[arg(long)]
        quick: bool,
    },
}

/// Flush policy of the topic a scenario writes to (the topic config `flush.policy`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    /// Page cache only.
    Os,
    /// fsync every `flush.ms` (the broker default, 1 s).
    Interval,
    /// fsync before acknowledging, with group commit.
    Always,
}

impl Flush {
    fn as_str(self) -> &'static str {
        match self {
            Flush::Os => "os",
            Flush::Interval => "interval",
            Flush::Always => "always",
        }
    }
}

/// Producer acknowledgement level.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Acks {
    /// `acks=1`: the leader has written the batch.
    #[value(name = "1")]
    #[serde(rename = "1")]
    One,
    /// `acks=all`: every in-sync replica has it (on one node, the same as 1).
    #[value(name = "all")]
    #[serde(rename = "all")]
    All,
}

impl Acks {
    fn as_str(self) -> &'static str {
        match self {
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

/// Settings of a produce measurement.
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct ProduceSettings {
    /// Value size of each message in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Producer acknowledgement level.
    #[arg(long, value_enum, default_value = "1")]
    pub acks: Acks,
    /// Flush policy of the benchmark topic.
    #[arg(long, value_enum, default_value = "os")]
    pub flush: Flush,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Concurrent producers, each a librdkafka client on its own thread.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// librdkafka `linger.ms`: how long the client waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
}

/// Settings of a latency measurement.
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct LatencySettings {
    /// Offered rates in messages per second, each measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub rates: Vec<u64>,
    /// Value size of each message in bytes (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Flush policy of the benchmark topic.
    #[arg(long, value_enum, default_value = "os")]
    pub flush: Flush,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Producer acknowledgement level.
    #[arg(long, value_enum, default_value = "1")]
    pub acks: Acks,
}

/// Runs the chosen scenario and writes the summary.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut report = Report::new(&args)?;
    let env = report.env(&args);
    match &args.scenario {
        Scenario::Produce(settings) => {
            let result = produce::measure(&env, settings)?;
            report.push(result);
        }
        Scenario::Consume {
            produce,
            consumers,
            cold,
        } => {
            for result in consume::measure(&env, produce, consumers, *cold)? {
                report.push(result);
            }
        }
        Scenario::Latency(settings) => {
            for result in latency::measure(&env, settings)? {
                report.push(result);
            }
        }
        Scenario::Suite { quick } => suite::run(&env, *quick, &mut report)?,
    }
    report.finish(&args)
}
