//! The `sluice` binary: `sluice serve` runs the broker; the other subcommands are a
//! command-line client that talks to a running broker over the Kafka protocol.

#[cfg(feature = "bench")]
mod bench;
mod cli;
mod config;
mod serve;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: sluice_kafka::lazy_alloc::LazyHugeAllocator =
    sluice_kafka::lazy_alloc::LazyHugeAllocator;

/// Sluice: one broker for Kafka, RocketMQ and RabbitMQ clients.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker (embedded defaults: data in ./sluice-data, Kafka on 127.0.0.1:9092).
    Serve(config::ServeArgs),
    /// Measure a running broker's throughput and latency through librdkafka.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(cli::Command),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(serve_args) => serve::run(serve_args),
        #[cfg(feature = "bench")]
        Command::Bench(bench_args) => bench::run(bench_args),
        Command::Client(cmd) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(cli::run(cmd))
        }
    }
}
