//! The bench summary: settings, machine, limits and one entry per measurement, written
//! as JSON (and optionally as a Markdown table for bench/RESULTS.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::machine::{self, Limits, Machine, Rss};
use super::BenchArgs;

/// What every scenario needs to know about the run.
#[derive(Debug, Clone)]
pub struct BenchEnv {
    /// The broker's Kafka listener.
    pub bootstrap: String,
    /// How long each measurement runs.
    pub duration: Duration,
    /// The broker process, for memory figures.
    pub broker_pid: Option<u32>,
    /// The broker's data directory, for page-cache eviction.
    pub data_dir: Option<PathBuf>,
    /// Whether to draw progress bars.
    pub progress: bool,
    /// Machine limits, when known.
    pub limits: Option<Limits>,
}

impl BenchEnv {
    /// Resident memory of the broker now, if its pid was given.
    pub fn broker_rss(&self) -> Option<Rss> {
        self.broker_pid.and_then(machine::rss_of)
    }

    /// Starts measuring the CPU the clients and the broker use.
    pub fn cpu_clock(&self) -> CpuClock {
        CpuClock {
            client: machine::own_cpu_seconds(),
            broker: self.broker_pid.and_then(machine::cpu_seconds_of),
            at: std::time::Instant::now(),
        }
    }

    /// A progress bar over `len` units (hidden with `--no-progress`).
    pub fn bar(&self, len: u64, message: &str) -> indicatif::ProgressBar {
        let bar = if self.progress {
            indicatif::ProgressBar::new(len)
        } else {
            indicatif::ProgressBar::hidden()
        };
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar
    }
}

/// CPU used by the bench (the clients) and the broker from one moment on.
pub struct CpuClock {
    client: f64,
    broker: Option<f64>,
    at: std::time::Instant,
}

impl CpuClock {
    /// CPU seconds per second used since the clock started.
    pub fn stop(self, env: &BenchEnv) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let broker_now = env.broker_pid.and_then(machine::cpu_seconds_of);
        CpuUse {
            client_cores: (machine::own_cpu_seconds() - self.client) / wall,
            broker_cores: self.broker.zip(broker_now).map(|(a, b)| (b - a) / wall),
        }
    }
}

/// Where the machine's cores went during a measurement.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Cores the bench process (librdkafka clients) kept busy.
    pub client_cores: f64,
    /// Cores the broker kept busy, when its pid is known.
    pub broker_cores: Option<f64>,
}

impl CpuUse {
    /// Adds `client_cores` and `broker_cores` to the result's figures.
    pub fn record(self, result: &mut BenchResult) {
        result.figures.insert("client_cores", self.client_cores);
        if let Some(cores) = self.broker_cores {
            result.figures.insert("broker_cores", cores);
        }
    }
}

/// One measurement: its settings, its figures, and the figures as shares of limits.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Short name, e.g. `produce 1KiB acks=1 flush=os p=12 x1`.
    pub name: String,
    /// `produce`, `consume` or `latency`.
    pub kind: &'static str,
    /// The settings that produced the figures.
    pub settings: serde_json::Value,
    /// Measured figures: msgs_per_s, mb_per_s, p50_ms, ...
    pub figures: BTreeMap<&'static str, f64>,
    /// Figures divided by the matching machine limit, e.g. `loopback_tcp: 0.42`.
    pub of_limit: BTreeMap<&'static str, f64>,
    /// The broker's memory right after the measurement.
    pub broker: Option<Rss>,
    /// Anything the reader needs to interpret the figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl BenchResult {
    /// A result with no figures yet.
    pub fn new(kind: &'static str, name: String, settings: impl Serialize) -> Self {
        BenchResult {
            name,
            kind,
            settings: serde_json::to_value(settings).unwrap_or(serde_json::Value::Null),
            figures: BTreeMap::new(),
            of_limit: BTreeMap::new(),
            broker: None,
            notes: Vec::new(),
        }
    }

    /// Records `figure` as a share of `limit` (skipped when the limit is unknown).
    pub fn ratio(&mut self, name: &'static str, figure: f64, limit: Option<f64>) {
        if let Some(limit) = limit.filter(|l| *l > 0.0) {
            self.of_limit.insert(name, figure / limit);
        }
    }
}

/// The whole summary.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started (UTC).
    pub date: String,
    /// The command line that produced it.
    pub command: String,
    /// The machine, read from /proc.
    pub machine: Machine,
    /// The limits file, verbatim.
    pub limits: Option<serde_json::Value>,
    /// One entry per measurement.
    pub results: Vec<BenchResult>,
    /// The published targets, checked against `results` (suite runs only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
}

/// A performance target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// The measured figure.
    pub figure: f64,
    /// The goal, e.g. `>= 0.5`.
    pub goal: String,
    /// Whether the figure reaches the goal.
    pub met: bool,
}

impl Report {
    /// Starts a report for a run with these arguments.
    pub fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let limits = match &args.limits {
            Some(path) => Some(Limits::load(path)?.raw),
            None => None,
        };
        Ok(Report {
            date: machine::utc_now(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: Machine::read(),
            limits,
            results: Vec::new(),
            targets: Vec::new(),
        })
    }

    /// The environment scenarios run in.
    pub fn env(&self, args: &BenchArgs) -> BenchEnv {
        BenchEnv {
            bootstrap: args.bootstrap.clone(),
            duration: Duration::from_secs(args.seconds.max(1)),
            broker_pid: args.broker_pid,
            data_dir: args.data_dir.clone(),
            progress: !args.no_progress,
            limits: self
                .limits
                .as_ref()
                .and_then(|raw| serde_json::from_value::<Limits>(raw.clone()).ok()),
        }
    }

    /// Adds a measurement and prints its one-line summary on stderr.
    pub fn push(&mut self, result: BenchResult) {
        eprintln!("{}", summary_line(&result));
        self.results.push(result);
    }

    /// Writes the JSON summary (and the Markdown table, if asked for).
    pub fn finish(&self, args: &BenchArgs) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        match &args.output {
            Some(path) => std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?,
            None => println!("{json}"),
        }
        if let Some(path) = &args.markdown {
            std::fs::write(path, self.markdown())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The results as Markdown tables: throughput, latency, then the targets.
    pub fn markdown(&self) -> String {
        let (latency, throughput): (Vec<_>, Vec<_>) =
            self.results.iter().partition(|r| r.kind == "latency");
        let cores = |r: &BenchResult| {
            [
                fmt_figure(r.figures.get("client_cores"), 2),
                fmt_figure(r.figures.get("broker_cores"), 2),
            ]
        };
        let mut out = String::new();
        table(
            &mut out,
            &[
                "scenario",
                "msgs/s",
                "MB/s",
                "share of limit",
                "client cores",
                "broker cores",
                "broker RSS MiB (peak)",
            ],
            throughput.iter().map(|r| {
                let [client, broker] = cores(r);
                vec![
                    r.name.clone(),
                    fmt_figure(r.figures.get("msgs_per_s"), 0),
                    fmt_figure(r.figures.get("mb_per_s"), 1),
                    fmt_ratios(r),
                    client,
                    broker,
                    r.broker.map_or_else(
                        || "–".to_string(),
                        |b| format!("{:.0} ({:.0})", b.rss_mib, b.peak_mib),
                    ),
                ]
            }),
        );
        table(
            &mut out,
            &[
                "scenario",
                "achieved msgs/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "client cores",
                "broker cores",
            ],
            latency.iter().map(|r| {
                let mut row = vec![r.name.clone(), fmt_figure(r.figures.get("msgs_per_s"), 0)];
                for key in ["p50_ms", "p99_ms", "p99_9_ms", "max_ms"] {
                    row.push(fmt_figure(r.figures.get(key), 3));
                }
                row.extend(cores(r));
                row
            }),
        );
        table(
            &mut out,
            &["target", "figure", "goal", "met"],
            self.targets.iter().map(|t| {
                vec![
                    t.name.clone(),
                    format!("{:.3}", t.figure),
                    t.goal.clone(),
                    if t.met { "yes" } else { "**no**" }.to_string(),
                ]
            }),
        );
        out
    }
}

/// Appends a Markdown table (text columns left-aligned, the rest right-aligned),
/// or nothing when there are no rows.
fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = header
        .iter()
        .map(|h| match *h {
            "scenario" | "share of limit" | "target" | "goal" | "met" => "---",
            _ => "---:",
        })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

fn fmt_figure(value: Option<&f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.decimals$}"))
}

fn fmt_ratios(result: &BenchResult) -> String {
    if result.of_limit.is_empty() {
        return "–".to_string();
    }
    result
        .of_limit
        .iter()
        .map(|(name, share)| format!("{:.0}% of {name}", share * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary_line(result: &BenchResult) -> String {
    let figures = result
        .figures
        .iter()
        .map(|(k, v)| format!("{k}={v:.3}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("{:45} {figures}  [{}]", result.name, fmt_ratios(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_lists_throughput_and_latency_separately() {
        let mut produce = BenchResult::new("produce", "produce 1KiB".into(), ());
        produce.figures.insert("msgs_per_s", 1000.0);
        produce.figures.insert("mb_per_s", 1.024);
        produce.ratio("loopback_tcp", 1.024, Some(4.096));
        produce.ratio("ignored", 1.0, None);
        let mut latency = BenchResult::new("latency", "latency 1000/s".into(), ());
        latency.figures.insert("p99_ms", 1.5);
        let report = Report {
            date: "2026-11-21T00:00:00Z".into(),
            command: "sluice bench".into(),
            machine: Machine::read(),
            limits: None,
            results: vec![produce, latency],
            targets: Vec::new(),
        };
        let md = report.markdown();
        assert!(
            md.contains("| produce 1KiB | 1000 | 1.0 | 25% of loopback_tcp | – | – | – |\n"),
            "{md}"
        );
        assert!(
            md.contains("| latency 1000/s | – | – | 1.500 | – | – |"),
            "{md}"
        );
        assert!(!md.contains("ignored"));
    }
}
